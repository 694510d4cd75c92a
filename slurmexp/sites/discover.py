"""`slurmexp site discover`: write a first site.toml from what the cluster says about itself.

The output is meant to be read and edited by a person, then committed: it is plain TOML with a
header saying when and how it was made and what could not be read, so nobody mistakes a
partial guess for a complete description. It always goes through `site.parse_site` in tests, so
whatever discover writes is a site file slurmexp accepts.

The TOML writer is a few lines of our own: the values are strings, numbers, lists and flat
tables, and a dependency for that is not worth it.
"""
from __future__ import annotations

import json
import re
import shlex
from datetime import datetime
from pathlib import Path
from typing import Any

from slurmexp import units
from slurmexp.backends.facts import ClusterFacts, NodeFacts, PartitionFacts
from slurmexp.errors import Problem, SlurmexpError

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else toml_string(key)


def toml_string(value: str) -> str:
    # JSON string escapes are a subset of TOML basic-string escapes, except that TOML wants
    # every control character escaped, which json.dumps already does (\uXXXX).
    return json.dumps(value, ensure_ascii=False)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, datetime):
        # A local date-time (no offset): Slurm prints controller-local times without a zone.
        return value.replace(microsecond=0).isoformat()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{toml_key(str(k))} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as TOML")


def _table(name: list[str], values: dict[str, Any], comment: str | None = None) -> list[str]:
    lines = [""]
    if comment:
        lines.append(f"# {comment}")
    lines.append("[" + ".".join(toml_key(n) for n in name) + "]")
    lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in values.items() if v is not None]
    return lines


def _is_gpu_partition(part: PartitionFacts, nodes: dict[str, NodeFacts]) -> bool:
    return any(nodes[n].gres for n in part.nodes if n in nodes)


def _default_account(facts: ClusterFacts) -> str | None:
    assocs = facts.associations or []
    for assoc in assocs:
        if assoc.is_default_account:
            return assoc.account
    accounts = {a.account for a in assocs}
    return accounts.pop() if len(accounts) == 1 else None


# The time a sweep gets when neither it nor the default partition's DefaultTime says.
FALLBACK_TIME_MIN = 60


def _defaults(facts: ClusterFacts, default: PartitionFacts, nodes: dict[str, NodeFacts]) -> list[str]:
    """An explicit [defaults]: what a sweep gets for the [resources] keys it leaves out, each
    line saying where its value came from, so nothing hidden shows up in an error later."""
    lines = ["", "# What a sweep gets for each [resources] key it leaves out (explain marks them).",
             "[defaults]", "cpus = 1"]
    per_cpu = default.def_mem_per_cpu_mb or facts.def_mem_per_cpu_mb
    if per_cpu:
        where = f"partition {default.name}'s" if default.def_mem_per_cpu_mb else "the cluster's"
        lines += [f"# {where} DefMemPerCPU: memory per CPU asked, as Slurm itself would give",
                  f"mem_per_cpu = {toml_value(units.format_mem(per_cpu))}"]
    else:
        pool = [nodes[n] for n in default.nodes if n in nodes]
        share = min(n.mem_mb // n.cpus for n in pool)
        lines += ["# the cluster sets no DefMemPerCPU: a job asking for no memory would get a whole",
                  f"# node's, one task per node. This is one CPU's share of the smallest node of {default.name}.",
                  f"mem_per_cpu = {toml_value(units.format_mem(share))}"]
    if default.default_time_min is not None:
        minutes = default.default_time_min
        lines.append(f"# partition {default.name}'s DefaultTime")
    else:
        cap = default.max_time_min
        minutes = FALLBACK_TIME_MIN if cap is None else min(FALLBACK_TIME_MIN, cap)
        lines.append(f"# partition {default.name} has no DefaultTime (Slurm would give its MaxTime, "
                     f"{units.format_time(cap)}); at most one hour")
    lines.append(f"time = {toml_value(units.format_time(minutes))}")
    return lines


def discover_argv(remote: str | None = None, port: int | None = None, identity: str | None = None,
                  ssh_options: tuple[str, ...] | list[str] = (), remote_root: str | None = None) -> list[str]:
    """`slurmexp site discover` as a user would type it again, without --output."""
    argv = ["slurmexp", "site", "discover"]
    for flag, value in (("--remote", remote), ("--port", port), ("--identity", identity),
                        ("--remote-root", remote_root)):
        if value is not None:
            argv += [flag, str(value)]
    for opt in ssh_options:
        argv += ["--ssh-option", opt]
    return argv


def rediscover_fix(path: str, argv: list[str] | None = None) -> str:
    """The fix for a site file to write again: compare, then replace (discover keeps a file)."""
    command, out = shlex.join(argv or discover_argv()), shlex.quote(str(path))
    return f"compare first: diff {out} <({command}); then replace it: {command} -o {out} --force"


def refuse_overwrite(output: str, argv: list[str]) -> None:
    """Refuse to replace an existing file: a site.toml is reviewed and edited after discovery,
    and discovering again would silently throw that away. The fix compares, then forces."""
    if not Path(output).expanduser().exists():
        return
    raise SlurmexpError(f"{output} exists; discover does not overwrite it", [Problem(
        output, "", "it may hold edits made since it was discovered", rediscover_fix(output, argv),
        check="overwrite")])


def discover_site(facts: ClusterFacts, *, now: datetime | None = None) -> str:
    """site.toml text for the cluster in `facts`.

    Raises SlurmexpError when partitions or nodes could not be read: without them there is no
    site to write, and a file with invented values would be worse than none.
    """
    missing = [what for what, value in (("partitions", facts.partitions), ("nodes", facts.nodes))
               if value is None]
    if missing:
        raise SlurmexpError(
            f"cannot describe cluster {facts.cluster or '(unknown)'}: could not read "
            f"{' and '.join(missing)}",
            [Problem("", "", reason, "run it again when slurmctld answers", check="discover")
             for reason in facts.skipped] or None)
    assert facts.partitions is not None and facts.nodes is not None
    now = now or datetime.now()
    notes: list[str] = []

    nodes: dict[str, NodeFacts] = {}
    for name, node in facts.nodes.items():
        if node.cpus < 1 or node.mem_mb < 1:
            notes.append(f"node {name} left out: scontrol reported {node.cpus} CPUs, "
                         f"{node.mem_mb} MiB memory")
            continue
        nodes[name] = node

    qos_names = set(facts.qos or {})
    partitions: dict[str, PartitionFacts] = {}
    for name, part in facts.partitions.items():
        if not [n for n in part.nodes if n in nodes]:
            notes.append(f"partition {name} left out: none of its nodes could be described")
            continue
        partitions[name] = part
    if not partitions:
        raise SlurmexpError(f"cannot describe cluster {facts.cluster}: no partition with nodes")

    default = next((p for p in partitions.values() if p.default), None)
    if default is None:
        default = next(iter(partitions.values()))
        notes.append(f"no partition is marked Default=YES; {default.name} was taken as the default")

    account = _default_account(facts)
    out = [
        f"# site.toml for Slurm cluster {facts.cluster!s}, written by `slurmexp site discover`",
        f"# on {now.replace(microsecond=0).isoformat()} as user {facts.user}"
        + (f" (Slurm {facts.slurm_version})." if facts.slurm_version else "."),
        "# Read from: scontrol show config, scontrol -o show partition/node/reservation,",
        "# sacctmgr show qos, sacctmgr show user withassoc. Review it before use: routing",
        "# below is a guess from which partitions hold GPU nodes.",
    ]
    if facts.skipped:
        out.append("# Not read (those parts are missing below):")
        out += [f"#   - {reason}" for reason in facts.skipped]
    if notes:
        out.append("# Notes:")
        out += [f"#   - {note}" for note in notes]
    out.append("")
    out.append(f"cluster = {toml_value(facts.cluster)}")
    if account:
        out.append(f"account = {toml_value(account)}")
    elif facts.associations is not None:
        out.append("# account: no default account found for this user; set one if jobs need it")
    out.append(f"default_partition = {toml_value(default.name)}")
    if facts.max_array_size:
        out.append(f"max_array_size = {facts.max_array_size}")
    if facts.max_job_count:
        out.append(f"max_job_count = {facts.max_job_count}")

    out += _defaults(facts, default, nodes)

    for name, node in nodes.items():
        out += _table(["nodes", name], {
            "cpus": node.cpus,
            "mem": units.format_mem(node.mem_mb),
            "gpus": dict(node.gres),
            "features": list(node.features),
        }, comment=None if node.state.split("+")[0] in ("idle", "mixed", "allocated", "mix", "alloc")
            else f"state when discovered: {node.state}")

    for name, part in partitions.items():
        values: dict[str, Any] = {
            "nodes": [n for n in part.nodes if n in nodes],
            "max_time": units.format_time(part.max_time_min),
        }
        if part.allow_qos is not None:
            values["allow_qos"] = [q for q in part.allow_qos if q in qos_names] if qos_names \
                else list(part.allow_qos)
        out += _table(["partitions", name], values,
                      comment=None if part.state == "UP" else f"state when discovered: {part.state}")

    for name, qos in (facts.qos or {}).items():
        values = {
            "max_wall": units.format_time(qos.max_wall_min) if qos.max_wall_min is not None else None,
            "max_tres_pu": dict(qos.max_tres_pu) if qos.max_tres_pu else None,
            "max_tres_pj": dict(qos.max_tres_pj) if qos.max_tres_pj else None,
            "preempt": [p for p in qos.preempt if p in qos_names] or None,
        }
        out += _table(["qos", name], values)

    for name, resv in (facts.reservations or {}).items():
        values = {
            "nodes": [n for n in resv.nodes if n in nodes],
            "users": list(resv.users),
            "accounts": list(resv.accounts),
            "start": resv.start,
            "end": resv.end,
        }
        if resv.start and resv.end and resv.start >= resv.end:
            values["end"] = None
        out += _table(["reservations", name], values, comment=f"state when discovered: {resv.state}")

    cpu = [p.name for p in partitions.values() if not _is_gpu_partition(p, nodes)]
    gpu = [p.name for p in partitions.values() if _is_gpu_partition(p, nodes)]
    if default.name in cpu:
        cpu.remove(default.name)
        cpu.insert(0, default.name)
    routing = {"cpu": cpu or None, "gpu": gpu or None}
    if any(routing.values()):
        out += _table(["routing"], routing,
                      comment="partitions tried in order: cpu = no GPU nodes (default first), "
                              "gpu = with GPU nodes")
    return "\n".join(out) + "\n"
