"""Turn a parsed sweep into runs, placements and job-array chunks. Pure: no I/O.

Expansion (runs, ids, commands) is in `expand`, resources and routing in `routing`; this module
holds the plan itself (arrays cut at MaxArraySize) and its description, and re-exports the
names of both so that `from slurmexp.sweep.plan import ...` keeps working.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from slurmexp import arrays, units
from slurmexp.errors import Problem, ValidationError
from slurmexp.settings import STALE_BEATS
from slurmexp.sweep.expand import (
    Run,
    command_for,
    command_text,
    count_runs,
    expand,
    product_axes,
    run_id_for,
    sample_combinations,
    value_text,
)
from slurmexp.sweep.overrides import RunGroup, group_runs
from slurmexp.sweep.routing import (
    Placement,
    Resources,
    requested_resources,
    resolve_resources,
    route,
    route_problems,
)

if TYPE_CHECKING:
    from slurmexp.sites.model import Site
    from slurmexp.sweep.spec import Sweep

# The most runs one sweep may have whatever the cluster allows: the ledger, the manifests and a
# report are built for about 100,000; past a million, expanding alone takes seconds and a GB.
MAX_RUNS = 1_000_000

__all__ = [
    "MAX_RUNS", "ArrayChunk", "Placement", "Plan", "Resources", "Run", "assemble_plan",
    "check_size", "command_for", "command_text", "count_runs", "describe", "describe_throttle", "expand",
    "make_chunks", "make_plan",
    "product_axes", "requested_resources", "resolve_resources", "route", "route_problems",
    "run_id_for", "sample_combinations", "value_text",
]


@dataclass
class ArrayChunk:
    """One job array = one sbatch call. Task index i runs `runs[i]`; indices are 0..size-1."""

    chunk: int                 # index of this chunk in the experiment, 0-based
    group: int                 # index of its resource group
    resources: Resources
    runs: list[Run]
    offset: int                # index of runs[0] among all runs of its group (for the plan display)
    throttle: int | None = None

    @property
    def size(self) -> int:
        return len(self.runs)

    @property
    def array_spec(self) -> str:
        return arrays.format_spec(range(self.size), self.throttle)


@dataclass
class Plan:
    runs: list[Run]
    placements: list[Placement]        # one per resource group
    chunks: list[ArrayChunk]
    throttle: int | None = None        # array_parallelism: for all chunks together (their %N)
    # Per resource group, what [[override]] made of it (empty: the plan has no [[override]]).
    groups: list[RunGroup] = field(default_factory=list)

    def group(self, number: int) -> RunGroup | None:
        return self.groups[number] if number < len(self.groups) else None

    def first_chunks(self) -> list[ArrayChunk]:
        """The first chunk of each resource group: the chunks of a group differ only in their
        runs, so a check of resources (static limits, sbatch --test-only) needs one of them."""
        first: dict[int, ArrayChunk] = {}
        for chunk in self.chunks:
            first.setdefault(chunk.group, chunk)
        return list(first.values())


# ----------------------------------------------------------------------------------------
# Arrays and plans
# ----------------------------------------------------------------------------------------


def make_chunks(runs: Sequence[Run], resources: Resources, max_array_size: int,
                throttle: int | None = None, *, group: int = 0, first_chunk: int = 0) -> list[ArrayChunk]:
    """Cut one resource group into job arrays whose task indices stay below max_array_size."""
    if max_array_size < 1:
        raise ValueError(f"max_array_size must be >= 1, got {max_array_size}")
    return [
        ArrayChunk(chunk=first_chunk + n, group=group, resources=resources,
                   runs=list(runs[start:start + max_array_size]), offset=start, throttle=throttle)
        for n, start in enumerate(range(0, len(runs), max_array_size))
    ]


def assemble_plan(groups: Sequence[tuple[Resources, Placement, Sequence[Run]]],
                  max_array_size: int, throttle: int | None = None, *,
                  throttles: Sequence[int | None] | None = None) -> Plan:
    """A plan from several resource groups ([[override]] makes more than one; escalated
    retries add more), each cut into its own arrays.

    `throttle` (array_parallelism) is for the whole plan: it is shared among the arrays
    (`arrays.split_throttle`), so a sweep cut into several arrays by MaxArraySize still runs at
    most `throttle` runs at once (or one per array, when there are more arrays). `throttles`,
    instead: each group's own limit, shared among that group's arrays."""
    runs: list[Run] = []
    placements: list[Placement] = []
    chunks: list[ArrayChunk] = []
    for number, (resources, placement, members) in enumerate(groups):
        runs += members
        placements.append(placement)
        mine = make_chunks(members, resources, max_array_size, group=number, first_chunk=len(chunks))
        if throttles is not None:
            for chunk, share in zip(mine, arrays.split_throttle([c.size for c in mine], throttles[number])):
                chunk.throttle = share
        chunks += mine
    if throttles is None:
        for chunk, share in zip(chunks, arrays.split_throttle([c.size for c in chunks], throttle)):
            chunk.throttle = share
    return Plan(runs=runs, placements=placements, chunks=chunks, throttle=throttle)


def check_size(sweep: Sweep, site: Site) -> int:
    """The number of runs, counted before anything is expanded; a ValidationError with one
    problem when it is over the tightest limit known without the cluster: the site's
    MaxJobCount or MaxSubmitJobs (the runs could never all be queued) or MAX_RUNS."""
    total = count_runs(sweep)
    limits = [(MAX_RUNS, f"slurmexp's limit of {MAX_RUNS:,} runs per sweep", "")]
    if site.max_job_count:
        # Slurm refuses an array once jobs + its tasks would reach MaxJobCount (`>=`), so at
        # most MaxJobCount - 1 runs can ever be queued; MaxSubmitJobs refuses only past it.
        limits.append((site.max_job_count - 1, f"the cluster's MaxJobCount ({site.max_job_count}, "
                       f"max_job_count in {site.path})", "or ask the admins to raise MaxJobCount"))
    if site.max_submit_jobs:
        limits.append((site.max_submit_jobs, f"MaxSubmitJobs per user ({site.max_submit_jobs}, "
                       f"max_submit_jobs in {site.path})", "or launch the rest after some finish"))
    limit, what, alternative = min(limits, key=lambda item: item[0])
    if total <= limit:
        return total
    axes = product_axes(sweep)
    made = " + ".join(([" x ".join(f"{key} {n:,}" for key, n in axes)] if axes else [])
                      + ([f"{len(sweep.runs):,} [[runs]]"] if sweep.runs else []))
    key, biggest = max(axes + [("runs", len(sweep.runs))], key=lambda item: item[1])
    file = str(sweep.path)
    message = (f"{total:,} runs ({made}) exceed {what}: they could never all be queued"
               if limit != MAX_RUNS else f"{total:,} runs ({made}) exceed {what}")
    fewer = {"sample.n": f"a smaller sample.n than {biggest:,}",
             "runs": f"fewer than {biggest:,} [[runs]]"}.get(key, f"fewer values of {key}, which has {biggest:,}")
    fix = (f"split the sweep into sweeps of at most {limit:,} runs each ({fewer})"
           + (f", {alternative}" if alternative else ""))
    raise ValidationError(f"{file}: too many runs ({total:,}); nothing was expanded or submitted",
                          [Problem(file, key, message, fix, check="run_count")])


def make_plan(sweep: Sweep, site: Site) -> Plan:
    """The runs, one resource group per distinct request ([resources] and the [[override]]
    tables that match), each group routed on its own and cut into its own arrays."""
    check_size(sweep, site)
    runs = expand(sweep)
    groups = group_runs(sweep, runs)
    routed = [route(requested_resources(sweep, site, g.request), site) for g in groups]
    for g, (_, placement) in zip(groups, routed):
        if "partition" in g.setters and placement.reasons:
            placement.reasons[0] = f"asked for in the sweep's [[override]] {g.setters['partition']} partition"
    members = [(res, placement, g.runs) for (res, placement), g in zip(routed, groups)]
    if len(groups) == 1:        # the sweep's array_parallelism: for all its arrays together
        plan = assemble_plan(members, site.max_array_size, groups[0].request.array_parallelism)
    else:                       # [[override]]: each group's own, for that group's arrays
        plan = assemble_plan(members, site.max_array_size,
                             throttles=[g.request.array_parallelism for g in groups])
    plan.runs = runs            # the file's order, whatever group a run went to
    if sweep.override:
        plan.groups = groups
    return plan


# ----------------------------------------------------------------------------------------
# Display
# ----------------------------------------------------------------------------------------


def _resources_line(res: Resources) -> str:
    def mark(name: str, text: str) -> str:
        return f"{text}*" if name in res.defaulted else text

    parts = [mark("cpus", f"cpus {res.cpus}")]
    parts.append(mark("mem", f"mem {units.format_mem(res.mem_mb)}") if res.mem_mb is not None
                 else "mem unset (Slurm's DefMemPerCPU, or a whole node)")
    parts.append(mark("time", f"time {units.format_time(res.time_min)}"))
    if res.gres:
        parts.append(f"gres {res.gres}")
    parts.append(f"nodes {res.nodes}")
    for name in ("qos", "account", "reservation", "constraint"):
        if getattr(res, name):
            parts.append(mark(name, f"{name} {getattr(res, name)}"))
    if res.sbatch:
        parts.append(f"sbatch {' '.join(res.sbatch)}")
    return ", ".join(parts)


def _group_source(group: RunGroup) -> str:
    if not group.tables:
        return "[resources] only (no [[override]] matches these runs)"
    tables = ", ".join(str(i) for i in group.tables)
    keys = ", ".join(f"{k} from [[override]] {i}" for k, i in sorted(group.setters.items()))
    return f"[resources] with [[override]] {tables} (later tables win key by key: {keys})"


def describe(plan: Plan) -> str:
    """The array plan in words, for --dry-run and `slurmexp explain`."""
    n_runs, n_groups, n_chunks = len(plan.runs), len(plan.placements), len(plan.chunks)
    lines = [f"{n_runs} run{'s' * (n_runs != 1)} in {n_groups} resource group{'s' * (n_groups != 1)}, "
             f"{n_chunks} job array{'s' * (n_chunks != 1)} (one sbatch call each)"]
    for number, placement in enumerate(plan.placements):
        chunks = [c for c in plan.chunks if c.group == number]
        size = sum(c.size for c in chunks)
        lines += ["", f"group {number}: {size} run{'s' * (size != 1)} -> partition {placement.partition}"]
        group = plan.group(number)
        if group is not None:
            lines.append(f"  from: {_group_source(group)}")
        if chunks:
            lines.append(f"  resources: {_resources_line(chunks[0].resources)}")
            if chunks[0].resources.defaulted:
                lines.append("    (* from site.toml, [defaults] or account: not set in the sweep's [resources])")
        if placement.partition in placement.excluded:
            lines.append("  NO PARTITION CAN TAKE THESE RUNS (validation will refuse this plan)")
        if placement.reasons:
            lines.append(f"  why {placement.partition}:")
            lines += [f"    - {reason}" for reason in placement.reasons]
        if placement.excluded:
            lines.append("  not placed on:")
            lines += [f"    - {name}: {why}" for name, why in placement.excluded.items()]
        for c in chunks:
            first, last = c.runs[0], c.runs[-1]
            lines.append(f"  chunk {c.chunk}: --array={c.array_spec}  runs {c.offset}-{c.offset + c.size - 1} "
                         f"of the group ({first.run_id} .. {last.run_id})")
    if plan.throttle is not None and n_chunks:
        lines += ["", describe_throttle(plan)]
    return "\n".join(lines)


def describe_throttle(plan: Plan) -> str:
    """What array_parallelism means for this plan's arrays, for `explain`."""
    limit, shares = plan.throttle, [c.throttle or c.size for c in plan.chunks]
    most = sum(min(share, c.size) for share, c in zip(shares, plan.chunks))
    if len(shares) == 1:
        return f"array_parallelism {limit}: at most {min(limit, most)} runs at once (%{limit})"
    split = " + ".join(str(share) for share in shares)
    if len(shares) > limit:
        return (f"array_parallelism {limit} is for the whole sweep, but it has {len(shares)} job arrays: "
                f"each array runs one task at a time (%1), so up to {most} runs at once, not {limit}")
    return (f"array_parallelism {limit} is for the whole sweep: its {len(shares)} job arrays run at most "
            f"{split} tasks at once (%N of each, in proportion to its size), {most} runs in all")


def describe_checkpoint(sweep: Sweep) -> str:
    """The [checkpoint] table in words, for --dry-run and `slurmexp explain`."""
    c, r = sweep.checkpoint, sweep.retry
    assert c is not None
    lines = [f"checkpoint: Slurm sends SIG{c.signal} {c.before_s}s before the time limit "
             f"(sbatch --signal=B:{c.signal}@{c.before_s}; Slurm may send it up to a minute "
             f"earlier); the task script forwards it to the command's process group and waits",
             "  each run gets $SLURMEXP_CHECKPOINT_DIR (kept across attempts) and $SLURMEXP_ATTEMPT"]
    if c.requeue:
        lines.append(f"  requeue: an attempt that received it (or a preemption's SIGTERM) and did "
                     f"not complete is continued as the next attempt, without escalation or "
                     f"backoff, up to {r.max_attempts} attempts")
    else:
        lines.append("  requeue = false: a signalled attempt ends as Slurm says ([retry] decides)")
    return "\n".join(lines)


def describe_liveness(sweep: Sweep) -> str:
    """The [liveness] table in words, for --dry-run and `slurmexp explain`."""
    v = sweep.live
    every, stale = units.format_interval(v.heartbeat_s), units.format_interval(v.heartbeat_s * STALE_BEATS)
    lines = [f"liveness: the task script writes a heartbeat every {every}; a RUNNING run whose "
             f"heartbeat is {stale} old is STALLED"]
    if v.stall_after_s:
        lines.append(f"  stall_after: also STALLED when its stdout, stderr and metrics have not "
                     f"changed for {units.format_interval(v.stall_after_s)}")
    lines.append("  stall_action = \"requeue\": a STALLED job is cancelled and retried (infrastructure), "
                 f"up to {sweep.retry.max_attempts} attempts" if v.stall_action == "requeue"
                 else "  stall_action = \"flag\": a STALLED run is shown, not cancelled")
    return "\n".join(lines)


def describe_tables(sweep: Sweep) -> list[str]:
    """The [checkpoint] and [liveness] tables in words, those the sweep has."""
    return ([describe_checkpoint(sweep)] if sweep.checkpoint is not None else []) + \
        ([describe_liveness(sweep)] if sweep.liveness is not None else [])
