"""Resources and routing: a sweep's request with site defaults, and the partition it goes to,
with the reasons for it and for every partition left out. Pure.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from slurmexp import units

if TYPE_CHECKING:
    from slurmexp.sites.model import Node, Site
    from slurmexp.sweep.spec import ResourceRequest, Sweep


@dataclass(frozen=True)
class Resources:
    """What one array task asks of Slurm, after site defaults and routing are applied."""

    partition: str
    time_min: int
    cpus: int = 1
    mem_mb: int | None = None
    gpus: int = 0
    gpu_type: str | None = None
    qos: str | None = None
    account: str | None = None
    reservation: str | None = None
    constraint: str | None = None
    nodes: int = 1
    sbatch: tuple[str, ...] = ()        # [resources] sbatch: raw options, as written
    # The names above the sweep left out and site.toml's [defaults] filled in ("time", "mem",
    # "cpus", "qos", "account"): messages say where such a value came from.
    defaulted: frozenset[str] = field(default=frozenset(), compare=False)

    def shown(self, name: str, text: str) -> str:
        """`text` (e.g. "time 01:00:00"), saying so when the value is site.toml's default."""
        if name not in self.defaulted:
            return text
        return f"{text} (from site.toml {'account' if name == 'account' else '[defaults]'})"

    @property
    def gres(self) -> str | None:
        if not self.gpus:
            return None
        return f"gpu:{self.gpu_type}:{self.gpus}" if self.gpu_type else f"gpu:{self.gpus}"


@dataclass
class Placement:
    """Where a resource group goes and why: printed by --dry-run and `slurmexp explain`."""

    partition: str
    reasons: list[str] = field(default_factory=list)            # why this partition
    excluded: dict[str, str] = field(default_factory=dict)      # other partition -> why not



# ----------------------------------------------------------------------------------------
# Resources and routing
# ----------------------------------------------------------------------------------------


def requested_resources(sweep: Sweep, site: Site, asked: ResourceRequest | None = None) -> Resources:
    """The sweep's request (or `asked`: one resource group's, [[override]] applied) with site
    defaults filled in; partition is "" unless asked for."""
    asked = asked if asked is not None else sweep.resources
    defaults = site.defaults
    cpus = asked.cpus or defaults.cpus
    mem_mb = asked.mem_mb if asked.mem_mb is not None else defaults.mem_mb_for(cpus)
    filled = {"time": asked.time_min is None, "cpus": not asked.cpus,
              "mem": asked.mem_mb is None and mem_mb is not None,
              "qos": not asked.qos and defaults.qos is not None,
              "account": not asked.account and site.account is not None}
    return Resources(
        partition=asked.partition or "",
        time_min=asked.time_min if asked.time_min is not None else defaults.time_min,
        cpus=cpus,
        mem_mb=mem_mb,
        gpus=asked.gpus or 0,
        gpu_type=asked.gpu_type,
        qos=asked.qos or defaults.qos,
        account=asked.account or site.account,
        reservation=asked.reservation,
        constraint=asked.constraint,
        nodes=asked.nodes or 1,
        sbatch=tuple(asked.sbatch),
        defaulted=frozenset(k for k, v in filled.items() if v),
    )


def _features(constraint: str | None) -> set[str] | None:
    # Only plain "a" or "a&b" can be checked against node features; anything fancier
    # (|, counts, brackets) is left to Slurm.
    if not constraint or not re.fullmatch(r"[\w.-]+(&[\w.-]+)*", constraint):
        return None
    return set(constraint.split("&"))


def _node_fits(node: Node, res: Resources) -> bool:
    if node.cpus < res.cpus or (res.mem_mb is not None and node.mem_mb < res.mem_mb):
        return False
    if res.gpus:
        have = node.gpus.get(res.gpu_type, 0) if res.gpu_type else node.gpu_count
        if have < res.gpus:
            return False
    need = _features(res.constraint)
    return need is None or need <= set(node.features)


def _pool(res: Resources, site: Site, partition: str) -> list[Node]:
    pool = site.partition_nodes(partition)
    resv = site.reservations.get(res.reservation) if res.reservation else None
    return [n for n in pool if n.name in resv.nodes] if resv is not None else pool


def route_problems(res: Resources, site: Site, partition: str | None = None) -> list[str]:
    """Why `partition` (default: res.partition) cannot take a task asking for `res`; [] if it can."""
    partition = partition if partition is not None else res.partition
    if partition not in site.partitions:
        return [f"partition {partition!r} is not defined in site.toml"]
    part = site.partitions[partition]
    problems: list[str] = []
    if part.max_time_min is not None and res.time_min > part.max_time_min:
        problems.append(f"{res.shown('time', f'time {units.format_time(res.time_min)}')} "
                        f"over max_time {part.max_time}")
    if res.qos and part.allow_qos and res.qos not in part.allow_qos:
        problems.append(f"{res.shown('qos', f'qos {res.qos}')} not allowed here "
                        f"(allow_qos: {', '.join(part.allow_qos)})")
    pool = site.partition_nodes(partition)
    if res.reservation:
        resv = site.reservations.get(res.reservation)
        if resv is None:
            problems.append(f"reservation {res.reservation} is not defined in site.toml")
        else:
            pool = _pool(res, site, partition)
            if not pool:
                problems.append(f"reservation {res.reservation} has no nodes in this partition "
                                f"(its nodes: {', '.join(resv.nodes) or 'none'})")
    if not pool:
        return problems
    before = len(problems)
    if res.gpus:
        if res.gpu_type:
            most = max(n.gpus.get(res.gpu_type, 0) for n in pool)
            kinds = sorted({k for n in pool for k in n.gpus})
            if most == 0:
                problems.append(f"GPU type {res.gpu_type} on no node here "
                                f"(types here: {', '.join(kinds) or 'none'})")
            elif most < res.gpus:
                problems.append(f"not enough {res.gpu_type} GPUs on any one node: asked {res.gpus}, "
                                f"at most {most} per node")
        else:
            most = max(n.gpu_count for n in pool)
            if most == 0:
                problems.append("no node here has GPUs")
            elif most < res.gpus:
                problems.append(f"not enough GPUs on any one node: asked {res.gpus}, at most {most} per node")
    most_cpus = max(n.cpus for n in pool)
    if res.cpus > most_cpus:
        problems.append(f"{res.shown('cpus', f'cpus {res.cpus}')} over every node (at most {most_cpus} per node)")
    most_mem = max(n.mem_mb for n in pool)
    if res.mem_mb is not None and res.mem_mb > most_mem:
        problems.append(f"{res.shown('mem', f'mem {units.format_mem(res.mem_mb)}')} over every node "
                        f"(at most {units.format_mem(most_mem)} per node)")
    need = _features(res.constraint)
    if need and not any(need <= set(n.features) for n in pool):
        problems.append(f"constraint {res.constraint}: no node here has features {', '.join(sorted(need))}")
    if len(problems) == before and not any(_node_fits(n, res) for n in pool):
        problems.append("no single node has the cpus, mem and GPUs asked for together")
    if res.nodes > len(pool):
        problems.append(f"nodes {res.nodes} but only {len(pool)} usable nodes here")
    return problems


def _held(site: Site, res: Resources) -> dict[str, str]:
    """Node -> the reservation holding it, for the reservations this request does not use: a
    job outside a reservation does not run on its nodes while it lasts."""
    held: dict[str, str] = {}
    for name, resv in site.reservations.items():
        if name != res.reservation:
            for node in resv.nodes:
                held.setdefault(node, name + (f" until {resv.end.isoformat(sep=' ')}" if resv.end else ""))
    return held


def _fit_reasons(res: Resources, site: Site, partition: str) -> list[str]:
    part = site.partitions[partition]
    fits = [n.name for n in _pool(res, site, partition) if _node_fits(n, res)]
    held = _held(site, res)
    free = [n for n in fits if n not in held]
    fitting = ", ".join(free) or "no node outside a reservation (the runs wait for it to end)"
    if len(free) < len(fits):
        fitting += "; not " + ", ".join(f"{n} (reservation {held[n]})" for n in fits if n in held)
    if res.gpus:
        reasons = [f"GPU run: {res.gpu_type or 'gpu'} x{res.gpus} found on {fitting}"]
    else:
        mem = f", mem {units.format_mem(res.mem_mb)}" if res.mem_mb is not None else ""
        reasons = [f"CPU run: cpus {res.cpus}{mem} fit on {fitting}"]
    limit = part.max_time if part.max_time_min is not None else "UNLIMITED"
    reasons.append(f"time {units.format_time(res.time_min)} within max_time {limit}")
    if res.reservation:
        reasons.append(f"reservation {res.reservation} has nodes here")
    if res.qos and part.allow_qos:
        reasons.append(f"qos {res.qos} in allow_qos")
    return reasons


def route(res: Resources, site: Site) -> tuple[Resources, Placement]:
    """Pick a partition for `res` (kept if res.partition is set) and say why.

    Public so that escalated retries can re-route their bigger requests. When no candidate
    can take the task the first one is returned anyway, with empty reasons and its problems
    in `excluded`: `placement.partition in placement.excluded` means "cannot run", which
    validation turns into a user-facing error.
    """
    if res.partition:
        placement = Placement(res.partition, ["asked for in sweep resources.partition"])
        problems = route_problems(res, site)
        if problems:
            placement.excluded[res.partition] = "; ".join(problems)
        else:
            placement.reasons += _fit_reasons(res, site, res.partition)
        return res, placement
    kind = "gpu" if res.gpus else "cpu"
    candidates = list(getattr(site.routing, kind) or []) or [site.default_partition]
    excluded: dict[str, str] = {}
    chosen = None
    for name in candidates:
        problems = route_problems(res, site, name)
        if problems:
            excluded[name] = "; ".join(problems)
        elif chosen is None:
            chosen = name
    if chosen is None:
        return replace(res, partition=candidates[0]), Placement(candidates[0], [], excluded)
    reasons = _fit_reasons(res, site, chosen)
    if len(candidates) > 1:
        reasons.append(f"first that fits in routing.{kind} ({', '.join(candidates)})")
    return replace(res, partition=chosen), Placement(chosen, reasons, excluded)


def resolve_resources(sweep: Sweep, site: Site) -> tuple[Resources, Placement]:
    return route(requested_resources(sweep, site), site)
