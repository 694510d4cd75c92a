"""A Slurm record as an attempt keeps it (`attempts.sacct_json`), for `match.attempt_fields`.
"""
from __future__ import annotations

import dataclasses
import functools
import json

from slurmexp.backends.facts import SacctRow


def record_json(row: SacctRow) -> str:
    """The record as the attempt keeps it (`attempts.sacct_json`): its fields, shallow, but
    a pending array row's task list as a count. Every task of a 2,000-task pending array is
    matched to that one row, and copying its 2,000 indices into each task's record (with
    dataclasses.asdict, deeply) was two thirds of a pass."""
    out = {name: getattr(row, name) for name in _record_fields(type(row))}
    if out.get("pending_tasks") is not None:
        out["pending_tasks"] = len(out["pending_tasks"])
    return json.dumps(out, sort_keys=True, default=str)


@functools.cache
def _record_fields(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))

