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
def site_discover(output: str | None) -> None:
    """Write a site.toml from the live cluster (sinfo/scontrol/sacctmgr)."""
    from slurmexp.sites.discover import discover_site

    if output:
        _check_output(output)
    text = discover_site(_scheduler("slurm").cluster_facts())
    if output:
        _write_output(output, text)
        click.echo(f"wrote {output}; check it with `slurmexp site show --site {output}`", err=True)
    else:
        click.echo(text, nl=False)


@site.command("show")
@site_option
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def site_show(site_path: str | None, fmt: str) -> None:
    """Show the partitions, GPUs, QOS and reservations a site.toml describes."""
    from slurmexp.launch.launcher import find_site
    from slurmexp.sites.model import load_site

    s = load_site(find_site(Path.cwd() / "sweep.toml", site_path))
    rows = [{"partition": name, "max_time": p.max_time, "nodes": ",".join(p.nodes),
             "gpus": ",".join(f"{k}:{v}" for k, v in s.gpu_types(name).items()),
             "default": name == s.default_partition} for name, p in s.partitions.items()]
    if fmt == "json":
        click.echo(json.dumps({"cluster": s.cluster, "path": str(s.path), "partitions": rows,
                               "qos": {k: q.model_dump() for k, q in s.qos.items()},
                               "reservations": list(s.reservations)}, indent=2, default=str))
        return
    _rich_table(f"{s.cluster} ({s.path})", ["partition", "max_time", "nodes", "gpus", "default"],
                [[r["partition"], r["max_time"], r["nodes"], r["gpus"], "*" if r["default"] else ""]
                 for r in rows])
    if s.qos:
        _rich_table("QOS", ["qos", "max_wall", "max_tres_pu", "preempt"],
                    [[k, q.max_wall, q.max_tres_pu, ",".join(q.preempt)] for k, q in s.qos.items()])
