"""`[[override]]`: which runs a table matches, and the resource groups they make. Pure.

A table matches a run when every key of its `where` equals the run's value of that parameter
(a list: any of its values). A run gets `[resources]`, then the keys each matching table
writes, in file order: a later table wins key by key (`mem` from one, `time` from another).
Runs that end up asking for the same resources are one group, and each group becomes its own
job arrays (sweep.plan). A table that matches no run is refused: it is a typo or a stale value.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from slurmexp.errors import Problem, ValidationError

if TYPE_CHECKING:
    from slurmexp.sweep.expand import Run
    from slurmexp.sweep.spec import Override, ResourceRequest, Sweep


def _same(want: Any, have: Any) -> bool:
    # TOML keeps 1, 1.0 and true apart; a number matches a number of the same value.
    if isinstance(want, bool) or isinstance(have, bool):
        return type(want) is type(have) and want == have
    if isinstance(want, (int, float)) and isinstance(have, (int, float)):
        return want == have
    return type(want) is type(have) and want == have


def matches(table: Override, params: dict[str, Any]) -> bool:
    """Whether `table`'s `where` matches a run with these parameter values."""
    for name, wanted in table.where.items():
        options = wanted if isinstance(wanted, list) else [wanted]
        if name not in params or not any(_same(w, params[name]) for w in options):
            return False
    return True


def written(table: Override) -> dict[str, Any]:
    """The [resources] keys this table writes (absent keys leave the run's value alone)."""
    return {k: getattr(table, k) for k in sorted(table.model_fields_set) if k != "where"}


def merged_request(base: ResourceRequest, tables: Sequence[Override]) -> ResourceRequest:
    """`base` with each table's keys laid over it, in order (later wins key by key)."""
    update: dict[str, Any] = {}
    for table in tables:
        update.update(written(table))
    return base.model_copy(update=update) if update else base


@dataclass
class RunGroup:
    """Runs asking for the same resources, and the [[override]] tables that made them so."""

    request: ResourceRequest
    tables: tuple[int, ...]                     # indices into sweep.override, file order
    runs: list[Run] = field(default_factory=list)
    setters: dict[str, int] = field(default_factory=dict)   # resource key -> last table writing it


def group_runs(sweep: Sweep, runs: Sequence[Run]) -> list[RunGroup]:
    """The runs split by the resources they ask for, groups in the order of their first run.

    Without [[override]] that is one group of every run. A ValidationError names each table
    that matches no run.
    """
    if not sweep.override:
        return [RunGroup(sweep.resources, (), list(runs))]
    groups: dict[str, RunGroup] = {}
    used: set[int] = set()
    for run in runs:
        tables = tuple(i for i, t in enumerate(sweep.override) if matches(t, run.params))
        used.update(tables)
        request = merged_request(sweep.resources, [sweep.override[i] for i in tables])
        key = request.model_dump_json()
        group = groups.get(key)
        if group is None:
            setters = {k: i for i in tables for k in written(sweep.override[i])}
            group = groups[key] = RunGroup(request, tables, [], setters)
        elif tables != group.tables:
            group.tables = tuple(sorted(set(group.tables) | set(tables)))
        group.runs.append(run)
    unused = [i for i in range(len(sweep.override)) if i not in used]
    if unused:
        file = str(sweep.path)
        raise ValidationError(f"{file}: {len(unused)} [[override]] table(s) match no run; "
                              "nothing was submitted",
                              [_no_match(file, sweep, runs, i) for i in unused])
    return list(groups.values())


def _no_match(file: str, sweep: Sweep, runs: Sequence[Run], index: int) -> Problem:
    table = sweep.override[index]
    shown = ", ".join(f"{k} = {_toml(v)}" for k, v in table.where.items())
    seen: dict[str, list[Any]] = {}
    for run in runs:
        for name in table.where:
            if name in run.params and not any(_same(run.params[name], v) for v in seen.setdefault(name, [])):
                seen[name].append(run.params[name])
    values = "; ".join(f"{name}: {', '.join(_toml(v) for v in vals[:8])}"
                       for name, vals in seen.items() if vals)
    first = next(((n, vals[0]) for n, vals in seen.items() if vals), None)
    fix = (f"match a value the runs have ({values}), e.g. where = {{ {first[0]} = {_toml(first[1])} }}; "
           f"or remove the table" if first else "remove the table")
    return Problem(file, f"override[{index}].where",
                   f"[[override]] table {index} (the {_ordinal(index + 1)} in the file): "
                   f"where = {{ {shown} }} matches none of the {len(runs)} runs", fix,
                   check="override_match")


def _toml(value: Any) -> str:
    from slurmexp.sweep.strict_toml import toml_value

    if isinstance(value, list) and len(value) == 1:
        return toml_value(value[0])
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return toml_value(value)


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def problem_key(group: RunGroup | None, key: str) -> str:
    """`resources.X` as the file says it for this group: `override[i].X` when table i set X."""
    if group is None or not key.startswith("resources."):
        return key
    name = key.split(".", 1)[1]
    return f"override[{group.setters[name]}].{name}" if name in group.setters else key
