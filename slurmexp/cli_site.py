"""`slurmexp site`: describe the cluster, discovered live or read from a site.toml."""
from __future__ import annotations

import json
from pathlib import Path

import click

from slurmexp.cli_common import _check_output, _rich_table, _scheduler, _write_output, site_option


@click.group()
def site() -> None:
    """Describe the cluster: discover it live, or show a site.toml."""


@site.command("discover")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write here instead of stdout.")
@click.option("--remote", "remote", metavar="[USER@]HOST",
              help="Discover a cluster reached over SSH and write its [remote] table.")
@click.option("--port", type=click.IntRange(1, 65535), help="With --remote: the SSH port.")
@click.option("--identity", type=click.Path(dir_okay=False), help="With --remote: the SSH key.")
@click.option("--ssh-option", "ssh_options", multiple=True, metavar="KEY=VALUE",
              help="With --remote: an ssh -o option (repeatable), e.g. ProxyJump=bastion.")
@click.option("--remote-root", metavar="DIR",
              help="With --remote: slurmexp's folder on the cluster (default: ~/slurmexp there).")
@click.option("--force", is_flag=True, help="Overwrite an existing --output file.")
def site_discover(output: str | None, remote: str | None, port: int | None, identity: str | None,
                  ssh_options: tuple[str, ...], remote_root: str | None, force: bool) -> None:
    """Write a site.toml from the live cluster (sinfo/scontrol/sacctmgr), here or over SSH.

    An existing --output file (reviewed, maybe edited) is kept unless --force is given."""
    from slurmexp.sites.discover import discover_argv, discover_site, refuse_overwrite

    if output:
        _check_output(output)
        if not force:
            refuse_overwrite(output, discover_argv(remote, port, identity, ssh_options, remote_root))
    if remote is None:
        if port or identity or ssh_options or remote_root:
            raise click.UsageError("--port, --identity, --ssh-option and --remote-root need --remote")
        text = discover_site(_scheduler("slurm").cluster_facts())
    else:
        text = _discover_remote(remote, port, identity, list(ssh_options), remote_root)
    if output:
        _write_output(output, text)
        click.echo(f"wrote {output}; check it with `slurmexp site show --site {output}`", err=True)
    else:
        click.echo(text, nl=False)


def _discover_remote(target: str, port: int | None, identity: str | None,
                     ssh_options: list[str], remote_root: str | None) -> str:
    """site.toml text for a cluster reached over SSH, with its `[remote]` table: every Slurm
    query of discovery goes over one connection, and the user is the cluster's login."""
    from slurmexp.backends.base import scheduler_for
    from slurmexp.sites.discover import discover_site
    from slurmexp.sites.model import parse_site
    from slurmexp.transport.remote_site import parse_target, remote_toml
    from slurmexp.transport.ssh import SshTransport

    user, host = parse_target(target)
    transport = SshTransport(host, user=user, port=port, identity_file=identity,
                             ssh_options=ssh_options, root="/")
    if remote_root is None:
        home = transport.run(["printenv", "HOME"], timeout=30).stdout.strip() or "/tmp"
        remote_root = f"{home.rstrip('/')}/slurmexp"
    facts = scheduler_for("slurm", transport=transport).cluster_facts()
    # The login's user is written even when ssh's config chose it: passes then need not ask.
    text = discover_site(facts) + remote_toml(host, user=user or facts.user, port=port, identity_file=identity,
                                              ssh_options=ssh_options, root=remote_root)
    parse_site(text, "site.toml (discovered)")   # what is written must load
    transport.makedirs(remote_root)
    return text


@site.command("show")
@site_option
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def site_show(site_path: str | None, fmt: str) -> None:
    """Show the partitions, GPUs, QOS, reservations, routing and defaults a site.toml describes."""
    from slurmexp.launch.launcher import find_site
    from slurmexp.sites.model import describe_site, load_site

    d = describe_site(load_site(find_site(Path.cwd() / "sweep.toml", site_path)))
    if fmt == "json":
        click.echo(json.dumps(d, indent=2, default=str))
        return
    _rich_table(f"{d['cluster']} ({d['path']})", ["partition", "max_time", "nodes", "gpus", "default"],
                [[r["partition"], r["max_time"], r["nodes"], r["gpus"], "*" if r["default"] else ""]
                 for r in d["partitions"]])
    if d["qos"]:
        _rich_table("QOS", ["qos", "max_wall", "max_tres_pu", "preempt"],
                    [[k, q["max_wall"], ",".join(f"{t}={n}" for t, n in q["max_tres_pu"].items()),
                      ",".join(q["preempt"])] for k, q in d["qos"].items()])
    if d["reservations"]:
        _rich_table("reservations", ["reservation", "nodes", "users", "accounts", "start", "end"],
                    [[k, ",".join(r["nodes"]), ",".join(r["users"]), ",".join(r["accounts"]),
                      r["start"], r["end"]] for k, r in d["reservations"].items()])
    _rich_table("routing", ["runs", "partitions tried in order"],
                [[kind, ", ".join(parts) or "none"] for kind, parts in d["routing"].items()])
    _rich_table("defaults", ["key", "value when the sweep has none"],
                [[k, v] for k, v in d["defaults"].items()])
