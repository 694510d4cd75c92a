"""What a Slurm command that did not work means, as the error the caller gets.

`run_slurm` asks `error_for` about every non-zero exit: a daemon that did not answer is
SlurmUnavailable (exit 3, never a job failure); a full queue (MaxJobCount) or a submit limit
is SlurmQueueLimit, a refusal of this job for now; anything else is SlurmCommandError with
Slurm's own words. Which is which is read from stderr by `parse.classify_error`, against
output captured from the test clusters.
"""
from __future__ import annotations

from slurmexp.backends.slurm import parse as sp
from slurmexp.errors import SlurmCommandError, SlurmexpError, SlurmQueueLimit, SlurmUnavailable
from slurmexp.transport.base import CommandResult


def error_for(command: str, proc: CommandResult, *, check: bool) -> SlurmexpError | None:
    """The error for `proc`'s non-zero exit; None when `check` is off and no daemon was away
    (the caller reads the answer itself)."""
    stderr = (proc.stderr or "").strip()
    kind = sp.classify_error(stderr)
    if kind == "unavailable":
        return SlurmUnavailable(
            f"{command} could not reach a Slurm daemon (this is not a job failure): "
            f"{stderr or 'no message'}")
    if not check:
        return None
    if kind == "queue_full":
        stopped = (f" ({command} was stopped at that answer instead of retrying for two "
                   "minutes; nothing was created)") if getattr(proc, "stopped_on", None) else ""
        return SlurmQueueLimit(
            f"{command}: Slurm refused the job because the cluster's queue is full "
            f"(MaxJobCount reached; every array task counts){stopped}: {stderr}",
            limit="MaxJobCount")
    if kind == "submit_limit":
        limit = sp.submit_limit_name(stderr) or "MaxSubmitJobs"
        return SlurmQueueLimit(f"{command}: Slurm refused the job: submit limit {limit} "
                               f"(jobs a user or account may have queued): {stderr}",
                               limit=limit)
    return SlurmCommandError(f"{command} failed (exit {proc.returncode}): "
                             f"{stderr or (proc.stdout or '').strip() or 'no message'}")
