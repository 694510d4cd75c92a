"""Fix lines a user can paste: each is a TOML edit of the sweep (`set time = "00:05:00" in
[resources]`, `remove constraint from [resources]`) chosen so that, once made, the check that
asked for it passes. The route fixes work out the value from the partition's own nodes (not the
whole site's), or name a partition that takes the request as it is.
"""
from __future__ import annotations

import difflib
from typing import Any

from slurmexp import units
from slurmexp.sites.discover import toml_value
from slurmexp.sites.model import Site
from slurmexp.sweep.routing import Resources, route_problems


def set_line(key: str, value: Any, table: str | None = "resources") -> str:
    """`set time = "00:05:00" in [resources]` (table None: a top-level key of the sweep)."""
    where = f"in [{table}]" if table else "at the top of the sweep file"
    return f"set {key} = {toml_value(value)} {where}"


def remove_line(key: str, table: str = "resources") -> str:
    return f"remove {key} from [{table}]"


def one_of(key: str, choices: list[str], wrong: str | None = None, none: str = "") -> str:
    """Set `key` to the closest of `choices` (the others named), or `none` when there is none."""
    if not choices:
        return none or remove_line(key)
    best = (difflib.get_close_matches(wrong, choices, n=1) or [choices[0]])[0] if wrong else choices[0]
    others = [c for c in choices if c != best]
    return set_line(key, best) + (f" (or one of: {', '.join(others)})" if others else "")


def taking_partitions(site: Site, res: Resources, but: str) -> list[str]:
    """The partitions of the site that take `res` as it is, other than `but`."""
    return [p for p in site.partitions if p != but and not route_problems(res, site, p)]


def _or_partition(fix: str, site: Site, res: Resources, partition: str) -> str:
    others = taking_partitions(site, res, partition)
    return f"{fix}, or {set_line('partition', others[0])}" if others else fix


def route_fix(key: str, message: str, site: Site, res: Resources, partition: str) -> str:
    """The fix for one of `route_problems`' messages about `partition`."""
    part = site.partitions.get(partition)
    if key == "resources.partition" or part is None:
        return one_of("partition", taking_partitions(site, res, "") or list(site.partitions), partition)
    pool = site.partition_nodes(partition)
    if res.reservation and res.reservation in site.reservations:
        pool = [n for n in pool if n.name in site.reservations[res.reservation].nodes] or pool
    if key == "resources.time":
        return _or_partition(set_line("time", part.max_time), site, res, partition)
    if key == "resources.qos":
        return _or_partition(one_of("qos", list(part.allow_qos), res.qos), site, res, partition)
    if key == "resources.reservation":
        if res.reservation not in site.reservations:
            return one_of("reservation", list(site.reservations), res.reservation)
        others = taking_partitions(site, res, partition)
        return set_line("partition", others[0]) if others else remove_line("reservation")
    if key == "resources.gpu_type":
        kinds = sorted({k for n in pool for k, c in n.gpus.items() if k and c >= res.gpus})
        fix = one_of("gpu_type", kinds, res.gpu_type, none=remove_line("gpus"))
        return _or_partition(fix, site, res, partition)
    if key == "resources.gpus":
        most = max((n.gpus.get(res.gpu_type, 0) if res.gpu_type else n.gpu_count for n in pool), default=0)
        if most:
            return _or_partition(set_line("gpus", most), site, res, partition)
        others = taking_partitions(site, res, partition)
        return f"{set_line('partition', others[0])}, or {remove_line('gpus')}" if others else remove_line("gpus")
    if key == "resources.nodes":
        return _or_partition(set_line("nodes", len(pool)), site, res, partition)
    if key == "resources.constraint":
        features = sorted({f for n in pool for f in n.features})
        fix = remove_line("constraint") + (f" (features here: {', '.join(features)})" if features else "")
        return _or_partition(fix, site, res, partition)
    if key == "resources.cpus" and "over every node" in message:
        return _or_partition(set_line("cpus", max(n.cpus for n in pool)), site, res, partition)
    if key == "resources.mem":
        return _or_partition(set_line("mem", units.format_mem(max(n.mem_mb for n in pool))), site, res, partition)
    return _or_partition("ask for less per task", site, res, partition)
