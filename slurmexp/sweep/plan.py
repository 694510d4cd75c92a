"""Turn a parsed sweep into runs, placements and job-array chunks. Pure: no I/O.

(Data types fixed here so that render, ledger and launch can be written against them; the
functions below the types are filled in by the plan work.)
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
import re
import shlex
import string
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slurmexp import units
from slurmexp.errors import Problem, SpecError

if TYPE_CHECKING:
    from slurmexp.sites.model import Node, Site
    from slurmexp.sweep.spec import Sweep


@dataclass(frozen=True)
class Run:
    """One parameter combination. `run_id` depends only on `params` (stable across launches)."""

    run_id: str
    index: int                 # position in the expanded sweep, 0-based, stable order
    params: dict[str, Any]
    seed: int | None = None    # the run's seed: params["seed"] if present, else the sampling seed
    source: str = "grid"       # grid | zip | extra | sample


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
        spec = f"0-{self.size - 1}"
        return f"{spec}%{self.throttle}" if self.throttle else spec


@dataclass
class Plan:
    runs: list[Run]
    placements: list[Placement]        # one per resource group
    chunks: list[ArrayChunk]

    def first_chunks(self) -> list[ArrayChunk]:
        """The first chunk of each resource group: the chunks of a group differ only in their
        runs, so a check of resources (static limits, sbatch --test-only) needs one of them."""
        first: dict[int, ArrayChunk] = {}
        for chunk in self.chunks:
            first.setdefault(chunk.group, chunk)
        return list(first.values())


# ----------------------------------------------------------------------------------------
# Expansion: parameters -> runs
# ----------------------------------------------------------------------------------------


def value_text(value: Any) -> str:
    """How a parameter value is written on the command line (before shell quoting).

    bool before int because bool is an int; floats use repr so 0.1 stays "0.1" and a value
    read back by the program is exactly the one in params.json.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _canonical_json(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"))


def run_id_for(params: dict[str, Any]) -> str:
    """Depends on the values only, never on order or position, so re-launches find old runs."""
    return "r" + hashlib.sha256(_canonical_json(params).encode("utf-8")).hexdigest()[:10]


def _spec_error(sweep: Sweep, key: str, message: str, fix: str) -> SpecError:
    file = str(sweep.path)
    return SpecError(f"{file}: {message}", [Problem(file, key, message, fix, check="duplicate_run")])


def _unique_axis(sweep: Sweep, key: str, axis: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[str, int] = {}
    for i, combo in enumerate(axis):
        text = _canonical_json(combo)
        if text in seen:
            raise _spec_error(sweep, key, f"value #{i + 1} {combo} repeats value #{seen[text] + 1}; "
                                          f"the same run would be made twice", "remove the repeated value")
        seen[text] = i
    return axis


def _draw(rng: random.Random, dist: Any) -> Any:
    if dist.dist == "choice":
        return rng.choice(dist.values)
    if dist.dist == "int":
        return rng.randint(int(dist.low), int(dist.high))
    if dist.dist == "loguniform":
        return math.exp(rng.uniform(math.log(dist.low), math.log(dist.high)))
    return rng.uniform(dist.low, dist.high)


def sample_combinations(sweep: Sweep) -> list[dict[str, Any]]:
    """`n` distinct draws from `[sample.params]`, the same for the same seed.

    Draws are kept distinct because a run id is a function of the values: two equal draws
    would be one run. Small discrete spaces (int/choice) make repeats likely, so repeats are
    redrawn rather than reported; only a space smaller than n is an error.
    """
    sample = sweep.sample
    assert sample is not None
    rng = random.Random(sample.seed)
    combos: list[dict[str, Any]] = []
    seen: set[str] = set()
    draws, limit = 0, max(1000, 100 * sample.n)
    while len(combos) < sample.n:
        if draws >= limit:
            raise _spec_error(sweep, "sample.n",
                              f"only {len(combos)} distinct combinations found in {draws} draws, "
                              f"but n = {sample.n}", "lower sample.n or widen the distributions")
        draws += 1
        combo = {name: _draw(rng, dist) for name, dist in sample.params.items()}
        text = _canonical_json(combo)
        if text not in seen:
            seen.add(text)
            combos.append(combo)
    return combos


def expand(sweep: Sweep) -> list[Run]:
    """Every run of the sweep in a stable order: the product (grid, zip, sample), then [[runs]].

    The product's last axis varies fastest, like nested loops written in file order.
    """
    axes: list[list[dict[str, Any]]] = []
    for name, values in sweep.params.items():
        axes.append(_unique_axis(sweep, f"params.{name}", [{name: v} for v in values]))
    for i, group in enumerate(sweep.zip):
        names = list(group)
        combos = [dict(zip(names, values)) for values in zip(*group.values())]
        axes.append(_unique_axis(sweep, f"zip[{i}]", combos))
    if sweep.sample is not None:
        axes.append(sample_combinations(sweep))
    source = "sample" if sweep.sample is not None else "zip" if sweep.zip else "grid"

    entries: list[tuple[dict[str, Any], str]] = []
    if axes or not sweep.runs:  # no parameters at all still means one run
        for parts in itertools.product(*axes):
            params: dict[str, Any] = {}
            for part in parts:
                params.update(part)
            entries.append((params, source))
    first_extra = len(entries)
    entries += [(dict(run), "extra") for run in sweep.runs]

    runs: list[Run] = []
    seen: dict[str, int] = {}
    for index, (params, origin) in enumerate(entries):
        text = _canonical_json(params)
        if text in seen:
            other = runs[seen[text]]
            raise _spec_error(sweep, f"runs[{index - first_extra}]",
                              f"this run has the same parameters as run #{other.index} "
                              f"({other.source}), so it would run twice",
                              "remove it from [[runs]]")
        seen[text] = index
        seed = params.get("seed")
        if not isinstance(seed, int) or isinstance(seed, bool):
            seed = sweep.sample.seed if origin == "sample" and sweep.sample is not None else None
        runs.append(Run(run_id=run_id_for(params), index=index, params=params, seed=seed, source=origin))
    return runs


# ----------------------------------------------------------------------------------------
# Resources and routing
# ----------------------------------------------------------------------------------------


def requested_resources(sweep: Sweep, site: Site) -> Resources:
    """The sweep's request with site defaults filled in; partition is "" unless asked for."""
    asked, defaults = sweep.resources, site.defaults
    return Resources(
        partition=asked.partition or "",
        time_min=asked.time_min if asked.time_min is not None else defaults.time_min,
        cpus=asked.cpus or defaults.cpus,
        mem_mb=asked.mem_mb if asked.mem_mb is not None else defaults.mem_mb,
        gpus=asked.gpus or 0,
        gpu_type=asked.gpu_type,
        qos=asked.qos or defaults.qos,
        account=asked.account or site.account,
        reservation=asked.reservation,
        constraint=asked.constraint,
        nodes=asked.nodes or 1,
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
        problems.append(f"time {units.format_time(res.time_min)} over max_time {part.max_time}")
    if res.qos and part.allow_qos and res.qos not in part.allow_qos:
        problems.append(f"qos {res.qos} not allowed here (allow_qos: {', '.join(part.allow_qos)})")
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
        problems.append(f"cpus {res.cpus} over every node (at most {most_cpus} per node)")
    most_mem = max(n.mem_mb for n in pool)
    if res.mem_mb is not None and res.mem_mb > most_mem:
        problems.append(f"mem {units.format_mem(res.mem_mb)} over every node "
                        f"(at most {units.format_mem(most_mem)} per node)")
    need = _features(res.constraint)
    if need and not any(need <= set(n.features) for n in pool):
        problems.append(f"constraint {res.constraint}: no node here has features {', '.join(sorted(need))}")
    if len(problems) == before and not any(_node_fits(n, res) for n in pool):
        problems.append("no single node has the cpus, mem and GPUs asked for together")
    if res.nodes > len(pool):
        problems.append(f"nodes {res.nodes} but only {len(pool)} usable nodes here")
    return problems


def _fit_reasons(res: Resources, site: Site, partition: str) -> list[str]:
    part = site.partitions[partition]
    fitting = ", ".join(n.name for n in _pool(res, site, partition) if _node_fits(n, res))
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
                  max_array_size: int, throttle: int | None = None) -> Plan:
    """A plan from several resource groups (a first launch has one; escalated retries add more)."""
    runs: list[Run] = []
    placements: list[Placement] = []
    chunks: list[ArrayChunk] = []
    for number, (resources, placement, group_runs) in enumerate(groups):
        runs += group_runs
        placements.append(placement)
        chunks += make_chunks(group_runs, resources, max_array_size, throttle,
                              group=number, first_chunk=len(chunks))
    return Plan(runs=runs, placements=placements, chunks=chunks)


def make_plan(sweep: Sweep, site: Site) -> Plan:
    resources, placement = resolve_resources(sweep, site)
    return assemble_plan([(resources, placement, expand(sweep))], site.max_array_size,
                         sweep.resources.array_parallelism)


# ----------------------------------------------------------------------------------------
# Commands and display
# ----------------------------------------------------------------------------------------


def command_text(sweep: Sweep) -> str:
    """The sweep's command; for `function = "module:callable"`, the task runner calling it."""
    if sweep.command:
        return sweep.command
    import sys

    from slurmexp.functions.runner import runner_command

    return runner_command(sys.executable, function=sweep.function)


def command_for(sweep: Sweep, run: Run, run_dir: str | Path, experiment_id: str) -> str:
    """The run's command line, each value one literal shell word whatever it contains."""
    values = {**run.params, "run_id": run.run_id, "run_dir": str(run_dir), "experiment_id": experiment_id}
    out: list[str] = []
    for literal, field_name, _spec, _conversion in string.Formatter().parse(command_text(sweep)):
        out.append(literal)
        if field_name is None:
            continue
        if field_name not in values:
            raise _spec_error(sweep, "command", f"run {run.run_id} has no value for {{{field_name}}}",
                              f"give {field_name} in every run")
        out.append(shlex.quote(value_text(values[field_name])))
    return "".join(out)


def _resources_line(res: Resources) -> str:
    parts = [f"cpus {res.cpus}"]
    if res.mem_mb is not None:
        parts.append(f"mem {units.format_mem(res.mem_mb)}")
    parts.append(f"time {units.format_time(res.time_min)}")
    if res.gres:
        parts.append(f"gres {res.gres}")
    parts.append(f"nodes {res.nodes}")
    for name in ("qos", "account", "reservation", "constraint"):
        if getattr(res, name):
            parts.append(f"{name} {getattr(res, name)}")
    return ", ".join(parts)


def describe(plan: Plan) -> str:
    """The array plan in words, for --dry-run and `slurmexp explain`."""
    n_runs, n_groups, n_chunks = len(plan.runs), len(plan.placements), len(plan.chunks)
    lines = [f"{n_runs} run{'s' * (n_runs != 1)} in {n_groups} resource group{'s' * (n_groups != 1)}, "
             f"{n_chunks} job array{'s' * (n_chunks != 1)} (one sbatch call each)"]
    for number, placement in enumerate(plan.placements):
        chunks = [c for c in plan.chunks if c.group == number]
        size = sum(c.size for c in chunks)
        lines += ["", f"group {number}: {size} run{'s' * (size != 1)} -> partition {placement.partition}"]
        if chunks:
            lines.append(f"  resources: {_resources_line(chunks[0].resources)}")
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
    return "\n".join(lines)
