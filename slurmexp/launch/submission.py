"""The one way a chunk reaches the scheduler: intent -> submit -> record, then submit times.

Launch, reconcile's due retries and `slurmexp retry` all submit through `submit_chunk`, so the
order that makes a crash harmless is written once:

1. the submission intent is committed before the scheduler is asked;
2. the scheduler's answer is recorded in one transaction (job id, one attempt per task, runs
   SUBMITTED), or a refusal is recorded (the runs stay PLANNED with the error as reason);
3. when the scheduler does not answer (sbatch timed out, slurmctld down) nothing is recorded:
   the job may exist, so the intent is left for reconcile to adopt by its tag or, once provably
   dead, to close.

`stamp_submit_times` then asks once (one squeue) for the submit times of every job just
submitted: attempts are keyed by cluster + job id + submit time.
"""
from __future__ import annotations

import errno
import hashlib
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slurmexp.errors import SlurmexpError, SlurmUnavailable, StorageFull

if TYPE_CHECKING:  # pragma: no cover
    from slurmexp.ledger import Ledger

SUBMITTED = "submitted"      # the scheduler gave a job id; recorded
REFUSED = "refused"          # the scheduler said no; recorded as a FAILED submission
UNANSWERED = "unanswered"    # no answer; the intent stays for reconcile to resolve


@dataclass(frozen=True)
class ChunkRequest:
    """One array to submit: a chunk's script, the task indices (`array_spec`) and extras."""

    exp_id: str
    chunk: int | None
    array_spec: str
    n_tasks: int
    script: Path
    cluster: str | None
    extra_args: tuple[str, ...] = ()     # e.g. --array=<indices> and escalated --time/--mem
    cwd: Path | None = None


@dataclass(frozen=True)
class ChunkOutcome:
    request: ChunkRequest
    sub_id: int
    status: str                           # SUBMITTED, REFUSED or UNANSWERED
    job_id: str | None = None
    error: SlurmexpError | None = None    # what the scheduler said (REFUSED, UNANSWERED)

    @property
    def message(self) -> str:
        return self.error.message if self.error is not None else ""


def script_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def submit_chunk(ledger: Ledger, scheduler: Any, req: ChunkRequest) -> ChunkOutcome:
    """Take one chunk from intent to a recorded job, a recorded refusal, or a left intent.

    `scheduler.submit(script, extra_args=..., cwd=...)` returns a `SubmitResult`; it raises
    `SlurmUnavailable` when it got no answer and another `SlurmexpError` when it was refused.
    """
    what = f"{req.exp_id} chunk {req.chunk}"
    try:
        sub_id = ledger.record_intent(req.exp_id, req.chunk, req.array_spec, req.n_tasks,
                                      req.script, script_sha256(req.script), req.cluster)
    except (sqlite3.OperationalError, OSError) as exc:
        if not is_storage_full(exc):
            raise
        raise StorageFull(f"{what}: the ledger {ledger.path} could not record the submission "
                          f"intent ({exc}); nothing was submitted for it. Free space, then run "
                          "`slurmexp reconcile`, which submits what is missing") from None
    try:
        result = scheduler.submit(req.script, extra_args=list(req.extra_args), cwd=req.cwd)
    except SlurmUnavailable as exc:
        return ChunkOutcome(req, sub_id, UNANSWERED, error=exc)
    except SlurmexpError as exc:
        ledger.record_submit_failed(sub_id, exc.message)
        return ChunkOutcome(req, sub_id, REFUSED, error=exc)
    try:
        ledger.record_submitted(sub_id, result.job_id, getattr(result, "submit_time", None))
    except (sqlite3.OperationalError, OSError) as exc:
        if not is_storage_full(exc):
            raise
        # sbatch has run: the job exists, and its intent (committed before sbatch) is what
        # reconcile adopts it by. Nothing is lost and nothing is submitted again.
        raise StorageFull(f"{what}: sbatch accepted job {result.job_id}, but the ledger "
                          f"{ledger.path} could not record it ({exc}). Its submission intent "
                          f"{sub_id} is in the ledger: free space, then run `slurmexp "
                          f"reconcile`, which adopts job {result.job_id} (never submits it "
                          "twice) and submits what is missing") from None
    return ChunkOutcome(req, sub_id, SUBMITTED, job_id=str(result.job_id))


def unanswered_message(outcome: ChunkOutcome, n_queued: int, n_chunks: int) -> str:
    """What launch says when sbatch did not answer for a chunk (its intent is left)."""
    req = outcome.request
    what = ("did not answer; that array may or may not exist"
            if getattr(outcome.error, "timed_out", False) else "reached no Slurm controller")
    return (f"{req.exp_id}: sbatch {what} for chunk {req.chunk} ({outcome.message}); "
            f"{n_queued} of {n_chunks} array(s) are in the queue. Run `slurmexp reconcile` "
            "(cron does): it adopts that array if sbatch created it and submits what is "
            "missing, never twice")


def is_storage_full(exc: BaseException) -> bool:
    """A write that failed for want of space: ENOSPC/EDQUOT, or SQLite's "database or disk is
    full" (SQLITE_FULL)."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return "full" in str(exc).lower()


def stamp_submit_times(ledger: Ledger, scheduler: Any, outcomes: Iterable[ChunkOutcome]) -> int:
    """One query for the submit times of the jobs just submitted; fills in their submissions
    and attempts (each by its own submission, so a reused job id of an old attempt is never
    touched). Returns the attempts stamped. A scheduler that does not answer costs nothing:
    the next reconcile pass learns the times from sacct."""
    todo = [o for o in outcomes if o.status == SUBMITTED and o.job_id]
    if not todo:
        return 0
    try:
        times = scheduler.submit_times([o.job_id for o in todo])
    except SlurmexpError:
        return 0
    n = 0
    for o in todo:
        submit_time = times.get(o.job_id)
        if submit_time:
            n += ledger.set_submission_submit_time(o.sub_id, submit_time)
    return n

