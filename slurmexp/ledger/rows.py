"""Typed rows: what the ledger's queries for reconcile and status return.

Each is a frozen dataclass, so a row cannot gain keys on its way through a pass; what a caller
learns about a row goes into a new row or into its own variables. The field names are the
table's column names (or the query's aliases), and the SELECT is built from the fields, so a
query and its row type cannot disagree.

Rows are read in bulk (a reconcile pass may read 100,000 active attempts): they have slots
(one object per row, no dict beside it, which the garbage collector pays for) and
`from_cursor` fills them without the frozen dataclass `__init__` (five times slower), so
reading them costs about what the plain dicts they replace did.
"""
from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from slurmexp import tags

_FIELDS: dict[type, tuple[str, ...]] = {}   # field names per row class, computed once


@dataclass(frozen=True, slots=True)
class Row:
    """Base of the typed rows."""

    # The SQL expression of a field that is not a plain column of the query's main table.
    _sql: ClassVar[dict[str, str]] = {}

    def __getitem__(self, key: str) -> Any:
        # `row["col"]` for readers not yet moved to attributes (the submission code that
        # another change replaces, tests written against dict rows). Read-only.
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        return _FIELDS.get(cls) or _FIELDS.setdefault(cls, tuple(f.name for f in dataclasses.fields(cls)))

    @classmethod
    def select_list(cls, alias: str) -> str:
        """`alias.col, ..., <expr> AS field` for every field, in field order."""
        return ", ".join(f"{cls._sql[f]} AS {f}" if f in cls._sql else f"{alias}.{f}"
                         for f in cls.fields())

    @classmethod
    def from_cursor(cls, cursor: sqlite3.Cursor) -> list[Self]:
        names = [d[0] for d in cursor.description]
        if sorted(names) != sorted(cls.fields()):
            raise TypeError(f"{cls.__name__}: query columns {names} do not match the fields")
        setters = [getattr(cls, name).__set__ for name in names]
        new = object.__new__
        out = []
        for values in cursor:
            row = new(cls)
            for put, value in zip(setters, values):
                put(row, value)
            out.append(row)
        return out

    def to_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it deep-copies every value recursively, which was most of
        # `status EXP --format json` on 100,000 runs. A row's values are scalars or one level
        # of dict/list (params), copied here so the caller may change them.
        return {name: _copy(getattr(self, name)) for name in self.fields()}


def _copy(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else list(value) if isinstance(value, list) else value


@dataclass(frozen=True, slots=True)
class Attempt(Row):
    """One row of the attempts table."""

    attempt_id: int
    exp_id: str
    run_id: str
    attempt_no: int
    state: str
    sub_id: int | None = None
    cluster: str | None = None
    job_id: str | None = None
    task_index: int | None = None
    job_key: str | None = None
    slurm_job_id: str | None = None
    submit_time: str | None = None
    reason: str | None = None
    node: str | None = None
    partition: str | None = None
    qos: str | None = None
    account: str | None = None
    start_time: str | None = None
    end_time: str | None = None
    elapsed_s: float | None = None
    exit_code: int | None = None
    alloc_tres: str | None = None
    req_mem: str | None = None
    max_rss: float | None = None
    total_cpu_s: float | None = None
    failure_class: str | None = None
    updated: str | None = None
    sacct_json: str | None = None
    unlisted_since: str | None = None   # sacct says going, the controller has not listed it since
    metrics_json: str | None = None     # the run's metrics summary as the attempt ended (schema 7)


@dataclass(frozen=True, slots=True)
class ActiveAttempt(Attempt):
    """An attempt a reconcile pass watches, with what the pass needs of its run and submission."""

    _sql: ClassVar[dict[str, str]] = {
        "run_dir": "r.run_dir", "run_n_attempts": "r.n_attempts", "run_state": "r.state",
        "run_chunk": "r.chunk", "created": "s.created", "sub_chunk": "s.chunk",
        "script_path": "s.script_path", "exp_dir": "e.exp_dir",
    }

    run_dir: str | None = None
    run_n_attempts: int | None = None   # the run's attempt count: is this its newest attempt?
    run_state: str | None = None
    run_chunk: int | None = None
    created: str | None = None          # when its submission's intent was written
    sub_chunk: int | None = None
    script_path: str | None = None
    exp_dir: str | None = None

    @property
    def chunk(self) -> int | None:
        return self.sub_chunk if self.sub_chunk is not None else self.run_chunk

    @property
    def job_name(self) -> str | None:
        """The tag launch gave the chunk's job; None for a submission that is not a chunk."""
        return None if self.chunk is None else tags.job_name(self.exp_id, self.chunk)

    @property
    def is_newest(self) -> bool:
        return self.run_n_attempts is not None and int(self.run_n_attempts) == int(self.attempt_no)

    def successor(self, attempt: Mapping[str, Any] | Attempt) -> ActiveAttempt:
        """The attempt a Slurm requeue made of this one: its own columns, this one's context."""
        values = attempt.to_dict() if isinstance(attempt, Row) else dict(attempt)
        return dataclasses.replace(
            self, **{f: values[f] for f in Attempt.fields()},
            run_n_attempts=values["attempt_no"], run_state=values["state"])


@dataclass(frozen=True, slots=True)
class Submission(Row):
    """One row of the submissions table. An intent is a submission in state INTENT: written
    before sbatch ran, with no job yet."""

    sub_id: int
    exp_id: str
    state: str
    created: str
    chunk: int | None = None
    array_spec: str | None = None
    n_tasks: int | None = None
    script_path: str | None = None
    script_sha256: str | None = None
    job_id: str | None = None
    cluster: str | None = None
    submit_time: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class PlannedRun(Row):
    """A PLANNED run that reconcile or a manual retry may submit, with its experiment's state."""

    _sql: ClassVar[dict[str, str]] = {
        "exp_state": "e.state", "exp_created": "e.created",
        "last_intent": "(SELECT MAX(created) FROM submissions s WHERE s.exp_id = r.exp_id)",
    }

    exp_id: str
    run_id: str
    idx: int
    state: str
    n_attempts: int
    chunk: int | None = None
    task_index: int | None = None
    params_json: str | None = None
    seed: int | None = None
    source: str | None = None
    reason: str | None = None
    run_dir: str | None = None
    updated: str | None = None
    reuse_key: str | None = None        # schema 6: launch --skip-completed
    reused_from: str | None = None
    reused_attempt: int | None = None
    exp_state: str | None = None
    exp_created: str | None = None
    last_intent: str | None = None      # the experiment's newest submission intent


@dataclass(frozen=True, slots=True)
class RunStatus(Row):
    """One line of `slurmexp status EXPERIMENT`: a run and its newest attempt's job.

    `to_dict()` is the JSON of `status --format json`: the field names are that contract.
    """

    run_id: str
    idx: int
    params: dict
    state: str
    reason: str | None
    attempts: int
    run_dir: str | None
    job: str | None
    cluster: str | None
    submit_time: str | None
    start_time: str | None
    end_time: str | None
    node: str | None
    partition: str | None
    exit_code: int | None
