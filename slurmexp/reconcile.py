"""Bring the ledger up to date with what Slurm did, retry what the cluster broke, and say so.

One reconcile pass (run by cron every few minutes, or by hand) does, in this order:

1. takes a non-blocking lock next to the ledger, so overlapping passes never act twice;
2. asks Slurm once: one sacct call for every active attempt of every Slurm experiment (plus one
   by job name when a launch died between sbatch and the ledger write) and one squeue call.
   Nothing is written until every answer is in, so a daemon that does not answer
   (SlurmUnavailable) changes nothing;
3. adopts jobs whose submission is still INTENT (found by their tag `sx.<exp>.<chunk>`);
4. matches sacct rows to attempts on (cluster, job key, submit time): job ids are reused after
   a controller state loss, so a row with another submit time is another job, and a row with
   the same key and a later submit time is Slurm's own requeue of the job, recorded as a NEW
   attempt of the same run;
5. writes each attempt's transition, with its event and the retry decision, in one transaction;
6. submits the retries that are due (only the affected tasks, one sbatch per chunk, intent ->
   sbatch -> record, as launch does);
7. writes a heartbeat with a summary, which `health()` reads.

Failure classes decide what happens next: infrastructure failures (NODE_FAIL, BOOT_FAIL,
PREEMPTED, LOST) are retried with exponential backoff up to `retry.max_attempts` attempts per
run; resource failures (TIMEOUT, OUT_OF_MEMORY) are final unless the sweep asked to escalate
(then time or memory grows by `escalate_factor` up to the partition's limit); user failures
(FAILED, CANCELLED, DEADLINE) are final. A state word slurmexp does not know is kept, flagged,
watched, and never read as success.

Killing a pass at any point is harmless: every step is a transaction of its own, and the next
pass sees what is left (an INTENT it adopts or, once provably dead, replaces; a PLANNED run it
submits; an attempt whose row it matches again).
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import math
import os
import re
import shlex
import sqlite3
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from . import units
from .backends.facts import SacctRow
from .errors import Problem, SlurmexpError, SlurmUnavailable
from .ledger import TERMINAL_STATES, Ledger, parse_array_spec
from .render import chunk_file_stem

HEARTBEAT_KIND = "reconcile"
LOCK_SUFFIX = ".reconcile.lock"
CRON_MARKER = "# slurmexp-reconcile (managed by `slurmexp cron --install`)"
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_UNAVAILABLE = 3

# The ledger writes an intent just before sbatch; the job's submit time is later, except for
# clock differences between this host and the controller.
SUBMIT_SKEW_S = 10
# sacct -S: searched from the oldest active attempt minus this, never from all history (job
# ids are reused after a controller reset).
SINCE_MARGIN_S = 300
# A job that left both sacct and squeue but whose task wrote its attempt files ran: wait this
# many grace periods for accounting before calling it lost.
EVIDENCE_FACTOR = 12
STDERR_TAIL_LINES = 5
STDERR_TAIL_CHARS = 400
MAX_ACTIONS_KEPT = 200
HEARTBEAT_LIST_LIMIT = 20

INFRASTRUCTURE_STATES = frozenset({"NODE_FAIL", "BOOT_FAIL", "PREEMPTED", "LOST"})
RESOURCE_STATES = frozenset({"OUT_OF_MEMORY", "TIMEOUT"})
USER_STATES = frozenset({"FAILED", "CANCELLED", "DEADLINE"})
# Slurm words for "still going" that the ledger writes with its own, fewer words.
_ACTIVE_ALIASES = {
    "PENDING": "PENDING", "RUNNING": "RUNNING", "SUSPENDED": "SUSPENDED",
    "REQUEUED": "REQUEUED", "REQUEUE_HOLD": "REQUEUED", "REQUEUE_FED": "REQUEUED",
    "COMPLETING": "RUNNING", "CONFIGURING": "RUNNING", "SIGNALING": "RUNNING",
    "STAGE_OUT": "RUNNING", "RESIZING": "RUNNING", "STOPPED": "SUSPENDED",
    "RESV_DEL_HOLD": "PENDING", "POWER_UP_NODE": "PENDING",
}
# A record in this state is followed by another record of the same job (Slurm requeued it).
_REQUEUE_WORDS = frozenset({"REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"})
# How far along a job that is still going is; a record never moves an attempt backwards
# (a placeholder record can say PENDING for a job squeue already shows RUNNING).
_PROGRESS = {"PLANNED": 0, "SUBMITTED": 0, "PENDING": 1, "REQUEUED": 1, "RUNNING": 2,
             "SUSPENDED": 2}
_RUNAWAY_RE = re.compile(r"the controller does not list the job \(since ([^)]+)\)")


# ------------------------------------------------------------------------------------------
# Small pure helpers


def classify(state: str, exit_code: int | None = None) -> str | None:
    """Failure class of a final Slurm state: "infrastructure", "resources", "user", "unknown".

    None for COMPLETED and for states that are still going (PENDING, RUNNING ...). The exit
    code never turns a failure into a success: a FAILED job is a user failure whatever it
    returned, and an unknown word stays "unknown".
    """
    word = (state or "").split()[0] if state else ""
    if word == "COMPLETED" or word in _ACTIVE_ALIASES or word in ("PLANNED", "SUBMITTED"):
        return None
    if word in INFRASTRUCTURE_STATES:
        return "infrastructure"
    if word in RESOURCE_STATES:
        return "resources"
    if word in USER_STATES:
        return "user"
    return "unknown"


def ledger_state(slurm_state: str) -> str:
    """The word the ledger stores for a Slurm state (unknown words are kept as they are)."""
    return _ACTIVE_ALIASES.get(slurm_state, slurm_state)


def parse_ts(text: str | None) -> datetime | None:
    """An aware datetime for ledger (UTC, with offset) and Slurm (local, naive) timestamps."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return value.astimezone() if value.tzinfo is None else value


def _utc_iso(value: datetime | None = None) -> str:
    value = value or datetime.now(timezone.utc)
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def sacct_time(value: datetime) -> str:
    """A time as sacct -S reads it: local wall-clock time without offset."""
    return value.astimezone().strftime("%Y-%m-%dT%H:%M:%S")


def hms(seconds: float | int | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return (f"{days}-" if days else "") + f"{h:02d}:{m:02d}:{s:02d}"


def compress_indices(indices: Iterable[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> "0-2,5,7-8" (an sbatch --array list)."""
    values = sorted(set(int(i) for i in indices))
    parts: list[str] = []
    start = prev = None
    for v in values:
        if start is None:
            start = prev = v
        elif v == prev + 1:
            prev = v
        else:
            parts.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = v
    if start is not None:
        parts.append(f"{start}" if start == prev else f"{start}-{prev}")
    return ",".join(parts)


def chunk_job_name(exp_id: str, chunk: int | None) -> str | None:
    """The tag launch gives a chunk's job (`launch.job_name`)."""
    if chunk is None:
        return None
    return f"sx.{exp_id}.{int(chunk):03d}"


def _throttle(array_spec: str | None) -> str | None:
    if array_spec and "%" in array_spec:
        value = array_spec.split("%", 1)[1].strip()
        return value if value.isdigit() else None
    return None


def row_key(row: SacctRow) -> str:
    """The ledger's job key for a row: "<array job id>_<task>" or the plain job id."""
    if row.array_job_id and row.array_task is not None:
        return f"{row.array_job_id}_{row.array_task}"
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


# ------------------------------------------------------------------------------------------
# Matching rows to attempts (pure)


@dataclass
class Match:
    """What the rows say about a list of attempts."""

    rows: dict[int, SacctRow] = field(default_factory=dict)         # attempt_id -> its record
    submit_times: dict[int, str] = field(default_factory=dict)      # learned for NULL ones
    requeues: dict[int, list[SacctRow]] = field(default_factory=dict)  # attempt -> later records
    unmatched: list[dict] = field(default_factory=list)


@dataclass
class QueueRecord(SacctRow):
    """A squeue row as a (thin) record: what the controller knows before accounting does."""


def queue_record(q: Any) -> QueueRecord:
    return QueueRecord(
        job_id=q.job_id, job_id_raw=q.job_id, array_job_id=q.array_job_id,
        array_task=q.array_task, pending_tasks=q.pending_tasks, state=q.state,
        state_raw=q.state, submit=q.submit, start=None, end=None, elapsed_s=None,
        exit_code=None, signal=None, node_list=q.node_list, partition=None, qos=None,
        account=None, reason=q.reason, alloc_tres=None, req_mem=None, max_rss_mb=None,
        total_cpu_s=None, alloc_cpus=None, job_name=q.name, comment=q.comment, cluster=None,
        known_state=getattr(q, "known_state", True))


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
                out.append(dataclasses.replace(
                    row, job_id=f"{row.array_job_id}_{t}", array_task=int(t), pending_tasks=None))
            continue
        out.append(row)
    return out


def _records(rows: Iterable[SacctRow], queue: Iterable[SacctRow],
             array_tasks: dict[str, Sequence[int]]) -> dict[str, list[SacctRow]]:
    """Records by job key, oldest submit first.

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
        recs = by_key[row_key(q)]
        for i, r in enumerate(recs):
            if _same_time(r.submit, q.submit):
                # sacct lags the controller: a job it still shows PENDING may run already.
                if r.state in _PROGRESS and _PROGRESS.get(ledger_state(q.state), -1) > \
                        _PROGRESS[ledger_state(r.state)]:
                    recs[i] = dataclasses.replace(r, state=q.state, state_raw=q.state,
                                                  node_list=q.node_list or r.node_list)
                break
        else:
            recs.append(q)
    far = datetime.max.replace(tzinfo=timezone.utc)
    for recs in by_key.values():
        recs.sort(key=lambda r: parse_ts(r.submit) or far)
    return by_key


def _incomplete(rec: SacctRow) -> bool:
    # slurmdbd's placeholder record for seconds after a short job: JobName "allocation", no
    # partition, QOS or comment yet; state, times, node and exit code already right.
    return bool(getattr(rec, "incomplete", False))


def _name_ok(attempt: dict, rec: SacctRow) -> bool:
    want = attempt.get("job_name")
    return not want or not rec.job_name or _incomplete(rec) or rec.job_name == want


def match_rows(attempts: Sequence[dict], rows: Iterable[SacctRow],
               queue: Iterable[SacctRow] = (), *, skew_s: float = SUBMIT_SKEW_S) -> Match:
    """Join attempts to sacct rows (and squeue records) on (cluster, job key, submit time).

    Each attempt dict needs attempt_id, cluster, job_id, task_index, job_key, submit_time, and
    may carry `created` (its submission's intent time) and `job_name` (the expected tag).

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
        if a.get("task_index") is not None and a.get("job_id"):
            array_tasks[str(a["job_id"])].append(int(a["task_index"]))
    by_key = _records(rows, queue, array_tasks)
    claimed: set[int] = set()
    match = Match()

    def free(key: str, a: dict) -> list[SacctRow]:
        return [r for r in by_key.get(key, ()) if id(r) not in claimed
                and _cluster_ok(a.get("cluster"), r.cluster)]

    for a in attempts:
        if not a.get("submit_time"):
            continue
        for rec in free(a["job_key"], a):
            if _same_time(rec.submit, a["submit_time"]):
                claimed.add(id(rec))
                match.rows[a["attempt_id"]] = rec
                break
    far = datetime.max.replace(tzinfo=timezone.utc)
    nulls = sorted((a for a in attempts if not a.get("submit_time")),
                   key=lambda a: (parse_ts(a.get("created")) or far, a["attempt_id"]))
    for a in nulls:
        created = parse_ts(a.get("created"))
        lo = created - timedelta(seconds=skew_s) if created else None
        for rec in free(a["job_key"], a):
            ts = parse_ts(rec.submit)
            if ts is None or (lo is not None and ts < lo) or not _name_ok(a, rec):
                continue
            claimed.add(id(rec))
            match.rows[a["attempt_id"]] = rec
            match.submit_times[a["attempt_id"]] = rec.submit
            break
    # Requeues continue the newest attempt of a key.
    newest: dict[str, dict] = {}
    for a in attempts:
        cur = newest.get(a["job_key"])
        if cur is None or (a.get("attempt_no") or 0, a["attempt_id"]) > (
                cur.get("attempt_no") or 0, cur["attempt_id"]):
            newest[a["job_key"]] = a
    for key, a in newest.items():
        base = match.rows.get(a["attempt_id"])
        base_submit = parse_ts(base.submit if base else a.get("submit_time"))
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
            match.requeues[a["attempt_id"]] = later
    match.unmatched = [a for a in attempts if a["attempt_id"] not in match.rows]
    return match


# ------------------------------------------------------------------------------------------
# Retry policy


@dataclass
class RetryPolicy:
    max_attempts: int = 3
    escalate: bool = False
    escalate_factor: float = 2.0
    backoff_s: float = 60.0
    max_time_min: int | None = None
    max_mem_mb: int | None = None
    time_min: int | None = None          # what the sweep asked (fallback when the script says nothing)
    mem_mb: int | None = None

    @classmethod
    def from_settings(cls, settings: dict | None) -> RetryPolicy:
        settings = settings or {}
        retry = settings.get("retry") or {}
        limits = settings.get("limits") or {}
        res = settings.get("resources") or {}
        p = cls()
        for name in ("max_attempts", "escalate", "escalate_factor", "backoff_s"):
            if retry.get(name) is not None:
                setattr(p, name, type(getattr(p, name))(retry[name]))
        p.max_time_min = _int_or_none(limits.get("max_time_min"))
        p.max_mem_mb = _int_or_none(limits.get("max_mem_mb"))
        p.time_min = _int_or_none(res.get("time_min"))
        p.mem_mb = _int_or_none(res.get("mem_mb"))
        return p

    def backoff(self, attempt_no: int) -> float:
        return float(self.backoff_s) * 2 ** max(int(attempt_no) - 1, 0)

    def scaled(self, base: int | None, times: int, cap: int | None) -> int | None:
        if base is None:
            return None
        value = math.ceil(base * self.escalate_factor ** times) if times > 0 else base
        return min(value, cap) if cap is not None else value


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


_SBATCH_LINE = re.compile(r"^#SBATCH\s+--(time|mem|array)=(\S+)\s*$", re.MULTILINE)


def script_resources(path: str | os.PathLike | None) -> dict[str, Any]:
    """time_min, mem_mb and array spec from a rendered chunk script's #SBATCH lines."""
    out: dict[str, Any] = {"time_min": None, "mem_mb": None, "array": None}
    if not path:
        return out
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            head = fh.read(20000)
    except OSError:
        return out
    for key, value in _SBATCH_LINE.findall(head):
        try:
            if key == "time":
                out["time_min"] = units.parse_time(value)
            elif key == "mem":
                out["mem_mb"] = units.parse_mem(value)
            else:
                out["array"] = value
        except ValueError:
            pass
    return out


@dataclass
class Escalation:
    time_min: int | None = None     # override (None: the script's own)
    mem_mb: int | None = None

    def args(self) -> list[str]:
        out = []
        if self.time_min is not None:
            out.append(f"--time={units.format_time(self.time_min)}")
        if self.mem_mb is not None:
            out.append(f"--mem={self.mem_mb}M")
        return out


def escalation_for(policy: RetryPolicy, base: dict, n_timeouts: int, n_ooms: int) -> Escalation:
    """What a retry asks for after `n_timeouts` TIMEOUT and `n_ooms` OUT_OF_MEMORY attempts."""
    if not policy.escalate:
        return Escalation()
    base_time = base.get("time_min") or policy.time_min
    base_mem = base.get("mem_mb") or policy.mem_mb
    return Escalation(
        time_min=policy.scaled(base_time, n_timeouts, policy.max_time_min) if n_timeouts else None,
        mem_mb=policy.scaled(base_mem, n_ooms, policy.max_mem_mb) if n_ooms else None)


@dataclass
class RetryDecision:
    retry: bool
    note: str                      # appended to the reason
    due: datetime | None = None


def decide_retry(policy: RetryPolicy, state: str, failure_class: str | None, attempt_no: int,
                 history: Sequence[str], base: dict, end: datetime | None,
                 now: datetime) -> RetryDecision:
    """Whether a run whose newest attempt just ended in `state` gets another attempt.

    `history` holds the states of all the run's attempts, this one included.
    """
    if failure_class in (None, "user", "unknown"):
        return RetryDecision(False, "")
    left = attempt_no < policy.max_attempts
    if failure_class == "infrastructure":
        if not left:
            return RetryDecision(False, f"no retries left ({attempt_no} of "
                                        f"{policy.max_attempts} attempts)")
        due = (end or now) + timedelta(seconds=policy.backoff(attempt_no))
        return RetryDecision(True, f"retry {attempt_no + 1}/{policy.max_attempts}", due)
    # resources
    if not policy.escalate:
        return RetryDecision(False, "")
    if state == "TIMEOUT":
        what, unit, cap, key = "time", "min", policy.max_time_min, "time_min"
        base_value = base.get("time_min") or policy.time_min
        n = sum(1 for s in history if s == "TIMEOUT")
    else:
        what, unit, cap, key = "memory", "MiB", policy.max_mem_mb, "mem_mb"
        base_value = base.get("mem_mb") or policy.mem_mb
        n = sum(1 for s in history if s == "OUT_OF_MEMORY")
    if base_value is None:
        return RetryDecision(False, f"cannot escalate: the requested {what} is not known")
    current = policy.scaled(base_value, n - 1, cap)
    if cap is not None and current >= cap:
        shown = units.format_time(cap) if what == "time" else f"{cap}M"
        return RetryDecision(False, f"already at the partition limit ({what} {shown}); not retried")
    if not left:
        return RetryDecision(False, f"no retries left ({attempt_no} of {policy.max_attempts} attempts)")
    new = policy.scaled(base_value, n, cap)
    shown = units.format_time(new) if what == "time" else f"{new}M"
    return RetryDecision(True, f"retry {attempt_no + 1}/{policy.max_attempts} with {what} {shown}",
                         now)


# ------------------------------------------------------------------------------------------
# Reasons


def attempt_dir(run_dir: str | None, job_key: str | None, restart: int = 0) -> Path | None:
    """`<run_dir>/attempts/<job_key>[.r<N>]`, as the task script names it."""
    if not run_dir or not job_key:
        return None
    return Path(run_dir) / "attempts" / (f"{job_key}.r{restart}" if restart else job_key)


def stderr_tail(paths: Iterable[Path | None], lines: int = STDERR_TAIL_LINES,
                limit: int = STDERR_TAIL_CHARS) -> str:
    """The last non-empty lines of the first readable, non-empty file, joined with " | "."""
    for path in paths:
        if path is None:
            continue
        try:
            with open(path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 8192))
                data = fh.read().decode("utf-8", errors="replace")
        except OSError:
            continue
        kept = [ln.strip() for ln in data.splitlines() if ln.strip()][-lines:]
        if kept:
            text = " | ".join(kept)
            return text if len(text) <= limit else "..." + text[-limit:]
    return ""


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
    if s in _REQUEUE_WORDS:
        return f"{s}: Slurm requeued the job"
    return None


def _attempt_fields(row: SacctRow) -> dict[str, Any]:
    """Columns of an attempt learned from a record (only what the record knows)."""
    final = row.state in TERMINAL_STATES or not row.known_state
    fields: dict[str, Any] = {
        "node": row.node_list, "partition": row.partition, "qos": row.qos,
        "account": row.account, "start_time": row.start, "end_time": row.end,
        "elapsed_s": row.elapsed_s, "exit_code": row.exit_code if final else None,
        "alloc_tres": row.alloc_tres, "req_mem": row.req_mem, "max_rss": row.max_rss_mb,
        "total_cpu_s": row.total_cpu_s,
    }
    if _incomplete(row):
        for name in ("partition", "qos", "req_mem"):
            fields.pop(name, None)
    if not isinstance(row, QueueRecord):
        fields["slurm_job_id"] = row.job_id_raw
        fields["sacct_json"] = json.dumps(dataclasses.asdict(row), sort_keys=True, default=str)
    return {k: v for k, v in fields.items() if v is not None}


def _differs(old: dict, new: dict) -> bool:
    for k, v in new.items():
        o = old.get(k)
        if o is None and v is None:
            continue
        if o is None or v is None:
            return True
        if isinstance(v, float) or isinstance(o, float):
            try:
                if abs(float(o) - float(v)) > 1e-6:
                    return True
                continue
            except (TypeError, ValueError):
                return True
        if str(o) != str(v):
            return True
    return False


# ------------------------------------------------------------------------------------------
# Summary


@dataclass
class PassSummary:
    started: str = ""
    dry_run: bool = False
    skipped: bool = False            # another pass held the lock: nothing done
    error: str | None = None         # the pass stopped (e.g. sacct did not answer)
    exit_code: int = EXIT_OK
    seconds: float = 0.0
    sacct_s: float = 0.0
    squeue_s: float = 0.0
    sbatch_s: float = 0.0
    active: int = 0                  # attempts looked at
    moved: dict[str, int] = field(default_factory=dict)   # new state -> attempts moved there
    requeued: int = 0                # new attempts from Slurm's own requeues
    adopted: int = 0                 # INTENT submissions whose job was found
    intents_failed: int = 0          # INTENT submissions proven never to have made a job
    lost: int = 0
    flagged: list[str] = field(default_factory=list)      # unknown Slurm states
    retries_scheduled: int = 0       # runs moved back to PLANNED for a retry
    retries_submitted: int = 0       # runs resubmitted in this pass
    retry_jobs: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)     # experiments that finished
    warnings: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)      # what was (or, dry run, would be) done

    @property
    def ok(self) -> bool:
        return self.error is None

    def act(self, text: str) -> None:
        if len(self.actions) < MAX_ACTIONS_KEPT:
            self.actions.append(text)
        elif len(self.actions) == MAX_ACTIONS_KEPT:
            self.actions.append("... (more actions not listed)")

    def moved_to(self, state: str) -> None:
        self.moved[state] = self.moved.get(state, 0) + 1

    def to_dict(self, list_limit: int | None = None) -> dict[str, Any]:
        """Plain data (for --format json and the heartbeat); `list_limit` trims long lists."""
        data = dataclasses.asdict(self)
        data["ok"] = self.ok
        for key in ("sacct_s", "squeue_s", "sbatch_s", "seconds"):
            data[key] = round(data[key], 3)
        if list_limit is not None:
            for key in ("actions", "flagged", "warnings", "retry_jobs", "finished"):
                if len(data[key]) > list_limit:
                    data[key] = data[key][:list_limit] + [f"... {len(data[key]) - list_limit} more"]
        return data

    def format(self, verbose: bool = False) -> str:
        if self.skipped:
            return "reconcile: another pass is running; nothing done"
        head = "reconcile (dry run)" if self.dry_run else "reconcile"
        lines = []
        if self.error:
            lines.append(f"{head}: FAILED: {self.error}")
            if not self.moved and not self.retries_submitted:
                lines.append("  nothing was changed; the next pass catches up")
        if not self.error or self.moved:
            moved = ", ".join(f"{n} {s}" for s, n in sorted(self.moved.items())) or "none"
            lines += [f"{head}: {self.active} active attempt(s) checked in {self.seconds:.1f}s "
                      f"(sacct {self.sacct_s:.1f}s, squeue {self.squeue_s:.1f}s)",
                      f"  moved: {moved}"]
        extra = [(self.requeued, "requeued by Slurm (new attempts)"),
                 (self.adopted, "orphaned submission(s) adopted"),
                 (self.intents_failed, "dead intent(s) closed"),
                 (self.lost, "attempt(s) LOST"),
                 (self.retries_scheduled, "run(s) scheduled for retry"),
                 (self.retries_submitted, "run(s) resubmitted")]
        for n, text in extra:
            if n:
                lines.append(f"  {n} {text}")
        if self.retry_jobs:
            lines.append(f"  retry jobs: {', '.join(self.retry_jobs)}")
        if self.finished:
            lines.append(f"  finished: {', '.join(self.finished)}")
        for text in self.flagged:
            lines.append(f"  flagged: {text}")
        for text in self.warnings:
            lines.append(f"  warning: {text}")
        if verbose or self.dry_run:
            lines += [f"  - {a}" for a in self.actions]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# Lock


def lock_path(ledger: Ledger) -> Path:
    return Path(f"{ledger.path}{LOCK_SUFFIX}")


@contextlib.contextmanager
def pass_lock(ledger: Ledger, wait_s: float | None = None) -> Iterator[bool]:
    """flock on `<ledger>.reconcile.lock`; yields False when another process holds it.

    With `wait_s`, waits that long for it first (retry and cancel wait; cron passes do not).
    The lock goes with the process: a killed pass never leaves it held.
    """
    path = lock_path(ledger)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + (wait_s or 0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                got = True
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                if wait_s is None or time.monotonic() >= deadline:
                    got = False
                    break
                time.sleep(0.2)
        if got:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
        yield got
    finally:
        os.close(fd)


def _require_lock(got: bool, ledger: Ledger, what: str) -> None:
    if not got:
        raise SlurmexpError(
            f"{what}: a reconcile pass on {ledger.path} is still running",
            [Problem(str(lock_path(ledger)), "", "the reconcile lock is held",
                     fix="try again in a minute")])


# ------------------------------------------------------------------------------------------
# Reading the ledger


_ACTIVE_SQL = f"""
SELECT a.*, r.run_dir, r.n_attempts AS run_n_attempts, r.state AS run_state,
       r.chunk AS run_chunk, s.created AS created, s.chunk AS sub_chunk,
       s.script_path AS script_path, e.exp_dir AS exp_dir
FROM attempts a
JOIN experiments e ON e.exp_id = a.exp_id
JOIN runs r ON r.exp_id = a.exp_id AND r.run_id = a.run_id
LEFT JOIN submissions s ON s.sub_id = a.sub_id
WHERE e.backend = 'slurm'
  AND a.state NOT IN ({", ".join("'" + s + "'" for s in sorted(TERMINAL_STATES))})
ORDER BY a.attempt_id
"""


def _active_attempts(ledger: Ledger, cluster: str | None) -> list[dict]:
    out = []
    for a in ledger.db.query(_ACTIVE_SQL):
        if cluster and a["cluster"] and a["cluster"] != cluster:
            continue
        # A record Slurm replaced by a requeue is final once its successor exists.
        if a["state"] in ("REQUEUED",) and a["attempt_no"] < a["run_n_attempts"]:
            continue
        chunk = a["sub_chunk"] if a["sub_chunk"] is not None else a["run_chunk"]
        a["job_name"] = chunk_job_name(a["exp_id"], chunk)
        out.append(a)
    return out


def _slurm_experiments(ledger: Ledger) -> dict[str, dict]:
    out = {}
    for e in ledger.db.query("SELECT * FROM experiments WHERE backend = 'slurm'"):
        try:
            settings = json.loads(e.get("settings_json") or "{}")
        except ValueError:
            settings = {}
        e["settings"] = settings
        e["policy"] = RetryPolicy.from_settings(settings)
        out[e["exp_id"]] = e
    return out


def _intents(ledger: Ledger, exps: dict[str, dict], cluster: str | None) -> list[dict]:
    out = []
    for s in ledger.db.query("SELECT * FROM submissions WHERE state = 'INTENT' ORDER BY sub_id"):
        if s["exp_id"] not in exps:
            continue
        if cluster and s["cluster"] and s["cluster"] != cluster:
            continue
        out.append(s)
    return out


def _chunk_script(ledger: Ledger, exp: dict, chunk: int | None) -> tuple[Path | None, str | None]:
    """(script path, the chunk's first array spec) for a chunk of an experiment."""
    row = ledger.db.execute(
        "SELECT script_path, array_spec FROM submissions WHERE exp_id = ? AND chunk IS ? "
        "AND script_path IS NOT NULL ORDER BY sub_id LIMIT 1", [exp["exp_id"], chunk]).fetchone()
    if row:
        return Path(row[0]), row[1]
    if exp.get("exp_dir") and chunk is not None:
        path = Path(exp["exp_dir"]) / "scripts" / f"{chunk_file_stem(chunk)}.sbatch"
        return path, None
    return None, None


# ------------------------------------------------------------------------------------------
# The pass


@dataclass
class _Ctx:
    ledger: Ledger
    backend: Any
    summary: PassSummary
    now: datetime
    grace_s: float
    dry_run: bool
    exps: dict[str, dict] = field(default_factory=dict)
    queue_ok: bool = True
    _scripts: dict[str, dict] = field(default_factory=dict)

    def script_base(self, path: str | os.PathLike | None) -> dict:
        key = os.fspath(path) if path else ""
        if key not in self._scripts:
            self._scripts[key] = script_resources(path)
        return self._scripts[key]


def reconcile_pass(ledger: Ledger, backend: Any = None, *, dry_run: bool = False,
                   now: datetime | None = None, grace_s: float = 300) -> PassSummary:
    """One reconcile pass over every Slurm experiment of the ledger (see the module doc).

    Never raises for Slurm being unavailable: the summary says so (`error`, `exit_code` 3) and
    the heartbeat records a failed pass. `dry_run` asks Slurm but writes and submits nothing.
    """
    started = time.monotonic()
    # A naive `now` is local time, like Slurm's own timestamps.
    now = now.astimezone(timezone.utc) if now else datetime.now(timezone.utc)
    summary = PassSummary(started=_utc_iso(now), dry_run=dry_run)
    with pass_lock(ledger) as got:
        if not got:
            summary.skipped = True
            return summary
        ctx = _Ctx(ledger, backend, summary, now, grace_s, dry_run)
        try:
            _run_pass(ctx)
        except SlurmexpError as exc:
            summary.error = exc.message
            summary.exit_code = exc.exit_code
        except BaseException as exc:
            summary.error = f"{type(exc).__name__}: {exc}"
            summary.exit_code = EXIT_ERROR
            summary.seconds = time.monotonic() - started
            if not dry_run:
                with contextlib.suppress(Exception):
                    ledger.record_heartbeat(HEARTBEAT_KIND, False, summary.to_dict(HEARTBEAT_LIST_LIMIT))
            raise
        summary.seconds = time.monotonic() - started
        if not dry_run:
            ledger.record_heartbeat(HEARTBEAT_KIND, summary.ok, summary.to_dict(HEARTBEAT_LIST_LIMIT))
    return summary


def _backend(ctx: _Ctx):
    if ctx.backend is None:
        from .backends.slurm import SlurmBackend

        ctx.backend = SlurmBackend()
    return ctx.backend


def _run_pass(ctx: _Ctx) -> None:
    ledger, summary = ctx.ledger, ctx.summary
    cluster = getattr(ctx.backend, "cluster", None) if ctx.backend is not None else None
    ctx.exps = _slurm_experiments(ledger)
    active = _active_attempts(ledger, cluster)
    intents = _intents(ledger, ctx.exps, cluster)
    pending = _resubmittable_runs(ctx)
    summary.active = len(active)
    if not active and not intents and not pending:
        _update_experiments(ctx, set(ctx.exps))
        return
    backend = _backend(ctx)

    # --- ask Slurm everything first; nothing is written before all answers are in --------
    rows: list[SacctRow] = []
    name_rows: list[SacctRow] = []
    queue: list[Any] = []
    if active:
        since = _since([parse_ts(a["submit_time"]) or parse_ts(a["created"]) for a in active],
                       ctx.now)
        job_ids = sorted({str(a["job_id"]) for a in active if a["job_id"]})
        array_ids = sorted({str(a["job_id"]) for a in active if a["task_index"] is not None})
        t = time.monotonic()
        rows = backend.sacct_rows(job_ids, since=since, array_ids=array_ids)
        summary.sacct_s += time.monotonic() - t
    if intents:
        since = _since([parse_ts(s["created"]) for s in intents], ctx.now)
        names = sorted({n for s in intents if (n := chunk_job_name(s["exp_id"], s["chunk"]))})
        if names:
            t = time.monotonic()
            name_rows = backend.sacct_rows([], since=since, names=names)
            summary.sacct_s += time.monotonic() - t
    if active or intents:
        t = time.monotonic()
        try:
            queue = backend.squeue_rows()
        except SlurmUnavailable as exc:
            # sacct answered, the controller did not: record what accounting says, but decide
            # nothing that needs the queue (LOST, dead intents) and submit nothing.
            ctx.queue_ok = False
            summary.error = f"squeue: {exc.message}"
            summary.exit_code = exc.exit_code
        summary.squeue_s += time.monotonic() - t
    queue_records = [queue_record(q) for q in queue]

    # --- orphans: INTENT submissions -----------------------------------------------------
    if intents:
        changed = _resolve_intents(ctx, intents, name_rows, queue_records)
        if changed and not ctx.dry_run:
            active = _active_attempts(ledger, cluster)
            summary.active = len(active)
    # --- match and transition ------------------------------------------------------------
    match = match_rows(active, [*rows, *name_rows], queue_records)
    queued_keys = {row_key(r) for r in expand_rows(queue_records)}
    touched: set[str] = set()
    for a in active:
        if _transition(ctx, a, match, queued_keys):
            touched.add(a["exp_id"])
    # --- retries -------------------------------------------------------------------------
    if ctx.queue_ok:
        touched |= _submit_due(ctx)
    _update_experiments(ctx, touched | {a["exp_id"] for a in active} | {
        s["exp_id"] for s in intents})


def _since(times: Iterable[datetime | None], now: datetime) -> str:
    known = [t for t in times if t is not None]
    oldest = min(known) if known else now - timedelta(days=7)
    return sacct_time(oldest - timedelta(seconds=SINCE_MARGIN_S))


# --- intents ------------------------------------------------------------------------------


def _recorded_jobs(ledger: Ledger, exp_id: str) -> list[tuple[str, datetime | None, datetime | None]]:
    """(job id, submit time, intent time) of the experiment's recorded submissions."""
    out = []
    for s in ledger.db.query(
            "SELECT job_id, submit_time, created FROM submissions WHERE exp_id = ? "
            "AND state IN ('SUBMITTED', 'ADOPTED') AND job_id IS NOT NULL", [exp_id]):
        out.append((str(s["job_id"]), parse_ts(s["submit_time"]), parse_ts(s["created"])))
    return out


def _same_job(job_id: str, submit: datetime, rec_job: str, rec_submit: datetime | None,
              rec_created: datetime | None) -> bool:
    """Whether a recorded submission (job id, submit, intent time) is this job."""
    if rec_job != job_id:
        return False
    if rec_submit is not None:
        return abs((rec_submit - submit).total_seconds()) < 1
    # No submit time recorded yet: the same job if its intent came shortly before the job.
    return rec_created is None or (submit - timedelta(hours=1) <= rec_created
                                   <= submit + timedelta(seconds=SUBMIT_SKEW_S))


def _jobs_by_name(records: Iterable[SacctRow]) -> dict[str, dict[str, dict]]:
    """name -> job id -> {"submit": earliest submit, "tasks": set, "comment": ...}."""
    out: dict[str, dict[str, dict]] = defaultdict(dict)
    for r in records:
        if not r.job_name or _incomplete(r):
            continue
        job = r.array_job_id or r.job_id
        info = out[r.job_name].setdefault(job, {"submit": None, "tasks": set(), "comment": None})
        ts = parse_ts(r.submit)
        if ts is not None and (info["submit"] is None or ts < info["submit"]):
            info["submit"] = ts
        if r.array_task is not None:
            info["tasks"].add(r.array_task)
        for t in r.pending_tasks or ():
            info["tasks"].add(t)
        info["comment"] = info["comment"] or r.comment
    return out


def _resolve_intents(ctx: _Ctx, intents: list[dict], name_rows: list[SacctRow],
                     queue: list[SacctRow]) -> bool:
    """Adopt each INTENT's job, or close an intent that provably made none. True if changed."""
    ledger, summary = ctx.ledger, ctx.summary
    jobs = _jobs_by_name([*name_rows, *queue])
    taken: set[tuple[str, str]] = set()
    changed = False
    for s in intents:
        name = chunk_job_name(s["exp_id"], s["chunk"])
        created = parse_ts(s["created"])
        lo = created - timedelta(seconds=SUBMIT_SKEW_S) if created else None
        wanted = parse_array_spec(s["array_spec"] or "")
        recorded = _recorded_jobs(ledger, s["exp_id"])
        candidates = []
        for job_id, info in jobs.get(name or "", {}).items():
            submit = info["submit"]
            if (name, job_id) in taken or submit is None or (lo is not None and submit < lo):
                continue
            if info["comment"] and info["comment"] != f"slurmexp:{s['exp_id']}":
                continue
            if wanted is not None and info["tasks"] and not info["tasks"] <= wanted:
                continue
            if any(_same_job(job_id, submit, *rec) for rec in recorded):
                continue    # a job some other submission already recorded
            candidates.append((submit, job_id))
        if candidates:
            submit, job_id = min(candidates)
            taken.add((name, job_id))
            summary.adopted += 1
            summary.act(f"adopt job {job_id} ({name}) for submission {s['sub_id']}")
            if not ctx.dry_run:
                ledger.record_submitted(s["sub_id"], job_id, sacct_time(submit), adopted=True)
                changed = True
            continue
        age = (ctx.now - created).total_seconds() if created else float("inf")
        if not ctx.queue_ok or age < ctx.grace_s:
            summary.act(f"submission {s['sub_id']} ({name}): no job yet; waiting")
            continue
        message = (f"no job named {name} was found in sacct or squeue {int(age)}s after the "
                   f"intent: sbatch never created it (the submitting process died first)")
        summary.intents_failed += 1
        summary.act(f"close dead intent {s['sub_id']}: {message}")
        if not ctx.dry_run:
            ledger.record_submit_failed(s["sub_id"], message)
            changed = True
    return changed


# --- transitions --------------------------------------------------------------------------


def _restart_count(ledger: Ledger, a: dict) -> int:
    row = ledger.db.execute(
        "SELECT COUNT(*) FROM attempts WHERE sub_id IS ? AND job_key = ? AND attempt_id < ?",
        [a["sub_id"], a["job_key"], a["attempt_id"]]).fetchone()
    return int(row[0]) if row else 0


def _tail_for(ctx: _Ctx, a: dict) -> str:
    restart = _restart_count(ctx.ledger, a)
    paths: list[Path | None] = []
    d = attempt_dir(a.get("run_dir"), a.get("job_key"), restart)
    if d is not None:
        paths.append(d / "stderr")
    if a.get("exp_dir") and a.get("job_key"):
        paths.append(Path(a["exp_dir"]) / "logs" / f"{a['job_key']}.err")
    return stderr_tail(paths)


def _history(ledger: Ledger, exp_id: str, run_id: str) -> list[str]:
    return [r[0] for r in ledger.db.execute(
        "SELECT state FROM attempts WHERE exp_id = ? AND run_id = ? ORDER BY attempt_no",
        [exp_id, run_id])]


def _transition(ctx: _Ctx, a: dict, match: Match, queued_keys: set[str]) -> bool:
    """Apply what Slurm says about one attempt (and its requeues) in one transaction."""
    rec = match.rows.get(a["attempt_id"])
    later = match.requeues.get(a["attempt_id"], [])
    if rec is None:
        return _unmatched(ctx, a, later, queued_keys)
    return _apply(ctx, a, rec, later, match.submit_times.get(a["attempt_id"]), queued_keys)


def _record_fields(ctx: _Ctx, a: dict, rec: SacctRow, superseded: bool,
                   in_queue: bool) -> tuple[dict, str | None, str | None]:
    """(fields, reason, failure class) for an attempt from its record."""
    fields = _attempt_fields(rec)
    if not rec.known_state:
        state = rec.state
        reason = f"unknown Slurm state {rec.state_raw or rec.state}; kept and watched"
        return {**fields, "state": state, "failure_class": "unknown"}, reason, "unknown"
    state = ledger_state(rec.state)
    fclass = classify(rec.state, rec.exit_code)
    tail = _tail_for(ctx, a) if rec.state in ("FAILED", "OUT_OF_MEMORY") else ""
    reason = failure_reason(rec, tail)
    if state in ("PENDING", "RUNNING", "SUSPENDED") and not in_queue and ctx.queue_ok \
            and not superseded and not _incomplete(rec):
        # sacct says it is going, the controller does not know it: it either just ended
        # (accounting lags a moment) or it is a runaway record after a controller state loss.
        since = None
        m = _RUNAWAY_RE.search(a.get("reason") or "")
        if m:
            since = parse_ts(m.group(1))
        if since is None:
            since = ctx.now
        if (ctx.now - since).total_seconds() >= ctx.grace_s:
            return ({**fields, "state": "LOST", "failure_class": "infrastructure"},
                    f"LOST: sacct says {rec.state} but the controller has not listed the job "
                    f"since {_utc_iso(since)} (a runaway record after a controller state loss?)",
                    "infrastructure")
        reason = (f"sacct says {rec.state}, but the controller does not list the job "
                  f"(since {_utc_iso(since)})")
    return {**fields, "state": state, "failure_class": fclass}, reason, fclass


def _apply(ctx: _Ctx, a: dict, rec: SacctRow, later: list[SacctRow], submit_time: str | None,
           queued_keys: set[str]) -> bool:
    ledger, summary = ctx.ledger, ctx.summary
    key = a["job_key"]
    if _incomplete(rec) and rec.state in TERMINAL_STATES and not later:
        end = parse_ts(rec.end) or ctx.now
        if (ctx.now - end).total_seconds() < ctx.grace_s:
            # Final, but slurmdbd has only its placeholder record yet (no partition, QOS,
            # ReqMem): a later pass records the complete one.
            summary.act(f"{a['exp_id']} {a['run_id']} job {key}: {rec.state}; waiting for "
                        f"its complete accounting record")
            return False
    fields, reason, fclass = _record_fields(ctx, a, rec, bool(later),
                                            in_queue=key in queued_keys or bool(later))
    if submit_time and not a.get("submit_time"):
        fields["submit_time"] = submit_time
    state = fields["state"]
    if state in _PROGRESS and a["state"] in _PROGRESS and _PROGRESS[state] < _PROGRESS[a["state"]]:
        # The same record cannot go back (a requeue is a new record): accounting lags.
        state = fields["state"] = a["state"]
        reason = a.get("reason")
    if not rec.known_state:
        summary.flagged.append(f"{a['exp_id']} {a['run_id']} job {key}: {reason}")
    old_cols = {k: a.get(k) for k in fields}
    changes = _differs(old_cols, fields) or (reason or None) != (a.get("reason") or None)
    if not changes and not later:
        return False
    if state != a["state"]:
        summary.moved_to(state)
        summary.act(f"{a['exp_id']} {a['run_id']} job {key}: {a['state']} -> {state}"
                    + (f" ({reason})" if reason else ""))
    if state == "LOST":
        summary.lost += 1
    for r in later:
        summary.requeued += 1
        summary.act(f"{a['exp_id']} {a['run_id']} job {key}: requeued by Slurm "
                    f"(submit {r.submit}) -> new attempt")
    if ctx.dry_run:
        if state in TERMINAL_STATES and not later:
            _dry_retry(ctx, a, state, fclass, rec)
        return True
    with ledger.transaction():
        cur = ledger.db.execute("SELECT state FROM attempts WHERE attempt_id = ?",
                                [a["attempt_id"]]).fetchone()
        if cur is None or cur[0] != a["state"]:
            return False        # changed under us (cancel, another writer): next pass decides
        try:
            with ledger.transaction():
                ledger.update_attempt(a["attempt_id"], reason=reason, **fields)
        except sqlite3.IntegrityError:
            # Another attempt already holds (cluster, job key, submit time): keep ours unset.
            fields.pop("submit_time", None)
            ledger.update_attempt(a["attempt_id"], reason=reason, **fields)
        prev = a
        for r in later:
            prev = _insert_requeue(ctx, prev, r, queued_keys)
        if state in TERMINAL_STATES and not later:
            _maybe_schedule_retry(ctx, a, state, fclass, reason, rec)
    return True


def _unmatched(ctx: _Ctx, a: dict, later: list[SacctRow], queued_keys: set[str]) -> bool:
    """No record of this attempt: wait, or after the grace period call it LOST."""
    summary = ctx.summary
    if later:
        # Only later records of the same job exist (the first aged out of sacct's window).
        if ctx.dry_run:
            summary.requeued += len(later)
            return True
        with ctx.ledger.transaction():
            prev = a
            for r in later:
                summary.requeued += 1
                prev = _insert_requeue(ctx, prev, r, queued_keys)
            ctx.ledger.update_attempt(a["attempt_id"], reason="requeued by Slurm",
                                      state="REQUEUED")
        return True
    if not ctx.queue_ok:
        return False
    ref = parse_ts(a.get("submit_time")) or parse_ts(a.get("created"))
    age = (ctx.now - ref).total_seconds() if ref else float("inf")
    if age < ctx.grace_s:
        return False
    d = attempt_dir(a.get("run_dir"), a.get("job_key"), _restart_count(ctx.ledger, a))
    evidence = d is not None and (d / "started").exists()
    if evidence and age < ctx.grace_s * EVIDENCE_FACTOR:
        note = (f"not in sacct or squeue, but the task started (see {d}); waiting for "
                f"accounting to catch up")
        if a.get("reason") != note and not ctx.dry_run:
            ctx.ledger.update_attempt(a["attempt_id"], reason=note)
        return False
    reason = (f"LOST: job {a['job_key']} is in neither sacct nor squeue {int(age)}s after "
              f"its submission" + (f" (it did start: {d})" if evidence else ""))
    summary.lost += 1
    summary.moved_to("LOST")
    summary.act(f"{a['exp_id']} {a['run_id']} job {a['job_key']}: {a['state']} -> LOST")
    if ctx.dry_run:
        _dry_retry(ctx, a, "LOST", "infrastructure", None)
        return True
    with ctx.ledger.transaction():
        cur = ctx.ledger.db.execute("SELECT state FROM attempts WHERE attempt_id = ?",
                                    [a["attempt_id"]]).fetchone()
        if cur is None or cur[0] != a["state"]:
            return False
        ctx.ledger.update_attempt(a["attempt_id"], reason=reason, state="LOST",
                                  failure_class="infrastructure")
        _maybe_schedule_retry(ctx, a, "LOST", "infrastructure", reason, None)
    return True


def _insert_requeue(ctx: _Ctx, prev: dict, rec: SacctRow, queued_keys: set[str]) -> dict:
    """Slurm requeued `prev`'s job: a new attempt of the same run (same job key, later submit)."""
    ledger = ctx.ledger
    now = _utc_iso()
    with ledger.transaction():
        existing = ledger.db.execute(
            "SELECT attempt_id FROM attempts WHERE cluster IS ? AND job_key = ? AND "
            "submit_time = ?", [prev["cluster"], prev["job_key"], rec.submit]).fetchone()
        if existing:
            new_id = existing[0]
        else:
            run = ledger.db.execute("SELECT n_attempts, state FROM runs WHERE exp_id = ? AND "
                                    "run_id = ?", [prev["exp_id"], prev["run_id"]]).fetchone()
            attempt_no = int(run[0]) + 1
            cur = ledger.db.execute(
                "INSERT INTO attempts (exp_id, run_id, attempt_no, sub_id, cluster, job_id, "
                "task_index, job_key, submit_time, state, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'SUBMITTED', ?)",
                [prev["exp_id"], prev["run_id"], attempt_no, prev["sub_id"], prev["cluster"],
                 prev["job_id"], prev["task_index"], prev["job_key"], rec.submit, now])
            new_id = cur.lastrowid
            why = f"requeued by Slurm: job {prev['job_key']} again (submit {rec.submit})"
            ledger.db.execute(
                "UPDATE runs SET n_attempts = ?, state = 'SUBMITTED', reason = ?, updated = ? "
                "WHERE exp_id = ? AND run_id = ?",
                [attempt_no, why, now, prev["exp_id"], prev["run_id"]])
            ledger.db.execute(
                "INSERT INTO events (ts, exp_id, run_id, attempt_id, kind, from_state, to_state, "
                "reason) VALUES (?, ?, ?, ?, 'requeued', ?, 'SUBMITTED', ?)",
                [now, prev["exp_id"], prev["run_id"], new_id, run[1], why])
        new = next(iter(ledger.db.query("SELECT * FROM attempts WHERE attempt_id = ?",
                                        [new_id])))
        new.update(run_dir=prev.get("run_dir"), exp_dir=prev.get("exp_dir"),
                   created=prev.get("created"), job_name=prev.get("job_name"),
                   script_path=prev.get("script_path"))
        fields, reason, fclass = _record_fields(
            ctx, new, rec, False, in_queue=row_key(rec) in queued_keys)
        fields.pop("submit_time", None)
        ledger.update_attempt(new_id, reason=reason, **fields)
        if fields["state"] in TERMINAL_STATES:
            new["state"] = "SUBMITTED"
            _maybe_schedule_retry(ctx, new, fields["state"], fclass, reason, rec)
    return new


def _maybe_schedule_retry(ctx: _Ctx, a: dict, state: str, fclass: str | None,
                          reason: str | None, rec: SacctRow | None) -> None:
    """Inside the attempt's transaction: move the run back to PLANNED when a retry is due."""
    ledger = ctx.ledger
    run = ledger.db.execute("SELECT n_attempts FROM runs WHERE exp_id = ? AND run_id = ?",
                            [a["exp_id"], a["run_id"]]).fetchone()
    if run is None or int(run[0]) != int(a["attempt_no"]):
        return          # a newer attempt (a requeue, a retry) already carries the run
    exp = ctx.exps.get(a["exp_id"]) or {}
    policy: RetryPolicy = exp.get("policy") or RetryPolicy()
    base = ctx.script_base(a.get("script_path"))
    history = _history(ledger, a["exp_id"], a["run_id"])
    end = parse_ts(rec.end) if rec is not None else None
    decision = decide_retry(policy, state, fclass, int(a["attempt_no"]), history, base, end,
                            ctx.now)
    if decision.retry:
        why = f"{decision.note} after {reason or state}"
        if decision.due and decision.due > ctx.now:
            why += f" (not before {_utc_iso(decision.due)})"
        ledger.set_run_state(a["exp_id"], [a["run_id"]], "PLANNED", why)
        ctx.summary.retries_scheduled += 1
        ctx.summary.act(f"{a['exp_id']} {a['run_id']}: {why}")
    elif decision.note:
        full = f"{reason}; {decision.note}" if reason else decision.note
        ledger.update_attempt(a["attempt_id"], reason=full)


def _dry_retry(ctx: _Ctx, a: dict, state: str, fclass: str | None, rec: SacctRow | None) -> None:
    if int(a.get("run_n_attempts") or 0) != int(a["attempt_no"]):
        return
    exp = ctx.exps.get(a["exp_id"]) or {}
    policy: RetryPolicy = exp.get("policy") or RetryPolicy()
    history = _history(ctx.ledger, a["exp_id"], a["run_id"])[:-1] + [state]
    decision = decide_retry(policy, state, fclass, int(a["attempt_no"]), history,
                            ctx.script_base(a.get("script_path")),
                            parse_ts(rec.end) if rec else None, ctx.now)
    if decision.retry:
        ctx.summary.retries_scheduled += 1
        ctx.summary.act(f"{a['exp_id']} {a['run_id']}: would schedule {decision.note}")


# --- resubmission -------------------------------------------------------------------------


def _open_intent_tasks(ledger: Ledger) -> dict[tuple[str, Any], set[int] | None]:
    """(exp, chunk) -> task indices covered by INTENT submissions (None: the whole chunk)."""
    out: dict[tuple[str, Any], set[int] | None] = {}
    for s in ledger.db.query("SELECT exp_id, chunk, array_spec FROM submissions "
                             "WHERE state = 'INTENT'"):
        key = (s["exp_id"], s["chunk"])
        tasks = parse_array_spec(s["array_spec"] or "")
        if tasks is None or out.get(key, set()) is None:
            out[key] = None
        else:
            out[key] = (out.get(key) or set()) | tasks
    return out


_PLANNED_SQL = """
SELECT r.*, e.state AS exp_state, e.created AS exp_created,
       (SELECT MAX(created) FROM submissions s WHERE s.exp_id = r.exp_id) AS last_intent
FROM runs r JOIN experiments e ON e.exp_id = r.exp_id
WHERE e.backend = 'slurm' AND r.state = 'PLANNED'
  AND (r.n_attempts > 0 OR e.state = 'SUBMITTING')
  AND e.state NOT IN ('FAILED', 'CANCELLED')
ORDER BY r.exp_id, r.chunk, r.task_index
"""


def _resubmittable_runs(ctx: _Ctx, only_exp: str | None = None) -> list[dict]:
    """PLANNED runs that reconcile submits: retries, and the runs of a launch that stopped.

    A run of a launch (no attempt yet) only once the launch is over: its experiment is still
    SUBMITTING and nothing was written for it for `grace_s` (sbatch gives up after 60 s).
    """
    ledger = ctx.ledger
    covered = _open_intent_tasks(ledger)
    out = []
    for r in ledger.db.query(_PLANNED_SQL):
        if only_exp and r["exp_id"] != only_exp:
            continue
        if r["exp_id"] not in ctx.exps:
            continue
        tasks = covered.get((r["exp_id"], r["chunk"]), set())
        if tasks is None or (r["task_index"] is not None and r["task_index"] in tasks):
            continue
        if r["n_attempts"] == 0 and not only_exp:
            last = parse_ts(r["last_intent"]) or parse_ts(r["exp_created"])
            if last is not None and (ctx.now - last).total_seconds() < ctx.grace_s:
                continue
        out.append(r)
    return out


@dataclass
class _RetryItem:
    run: dict
    due: datetime
    escalation: Escalation


def _retry_items(ctx: _Ctx, runs: list[dict], ignore_backoff: bool = False) -> list[_RetryItem]:
    ledger = ctx.ledger
    items = []
    for r in runs:
        exp = ctx.exps[r["exp_id"]]
        policy: RetryPolicy = exp["policy"]
        script, _ = _chunk_script(ledger, exp, r["chunk"])
        base = ctx.script_base(script)
        due = ctx.now
        n_timeouts = n_ooms = 0
        if r["n_attempts"]:
            attempts = list(ledger.db.query(
                "SELECT * FROM attempts WHERE exp_id = ? AND run_id = ? ORDER BY attempt_no",
                [r["exp_id"], r["run_id"]]))
            newest = attempts[-1] if attempts else None
            if newest is not None and newest["state"] not in TERMINAL_STATES:
                continue        # still going (it cannot be PLANNED then; be safe)
            n_timeouts = sum(1 for x in attempts if x["state"] == "TIMEOUT")
            n_ooms = sum(1 for x in attempts if x["state"] == "OUT_OF_MEMORY")
            if newest is not None and newest["failure_class"] == "infrastructure" \
                    and not ignore_backoff:
                end = parse_ts(newest["end_time"]) or parse_ts(newest["updated"]) or ctx.now
                due = end + timedelta(seconds=policy.backoff(newest["attempt_no"]))
        items.append(_RetryItem(r, due, escalation_for(policy, base, n_timeouts, n_ooms)))
    return items


def _submit_due(ctx: _Ctx, runs: list[dict] | None = None, ignore_backoff: bool = False,
                sub_ids: list[int] | None = None) -> set[str]:
    """Submit the PLANNED runs whose retry is due: one sbatch per (chunk, resources)."""
    ledger, summary = ctx.ledger, ctx.summary
    runs = _resubmittable_runs(ctx) if runs is None else runs
    items = _retry_items(ctx, runs, ignore_backoff)
    groups: dict[tuple, list[_RetryItem]] = defaultdict(list)
    for item in items:
        if item.due > ctx.now:
            continue
        r = item.run
        groups[(r["exp_id"], r["chunk"], item.escalation.time_min,
                item.escalation.mem_mb)].append(item)
    touched: set[str] = set()
    submitted_jobs: dict[str, int] = {}
    for (exp_id, chunk, _, _), group in sorted(groups.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        exp = ctx.exps[exp_id]
        script, first_spec = _chunk_script(ledger, exp, chunk)
        tasks = [g.run["task_index"] for g in group if g.run["task_index"] is not None]
        run_ids = [g.run["run_id"] for g in group]
        throttle = _throttle(first_spec) or _throttle(ctx.script_base(script).get("array"))
        spec = compress_indices(tasks) + (f"%{throttle}" if throttle else "")
        extra = [f"--array={spec}", *group[0].escalation.args()]
        label = f"{exp_id} chunk {chunk}: sbatch {' '.join(extra)} {script}"
        if ctx.dry_run:
            summary.act(f"would submit {label} ({len(group)} run(s))")
            summary.retries_submitted += len(group)
            continue
        if script is None or not script.is_file() or not tasks:
            why = f"cannot resubmit: the chunk script {script} is missing"
            _give_up(ctx, exp_id, group, why)
            summary.warnings.append(f"{exp_id} chunk {chunk}: {why}")
            continue
        sha = hashlib.sha256(script.read_bytes()).hexdigest()
        sub_id = ledger.record_intent(exp_id, chunk, spec, len(tasks), script, sha,
                                      exp.get("cluster"))
        t = time.monotonic()
        try:
            cwd = Path(exp["exp_dir"]) if exp.get("exp_dir") and Path(exp["exp_dir"]).is_dir() \
                else None
            result = _backend(ctx).submit(script, extra_args=extra, cwd=cwd)
        except SlurmUnavailable as exc:
            summary.sbatch_s += time.monotonic() - t
            # The job may exist: the intent stays for the next pass to adopt (or close).
            summary.error = f"sbatch: {exc.message}"
            summary.exit_code = exc.exit_code
            summary.act(f"submit {label}: sbatch did not answer; intent {sub_id} left to adopt")
            break
        except SlurmexpError as exc:
            summary.sbatch_s += time.monotonic() - t
            ledger.record_submit_failed(sub_id, exc.message)
            _give_up(ctx, exp_id, group, f"retry refused by sbatch: {exc.message}")
            summary.warnings.append(f"{label}: refused: {exc.message}")
            continue
        summary.sbatch_s += time.monotonic() - t
        ledger.record_submitted(sub_id, result.job_id)
        if sub_ids is not None:
            sub_ids.append(sub_id)
        submitted_jobs[result.job_id] = sub_id
        summary.retries_submitted += len(group)
        summary.retry_jobs.append(result.job_id)
        summary.act(f"submitted {label} -> job {result.job_id} ({len(group)} run(s): "
                    f"{', '.join(run_ids[:5])}{' ...' if len(run_ids) > 5 else ''})")
        touched.add(exp_id)
    if submitted_jobs:
        _stamp_submit_times(ctx, submitted_jobs)
    return touched


def _give_up(ctx: _Ctx, exp_id: str, group: list[_RetryItem], why: str) -> None:
    """A retry that cannot be submitted: the run takes its last attempt's state back."""
    ledger = ctx.ledger
    with ledger.transaction():
        for item in group:
            r = item.run
            last = ledger.db.execute(
                "SELECT state FROM attempts WHERE exp_id = ? AND run_id = ? "
                "ORDER BY attempt_no DESC LIMIT 1", [exp_id, r["run_id"]]).fetchone()
            if last is None:
                ledger.set_run_state(exp_id, [r["run_id"]], "PLANNED", why)
            else:
                ledger.set_run_state(exp_id, [r["run_id"]], last[0], why)


def _stamp_submit_times(ctx: _Ctx, jobs: dict[str, int]) -> None:
    """One squeue call for the new jobs' submit times (the attempts' key)."""
    try:
        times = _backend(ctx).submit_times(list(jobs))
    except SlurmexpError:
        return          # the next pass learns them from sacct
    ledger = ctx.ledger
    for job_id, sub_id in jobs.items():
        submit = times.get(job_id)
        if not submit:
            continue
        try:
            with ledger.transaction():
                for a in ledger.attempts(sub_id=sub_id):
                    if not a["submit_time"]:
                        ledger.update_attempt(a["attempt_id"], submit_time=submit)
                ledger.db.execute("UPDATE submissions SET submit_time = ? WHERE sub_id = ? AND "
                                  "submit_time IS NULL", [submit, sub_id])
        except sqlite3.IntegrityError:
            pass


# --- experiments --------------------------------------------------------------------------

_DONE = ("FINISHED", "FINISHED_WITH_FAILURES")


def _update_experiments(ctx: _Ctx, exp_ids: set[str]) -> None:
    """SUBMITTING -> SUBMITTED once nothing waits for sbatch; FINISHED[_WITH_FAILURES] at the end."""
    if ctx.dry_run:
        return
    ledger = ctx.ledger
    for exp_id in sorted(exp_ids):
        exp = ctx.exps.get(exp_id)
        if exp is None:
            continue
        current = ledger.db.execute("SELECT state FROM experiments WHERE exp_id = ?",
                                    [exp_id]).fetchone()[0]
        if current in ("CANCELLED", "FAILED"):
            continue
        counts = ledger.counts_by_state(exp_id)
        intents = ledger.db.execute("SELECT COUNT(*) FROM submissions WHERE exp_id = ? AND "
                                    "state = 'INTENT'", [exp_id]).fetchone()[0]
        active = sum(n for s, n in counts.items() if s not in TERMINAL_STATES)
        if not active and not intents and counts:
            state = "FINISHED" if set(counts) == {"COMPLETED"} else "FINISHED_WITH_FAILURES"
            failed = sum(n for s, n in counts.items() if s != "COMPLETED")
            if current != state:
                ledger.set_experiment_state(exp_id, state,
                                            f"{failed} run(s) did not complete" if failed else None)
                ctx.summary.finished.append(f"{exp_id} ({state})")
        elif current in _DONE or (current == "SUBMITTING" and not intents
                                  and not counts.get("PLANNED")):
            ledger.set_experiment_state(exp_id, "SUBMITTED", "runs in the queue again"
                                        if current in _DONE else None)


# ------------------------------------------------------------------------------------------
# Manual retry and cancel


RETRY_WHICH = {
    "failed": frozenset(TERMINAL_STATES - {"COMPLETED", "LOST"}),
    "lost": frozenset({"LOST"}),
    "all": frozenset(TERMINAL_STATES - {"COMPLETED"}),
}


def retry_experiment(ledger: Ledger, backend: Any, exp_id: str, which: str = "failed", *,
                     lock_wait_s: float = 120) -> list[int]:
    """Resubmit an experiment's finished-but-unsuccessful runs now (one sbatch per chunk).

    which: "failed" (every final state but COMPLETED and LOST), "lost", or "all". Ignores the
    backoff and the max_attempts limit (a person asked); escalation still applies. Returns the
    new submissions' ids. Raises SlurmUnavailable when sbatch does not answer: the intent is
    left for the next reconcile pass to adopt.
    """
    if which not in RETRY_WHICH:
        raise SlurmexpError(f"retry: unknown selection {which!r}",
                            [Problem("", "which", f"{which!r}", "use failed, lost or all")])
    exp = ledger.get_experiment(exp_id, required=True)
    if exp["backend"] != "slurm":
        raise SlurmexpError(
            f"retry: {exp_id} ran with the {exp['backend']} backend",
            [Problem("", exp_id, "only Slurm experiments are retried by slurmexp",
                     fix="launch the sweep again with --new to run it locally once more")])
    now = datetime.now(timezone.utc)
    summary = PassSummary(started=_utc_iso(now))
    with pass_lock(ledger, wait_s=lock_wait_s) as got:
        _require_lock(got, ledger, "retry")
        ctx = _Ctx(ledger, backend, summary, now, 0, False)
        ctx.exps = _slurm_experiments(ledger)
        runs = ledger.runs(exp_id, state=RETRY_WHICH[which])
        if not runs:
            return []
        if exp["state"] in ("CANCELLED", "FAILED", *_DONE):
            ledger.set_experiment_state(exp_id, "SUBMITTED", f"manual retry ({which})")
        ledger.set_run_state(exp_id, [r["run_id"] for r in runs], "PLANNED",
                             f"manual retry ({which})")
        wanted = {r["run_id"] for r in runs}
        planned = [r for r in ledger.runs(exp_id, state="PLANNED") if r["run_id"] in wanted]
        sub_ids: list[int] = []
        _submit_due(ctx, planned, ignore_backoff=True, sub_ids=sub_ids)
        if sub_ids:
            ledger.set_experiment_state(exp_id, "SUBMITTED", f"manual retry of {len(runs)} run(s)")
        if summary.error:
            raise SlurmUnavailable(f"retry of {exp_id}: {summary.error}; the submission intent "
                                   f"was recorded, and `slurmexp reconcile` adopts or replaces it")
        if summary.warnings and not sub_ids:
            raise SlurmexpError(f"retry of {exp_id} failed", [
                Problem("", exp_id, w) for w in summary.warnings])
        return sub_ids


def cancel_experiment(ledger: Ledger, backend: Any, exp_id: str,
                      reason: str = "cancelled by user", *, lock_wait_s: float = 120) -> int:
    """Cancel every queued or running job of an experiment with one scancel, and mark its
    unfinished runs and attempts CANCELLED with `reason`. Returns the number of runs cancelled.

    Jobs are found in the ledger and by the experiment's tag in the queue (a launch that died
    before recording its job). For a local-backend experiment only the ledger is marked.
    Raises SlurmUnavailable (nothing marked) when scancel cannot reach the controller.
    """
    exp = ledger.get_experiment(exp_id, required=True)
    with pass_lock(ledger, wait_s=lock_wait_s) as got:
        _require_lock(got, ledger, "cancel")
        active = ledger.attempts(exp_id, active_only=True)
        if exp["backend"] == "slurm":
            if backend is None:
                from .backends.slurm import SlurmBackend

                backend = SlurmBackend()
            ids = {str(a["job_id"]) for a in active if a["job_id"]}
            with contextlib.suppress(SlurmexpError):
                for q in backend.squeue_rows(name_prefix=f"sx.{exp_id}."):
                    ids.add(str(q.array_job_id or q.job_id).split("_")[0])
            if ids:
                backend.cancel(sorted(ids, key=lambda j: (len(j), j)))
        moved: set[str] = set()
        with ledger.transaction():
            for s in ledger.submissions(exp_id, state="INTENT"):
                ledger.record_submit_failed(s["sub_id"], f"{reason} before its job was recorded")
            for a in active:
                ledger.update_attempt(a["attempt_id"], reason=reason, state="CANCELLED",
                                      failure_class="user")
                moved.add(a["run_id"])
            waiting = [r["run_id"] for r in ledger.runs(exp_id)
                       if r["state"] not in TERMINAL_STATES]
            if waiting:
                ledger.set_run_state(exp_id, waiting, "CANCELLED", reason)
                moved.update(waiting)
            ledger.set_experiment_state(exp_id, "CANCELLED", reason)
        return len(moved)


# ------------------------------------------------------------------------------------------
# Cron and health


def _schedule(every_minutes: int) -> str:
    n = int(every_minutes)
    if 1 <= n <= 59:
        return "* * * * *" if n == 1 else f"*/{n} * * * *"
    if n % 60 == 0 and 60 <= n <= 24 * 60:
        hours = n // 60
        return "0 * * * *" if hours == 1 else "0 0 * * *" if hours == 24 else f"0 */{hours} * * *"
    raise SlurmexpError(f"cron: cannot run every {every_minutes} minutes",
                        [Problem("", "--every", f"{every_minutes}",
                                 fix="use 1-59 minutes, or a whole number of hours (60, 120 ...)")])


def _cron_escape(text: str) -> str:
    # cron turns an unescaped % into a newline.
    return text.replace("%", "\\%")


def cron_line(every_minutes: int, ledger_path: str | os.PathLike,
              slurmexp_executable: str | os.PathLike, *, log_path: str | os.PathLike | None = None,
              path_env: str | None = None) -> str:
    """A crontab line that runs `slurmexp reconcile --quiet` every N minutes.

    It carries the PATH of this shell (cron's own PATH rarely has Slurm's commands), the ledger
    path, and appends its output to `<ledger dir>/reconcile.log`. No flock wrapper: the pass
    takes its own lock, and a pass that finds it held exits 0.
    """
    ledger_path = Path(ledger_path).expanduser().absolute()
    exe = Path(slurmexp_executable).expanduser()
    exe = exe if exe.is_absolute() else exe.absolute()
    log = Path(log_path).expanduser().absolute() if log_path else ledger_path.parent / "reconcile.log"
    home = os.environ.get("SLURMEXP_HOME") or str(ledger_path.parent)
    env = [f"PATH={shlex.quote(path_env or os.environ.get('PATH') or '/usr/bin:/bin')}",
           f"SLURMEXP_HOME={shlex.quote(home)}"]
    if os.environ.get("SLURM_CONF"):
        env.append(f"SLURM_CONF={shlex.quote(os.environ['SLURM_CONF'])}")
    command = (f"{' '.join(env)} {shlex.quote(str(exe))} --ledger {shlex.quote(str(ledger_path))} "
               f"reconcile --quiet >> {shlex.quote(str(log))} 2>&1")
    return f"{_schedule(every_minutes)} {_cron_escape(command)} {CRON_MARKER}"


def _is_ours(line: str) -> bool:
    if CRON_MARKER in line or "# slurmexp-reconcile" in line:
        return True
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#") and "slurmexp" in stripped \
        and " reconcile" in stripped


def install_cron(line: str, *, crontab: str = "crontab") -> str:
    """Put `line` into the user's crontab, replacing an older slurmexp reconcile line.

    Returns the new crontab text. A user without a crontab yet is fine.
    """
    try:
        proc = subprocess.run([crontab, "-l"], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise SlurmexpError("cron: the crontab command is not installed here", [Problem(
            "", "crontab", "crontab not found on PATH",
            fix=f"add this line with your site's scheduler instead:\n      {line}")]) from None
    if proc.returncode == 0:
        current = proc.stdout
    elif "no crontab" in (proc.stderr or "").lower():
        current = ""
    else:
        raise SlurmexpError(f"cron: `crontab -l` failed: {(proc.stderr or '').strip()}")
    kept = [ln for ln in current.splitlines() if not _is_ours(ln)]
    while kept and not kept[-1].strip():
        kept.pop()
    text = "\n".join([*kept, line]) + "\n"
    proc = subprocess.run([crontab, "-"], input=text, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise SlurmexpError(f"cron: `crontab -` refused the new table: "
                            f"{(proc.stderr or '').strip()}")
    return text


def health(ledger: Ledger, max_age_minutes: float = 30, *,
           now: datetime | None = None) -> tuple[bool, str]:
    """(ok, message): not ok when the last pass failed or the last good one is too old."""
    now = now or datetime.now(timezone.utc)
    last = ledger.last_heartbeat(HEARTBEAT_KIND)
    if last is None:
        return False, ("no reconcile pass has run on this ledger yet; install the cron job "
                       "(`slurmexp cron --install`) or run `slurmexp reconcile`")
    good = next(iter(ledger.db.query(
        "SELECT * FROM heartbeats WHERE kind = ? AND ok = 1 ORDER BY id DESC LIMIT 1",
        [HEARTBEAT_KIND])), None)

    def age_text(ts: str) -> str:
        t = parse_ts(ts)
        if t is None:
            return "at an unknown time"
        minutes = (now - t).total_seconds() / 60
        return f"{minutes:.0f} min ago ({ts})"

    if not last["ok"]:
        try:
            error = json.loads(last["summary_json"] or "{}").get("error") or "unknown error"
        except ValueError:
            error = "unknown error"
        error = " | ".join(line.strip() for line in error.splitlines() if line.strip())
        error = error if len(error) <= 300 else error[:297] + "..."
        since = f"; last good pass {age_text(good['ts'])}" if good else "; no pass has succeeded"
        return False, f"last reconcile pass {age_text(last['ts'])} failed: {error}{since}"
    t = parse_ts(good["ts"]) if good else None
    if t is None or (now - t).total_seconds() > max_age_minutes * 60:
        return False, (f"last successful reconcile pass was {age_text(good['ts'])}, older than "
                       f"{max_age_minutes:g} min; is the cron job installed (`crontab -l`)?")
    try:
        summary = json.loads(good["summary_json"] or "{}")
    except ValueError:
        summary = {}
    moved = sum((summary.get("moved") or {}).values())
    return True, (f"ok: last reconcile pass {age_text(good['ts'])}: {summary.get('active', 0)} "
                  f"active attempt(s), {moved} moved, {summary.get('retries_submitted', 0)} "
                  f"resubmitted")
