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

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slurmexp.errors import SlurmexpError, SlurmUnavailable

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
    sub_id = ledger.record_intent(req.exp_id, req.chunk, req.array_spec, req.n_tasks, req.script,
                                  script_sha256(req.script), req.cluster)
    try:
        result = scheduler.submit(req.script, extra_args=list(req.extra_args), cwd=req.cwd)
    except SlurmUnavailable as exc:
        return ChunkOutcome(req, sub_id, UNANSWERED, error=exc)
    except SlurmexpError as exc:
        ledger.record_submit_failed(sub_id, exc.message)
        return ChunkOutcome(req, sub_id, REFUSED, error=exc)
    ledger.record_submitted(sub_id, result.job_id, getattr(result, "submit_time", None))
    return ChunkOutcome(req, sub_id, SUBMITTED, job_id=str(result.job_id))


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

