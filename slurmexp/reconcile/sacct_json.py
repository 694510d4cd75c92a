"""A Slurm record as an attempt keeps it (`attempts.sacct_json`), for `match.attempt_fields`.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import operator
from json.encoder import encode_basestring_ascii
from typing import Any

from slurmexp.backends.facts import SacctRow


def record_json(row: SacctRow) -> str:
    """The record as the attempt keeps it (`attempts.sacct_json`): its fields, shallow, but
    a pending array row's task list as a count. Every task of a 2,000-task pending array is
    matched to that one row, and copying its 2,000 indices into each task's record (with
    dataclasses.asdict, deeply) was two thirds of a pass.

    Those tasks' records differ only in job id and task index: the JSON of the rest is made
    once (`_json_without_id`) and each task's two values are written into it."""
    cls = type(row)
    names, read, (job, task, pending) = _record_layout(cls)
    values = list(read(row))
    job_id, task_index = values[job], values[task]
    values[job] = values[task] = None
    if values[pending] is not None:
        values[pending] = len(values[pending])
    try:
        text = _json_without_id(cls, tuple(values))
    except TypeError:           # a value that cannot be a cache key: no shared text
        out = dict(zip(names, values))
        out.update(job_id=job_id, array_task=task_index)
        return json.dumps(out, sort_keys=True, default=str)
    return text.replace(_NO_JOB_JSON, _scalar_json(job_id), 1).replace(
        _NO_TASK_JSON, _scalar_json(task_index), 1)


# Stand-ins for the job id and task index in `_json_without_id`'s text: NUL cannot be in what
# Slurm prints (C strings), so their JSON ("\u0000...") is nowhere else in a record's.
_NO_JOB, _NO_TASK = "\0job id", "\0task index"
_NO_JOB_JSON, _NO_TASK_JSON = json.dumps(_NO_JOB), json.dumps(_NO_TASK)


@functools.lru_cache(maxsize=64)
def _json_without_id(cls: type, values: tuple) -> str:
    out = dict(zip(_record_fields(cls), values))
    out.update(job_id=_NO_JOB, array_task=_NO_TASK)
    return json.dumps(out, sort_keys=True, default=str)


def _scalar_json(value: Any) -> str:
    if value is None:
        return "null"
    if type(value) is int:
        return str(value)
    if type(value) is str:
        return encode_basestring_ascii(value)
    return json.dumps(value, default=str)


@functools.cache
def _record_fields(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


@functools.cache
def _record_layout(cls: type) -> tuple[tuple[str, ...], Any, tuple[int, int, int]]:
    """A record class's field names, a reader of all their values at once, and where the job
    id, task index and pending task list are among them."""
    names = _record_fields(cls)
    return names, operator.attrgetter(*names), tuple(
        names.index(n) for n in ("job_id", "array_task", "pending_tasks"))
