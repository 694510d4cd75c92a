"""What Slurm's records say about the ledger's attempts (pure: no ledger, no Slurm calls).

A reconcile pass reads sacct rows and squeue rows; this module owns how they are read: the
join of records to attempts on (cluster, job key, submit time), and what an attempt's columns
and reason become from its record. Keeping it pure lets tests state exactly what Slurm
reported. What the state words mean (still going, final, which failure class) is `states`'.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from slurmexp import layout, units
from slurmexp.arrays import task_key
from slurmexp.backends.facts import SacctRow
from slurmexp.ledger.rows import ActiveAttempt
from slurmexp.reconcile.sacct_json import record_json
from slurmexp.states import PROGRESS, REQUEUE_WORDS, TERMINAL_STATES, ledger_state
from slurmexp.timeutil import parse_ts

# The ledger writes an intent just before sbatch; the job's submit time is later, except for
# clock differences between this host and the controller.
SUBMIT_SKEW_S = 10

# ------------------------------------------------------------------------------------------
# Matching rows to attempts (pure)


def row_key(row: SacctRow) -> str:
    """The ledger's job key for a row: "<array job id>_<task>" or the plain job id."""
    if row.array_job_id and row.array_task is not None:
        return task_key(row.array_job_id, row.array_task)
    return row.job_id


def _same_time(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return False
    if a == b:
        return True
    ta, tb = parse_ts(a), parse_ts(b)
    return ta is not None and tb is not None and abs((ta - tb).total_seconds()) < 1


def _cluster_ok(a: str | None, b: str | None) -> bool:
    return not a or not b or a == b


@dataclass
class Match:
    """What the rows say about a list of attempts."""

    rows: dict[int, SacctRow] = field(default_factory=dict)         # attempt_id -> its record
    submit_times: dict[int, str] = field(default_factory=dict)      # learned for NULL ones
    requeues: dict[int, list[SacctRow]] = field(default_factory=dict)  # attempt -> later records
    unmatched: list[ActiveAttempt] = field(default_factory=list)


@dataclass
class QueueRecord(SacctRow):
    """A squeue row as a (thin) record: what the controller knows before accounting does."""


def queue_record(q: Any) -> QueueRecord:
    # A pass makes one per squeue row (thousands): the fields are set directly, every one of
    # them (`_QUEUE_BLANK`: what squeue does not say), not through the dataclass's __init__.
    rec = object.__new__(QueueRecord)
    rec.__dict__.update(_QUEUE_BLANK)
    rec.__dict__.update(
        job_id=q.job_id, job_id_raw=q.job_id, array_job_id=q.array_job_id,
        array_task=q.array_task, pending_tasks=q.pending_tasks, state=q.state,
        state_raw=q.state, submit=q.submit, node_list=q.node_list, reason=q.reason,
        job_name=q.name, comment=q.comment, known_state=getattr(q, "known_state", True))
    return rec


# Every QueueRecord field that squeue does not fill, with the value it has then.
_QUEUE_BLANK = {f.name: None if f.default is dataclasses.MISSING else f.default
                for f in dataclasses.fields(QueueRecord)}


def queue_reasons(queue: Iterable[Any]) -> dict[str, str | None]:
    """job key -> the controller's pending reason, for every task squeue lists (a pending
    array's tasks one by one): the keys the controller still holds. `queue`: squeue's rows,
    or the pass's `queue_record`s of them."""
    return {row_key(r): r.reason for r in expand_rows(
        q if isinstance(q, QueueRecord) else queue_record(q) for q in queue)}


def expand_rows(rows: Iterable[SacctRow],
                array_tasks: dict[str, Sequence[int]] | None = None) -> list[SacctRow]:
    """One record per task: a pending array row ("5_[0-9%2]") stands for each of its tasks.

    A pending array shown under its bare id (no task list yet) stands for the tasks in
    `array_tasks[job id]` (the tasks the ledger expects of that job).
    """
    out: list[SacctRow] = []
    for row in rows:
        if row.array_job_id and row.array_task is None:
            tasks = row.pending_tasks
            if tasks is None:
                tasks = list((array_tasks or {}).get(row.array_job_id, ()))
            for t in tasks:
                out.append(_task_copy(row, int(t)))
            continue
        out.append(row)
    return out


def _task_copy(row: SacctRow, task: int) -> SacctRow:
    """The record of one task of a pending array row: that row with the task's id and index.
    What dataclasses.replace makes, without its __init__ per task (2,000 of them for a
    2,000-task array, every pass)."""
    copy = object.__new__(type(row))
    copy.__dict__.update(row.__dict__)
    copy.job_id, copy.array_task, copy.pending_tasks = f"{row.array_job_id}_{task}", task, None
    return copy


def _records(rows: Iterable[SacctRow], queue: Iterable[SacctRow],
             array_tasks: dict[str, Sequence[int]], keys: set[str]) -> dict[str, list[SacctRow]]:
    """Records by job key, oldest submit first, for the job `keys` asked about (squeue lists
    every job of the user, most of them in no attempt of this pass).

    A task's own row wins over the pending range row that stood for it, and a squeue record
    is only used where sacct has no record with its submit time (accounting lags).
    """
    rows = list(rows)
    own = [r for r in rows if not (r.array_job_id and r.array_task is None)]
    ranges = [r for r in rows if r.array_job_id and r.array_task is None]
    by_key: dict[str, list[SacctRow]] = defaultdict(list)
    for layer in (own, expand_rows(ranges, array_tasks)):
        for row in layer:
            recs = by_key[row_key(row)]
            if not any(_same_time(r.submit, row.submit) for r in recs):
                recs.append(row)
    for q in expand_rows(queue, array_tasks):
        key = row_key(q)
        if key not in keys:
            continue
        recs = by_key[key]
        for i, r in enumerate(recs):
            if _same_time(r.submit, q.submit):
                # sacct lags the controller: a job it still shows PENDING may run already.
                if r.state in PROGRESS and PROGRESS.get(ledger_state(q.state), -1) > \
                        PROGRESS[ledger_state(r.state)]:
                    recs[i] = dataclasses.replace(r, state=q.state, state_raw=q.state,
                                                  node_list=q.node_list or r.node_list)
                break
        else:
            recs.append(q)
    far = datetime.max.replace(tzinfo=timezone.utc)
    for recs in by_key.values():
        if len(recs) > 1:
            recs.sort(key=lambda r: parse_ts(r.submit) or far)
    return by_key


def is_incomplete(rec: SacctRow) -> bool:
    # slurmdbd's placeholder record for seconds after a short job: JobName "allocation", no
    # partition, QOS or comment yet; state, times, node and exit code already right.
    return bool(getattr(rec, "incomplete", False))


def _name_ok(attempt: ActiveAttempt, rec: SacctRow) -> bool:
    want = attempt.job_name
    return not want or not rec.job_name or is_incomplete(rec) or rec.job_name == want


def match_rows(attempts: Sequence[ActiveAttempt], rows: Iterable[SacctRow],
               queue: Iterable[SacctRow] = (), *, skew_s: float = SUBMIT_SKEW_S) -> Match:
    """Join attempts to sacct rows (and squeue records) on (cluster, job key, submit time).

    Each attempt (an `ActiveAttempt` row) is read for attempt_id, cluster, job_id, task_index,
    job_key, submit_time, attempt_no, `created` (its submission's intent time, if known) and
    `job_name` (the expected tag, if known).

    - An attempt with a submit time takes only the record with that submit time: a record of
      the same key with another submit time is another job (ids are reused after a controller
      state loss).
    - An attempt without one takes the earliest free record submitted at or after its intent
      (minus `skew_s`), and the time is returned in `submit_times` to be recorded.
    - Records of the same key submitted after an attempt's own record, with the same job name
      and raw job id, are Slurm's requeues of that job: `requeues[attempt_id]`, oldest first,
      each to become a new attempt of the same run.
    """
    array_tasks: dict[str, list[int]] = defaultdict(list)
    for a in attempts:
        if a.task_index is not None and a.job_id:
            array_tasks[str(a.job_id)].append(int(a.task_index))
    by_key = _records(rows, queue, array_tasks, {a.job_key for a in attempts})
    claimed: set[int] = set()
    match = Match()

    def free(key: str, a: ActiveAttempt) -> list[SacctRow]:
        return [r for r in by_key.get(key, ()) if id(r) not in claimed
                and _cluster_ok(a.cluster, r.cluster)]

    for a in attempts:
        if not a.submit_time:
            continue
        for rec in free(a.job_key, a):
            if _same_time(rec.submit, a.submit_time):
                claimed.add(id(rec))
                match.rows[a.attempt_id] = rec
                break
    far = datetime.max.replace(tzinfo=timezone.utc)
    nulls = sorted((a for a in attempts if not a.submit_time),
                   key=lambda a: (parse_ts(a.created) or far, a.attempt_id))
    for a in nulls:
        created = parse_ts(a.created)
        lo = created - timedelta(seconds=skew_s) if created else None
        for rec in free(a.job_key, a):
            ts = parse_ts(rec.submit)
            if ts is None or (lo is not None and ts < lo) or not _name_ok(a, rec):
                continue
            claimed.add(id(rec))
            match.rows[a.attempt_id] = rec
            match.submit_times[a.attempt_id] = rec.submit
            break
    # Requeues continue the newest attempt of a key.
    newest: dict[str, ActiveAttempt] = {}
    for a in attempts:
        cur = newest.get(a.job_key)
        if cur is None or (a.attempt_no or 0, a.attempt_id) > (
                cur.attempt_no or 0, cur.attempt_id):
            newest[a.job_key] = a
    for key, a in newest.items():
        base = match.rows.get(a.attempt_id)
        base_submit = parse_ts(base.submit if base else a.submit_time)
        if base_submit is None:
            continue
        later = []
        for rec in free(key, a):
            ts = parse_ts(rec.submit)
            if ts is None or ts <= base_submit or not _name_ok(a, rec):
                continue
            if base is not None and base.job_id_raw and rec.job_id_raw and \
                    base.job_id_raw != rec.job_id_raw and rec.job_id_raw != rec.job_id:
                continue
            later.append(rec)
        for rec in later:
            claimed.add(id(rec))
        if later:
            match.requeues[a.attempt_id] = later
    match.unmatched = [a for a in attempts if a.attempt_id not in match.rows]
    return match


# ------------------------------------------------------------------------------------------
# What an attempt learns from its record


def hms(seconds: float | int | None) -> str:
    """Elapsed seconds as Slurm prints them: "HH:MM:SS", "D-HH:MM:SS"; "?" when unknown."""
    return "?" if seconds is None else units.format_seconds(int(seconds))


# base.sh.j2's exit status when it could not write its own files (attempt folder, host,
# started) and so never ran the command.
WRAPPER_CANNOT_WRITE = 98
_FULL_WORDS = ("no space left on device", "disk quota exceeded")


def storage_failure(row: SacctRow, tail: str, attempt_dir: Path | None) -> str | None:
    """Why a FAILED attempt is the file system's failure, not the command's, or None: its task
    script exited 98 without an exit_code file of the command's (it could not write its files),
    or its stderr tail says the disk was full or over quota."""
    if row.state != "FAILED":
        return None
    if row.exit_code == WRAPPER_CANNOT_WRITE and not (
            attempt_dir is not None and (attempt_dir / layout.EXIT_CODE).exists()):
        where = f" in {attempt_dir}" if attempt_dir is not None else ""
        return (f"exit code 98: the task script could not write its files{where} (disk full "
                "or over quota?) and did not run the command; an infrastructure failure")
    if any(w in tail.lower() for w in _FULL_WORDS):
        return f"{failure_reason(row, tail)}; the disk was full or over quota: an infrastructure failure"
    return None
def closed_after_state_loss(row: SacctRow) -> bool:
    """Whether a record is slurmdbd's close of a job the controller forgot.

    When slurmctld loses its state while a job is pending and a new job then gets its id,
    slurmdbd closes the old record as "CANCELLED" (no requester: a person's or an admin's
    cancel reads "CANCELLED by <uid>"), never started, ended when the new job was submitted
    (tests/data/captured/22.05/sacct_pending_state_loss.txt). Nobody cancelled it: the job was
    lost with the controller's state.
    """
    if isinstance(row, QueueRecord) or row.state != "CANCELLED":
        return False
    return (row.state_raw or "").split() == ["CANCELLED"] and row.start is None \
        and row.end is not None


def state_loss_reason(row: SacctRow) -> str:
    return (f"LOST: the controller lost its state while the job was pending (slurmdbd closed "
            f"the record as {row.state_raw or row.state} at {row.end}, never started, when "
            f"another job was given its id); nobody cancelled it")


def failure_reason(row: SacctRow, tail: str = "") -> str | None:
    """What to tell the user about a record: "exit code 3; stderr tail: ...", "NODE_FAIL on c2"."""
    s = row.state
    node = row.node_list or "?"
    if s == "COMPLETED":
        return None
    if not row.known_state:
        return f"unknown Slurm state {row.state_raw or s}"
    if s == "FAILED":
        text = f"exit code {row.exit_code if row.exit_code is not None else '?'}"
        if row.signal:
            text += f" (signal {row.signal})"
        return text + (f"; stderr tail: {tail}" if tail else "")
    if s == "CANCELLED":
        return row.state_raw or "CANCELLED"
    if s == "TIMEOUT":
        return f"TIMEOUT after {hms(row.elapsed_s)}"
    if s in ("NODE_FAIL", "BOOT_FAIL"):
        return f"{s} on {node}"
    if s == "PREEMPTED":
        return f"PREEMPTED on {node}" + (f" (QOS {row.qos})" if row.qos else "")
    if s == "OUT_OF_MEMORY":
        rss = f"max RSS {row.max_rss_mb:.0f} MiB" if row.max_rss_mb is not None else "max RSS ?"
        text = f"OUT_OF_MEMORY ({rss}, asked {row.req_mem or '?'})"
        return text + (f"; stderr tail: {tail}" if tail else "")
    if s == "DEADLINE":
        return "DEADLINE: the job's deadline passed"
    if s == "PENDING":
        return f"pending: {row.reason}" if row.reason else None
    if s in REQUEUE_WORDS:
        return f"{s}: Slurm requeued the job"
    return None


def attempt_fields(row: SacctRow) -> dict[str, Any]:
    """Columns of an attempt learned from a record (only what the record knows)."""
    final = row.state in TERMINAL_STATES or not row.known_state
    fields: dict[str, Any] = {
        "node": row.node_list, "partition": row.partition, "qos": row.qos,
        "account": row.account, "start_time": row.start, "end_time": row.end,
        "elapsed_s": row.elapsed_s, "exit_code": row.exit_code if final else None,
        "alloc_tres": row.alloc_tres, "req_mem": row.req_mem, "max_rss": row.max_rss_mb,
        "total_cpu_s": row.total_cpu_s,
    }
    if is_incomplete(row):
        for name in ("partition", "qos", "req_mem"):
            fields.pop(name, None)
    if not isinstance(row, QueueRecord):
        fields["slurm_job_id"] = row.job_id_raw
        fields["sacct_json"] = record_json(row)
    return {k: v for k, v in fields.items() if v is not None}
