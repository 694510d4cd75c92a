"""Expansion: a parsed sweep's parameters -> runs with stable ids, and each run's command. Pure.

A run id is a function of the parameter values alone, so a re-launch finds the runs of an
earlier launch whatever the order of the file; the order of runs is the file's order.
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import random
import shlex
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slurmexp.errors import Problem, SpecError

if TYPE_CHECKING:
    from slurmexp.sweep.spec import Sweep


@dataclass(frozen=True)
class Run:
    """One parameter combination. `run_id` depends only on `params` (stable across launches)."""

    run_id: str
    index: int                 # position in the expanded sweep, 0-based, stable order
    params: dict[str, Any]
    seed: int | None = None    # the run's seed: params["seed"] if present, else the sampling seed
    source: str = "grid"       # grid | zip | extra | sample
    # `params` as canonical JSON (sorted keys, no spaces, ASCII), kept from expand() where it
    # was made for the run id: the ledger's params column and the reuse key are this text, and
    # making it again per use was a third of an 8,000-run launch's JSON work. None for a Run
    # made elsewhere (the Python API's): `params_text` makes it then.
    params_json: str | None = field(default=None, repr=False, compare=False)


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


# One encoder for every run: `json.dumps` with options builds a new one per call (a third of
# its time for a run's few parameters). The same text as json.dumps with these options.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def _canonical_json(params: dict[str, Any]) -> str:
    return _CANONICAL.encode(params)


def params_text(run: Run) -> str:
    """The run's parameters as the ledger and reuse keys store them: canonical JSON, with
    anything JSON has no type for written as its str() (as the Python API's values may be)."""
    if run.params_json is not None:
        return run.params_json
    return json.dumps(run.params, sort_keys=True, separators=(",", ":"), default=str)


def run_id_for(params: dict[str, Any]) -> str:
    """Depends on the values only, never on order or position, so re-launches find old runs."""
    return _run_id_of(_canonical_json(params))


def _run_id_of(canonical: str) -> str:
    return "r" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:10]


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


def product_axes(sweep: Sweep) -> list[tuple[str, int]]:
    """(key, number of values) of each axis of the product, in the order expand() nests them."""
    axes = [(f"params.{name}", len(values)) for name, values in sweep.params.items()]
    axes += [(f"zip[{i}]", min(map(len, group.values()), default=0)) for i, group in enumerate(sweep.zip)]
    if sweep.sample is not None:
        axes.append(("sample.n", sweep.sample.n))
    return axes


def count_runs(sweep: Sweep) -> int:
    """How many runs expand() makes, by arithmetic alone: a 10^7-run grid is counted in
    microseconds, where expanding it takes minutes and gigabytes. Exact for every sweep that
    expands (a repeated value or run is an error there, not a smaller count)."""
    axes = product_axes(sweep)
    product = math.prod(n for _, n in axes) if axes or not sweep.runs else 0
    return product + len(sweep.runs)


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
        # The sampler's seed, so a report can tell which draw a run came from; a `seed`
        # parameter is a parameter like any other (param.seed), never this.
        seed = sweep.sample.seed if origin == "sample" and sweep.sample is not None else None
        runs.append(Run(run_id=_run_id_of(text), index=index, params=params, seed=seed,
                        source=origin, params_json=text))
    return runs


# ----------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------


def command_text(sweep: Sweep) -> str:
    """The sweep's command; for `function = "module:callable"`, the task runner calling it."""
    if sweep.command is not None:
        return sweep.command
    import sys

    from slurmexp.functions.runner import runner_command

    return runner_command(sys.executable, function=sweep.function)


@functools.lru_cache(maxsize=8)
def _command_parts(template: str) -> tuple[tuple[str, str | None], ...]:
    """The command template split once per launch, not once per run."""
    return tuple((literal, field) for literal, field, _spec, _conv in string.Formatter().parse(template))


def command_for(sweep: Sweep, run: Run, run_dir: str | Path, experiment_id: str) -> str:
    """The run's command line, each value one literal shell word whatever it contains."""
    values = {**run.params, "run_id": run.run_id, "run_dir": str(run_dir), "experiment_id": experiment_id}
    out: list[str] = []
    for literal, field_name in _command_parts(command_text(sweep)):
        out.append(literal)
        if field_name is None:
            continue
        if field_name not in values:
            raise _spec_error(sweep, "command", f"run {run.run_id} has no value for {{{field_name}}}",
                              f"give {field_name} in every run")
        out.append(shlex.quote(value_text(values[field_name])))
    return "".join(out)

