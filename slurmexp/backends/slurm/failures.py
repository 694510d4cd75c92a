"""What a Slurm command that did not work means, as the error the caller gets.

`run_slurm` asks `error_for` about every non-zero exit: a daemon that did not answer is
SlurmUnavailable (exit 3, never a job failure); a full queue (MaxJobCount) or a submit limit
is SlurmQueueLimit, a refusal of this job for now; anything else is SlurmCommandError with
Slurm's own words. Which is which is read from stderr by `parse.classify_error`, against
output captured from the test clusters. `check_slurm_conf` refuses before a command runs when
$SLURM_CONF names no file, which Slurm would retry for a minute per command.
"""
from __future__ import annotations

import os

from slurmexp.backends.slurm import parse as sp
from slurmexp.errors import Problem, SlurmCommandError, SlurmexpError, SlurmQueueLimit, SlurmUnavailable
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


def check_slurm_conf(command: str) -> None:
    """SLURM_CONF naming no file: say so now, naming the command. Slurm's commands would retry
    reading it for 60 s (`s_p_parse_file: cannot stat file ..., retrying in 1sec up to 60sec`),
    then fail with "Unable to process configuration file", and a validate or discover runs
    several of them. (With SLURM_CONF unset and no /etc/slurm/slurm.conf they fail at once:
    "Could not establish a configuration source", which `classify_error` reads as unavailable.)"""
    conf = os.environ.get("SLURM_CONF")
    if conf and not os.path.isfile(conf):
        why = "is a folder" if os.path.isdir(conf) else "does not exist"
        raise SlurmUnavailable(
            f"{command} not run: SLURM_CONF={conf} {why}, so no Slurm command can work here "
            f"(Slurm would retry reading it for 60 s, then fail; this is not a job failure)",
            [Problem("", "SLURM_CONF", f"{conf} {why}",
                     fix="point SLURM_CONF at the cluster's slurm.conf, or unset it to use "
                         "/etc/slurm/slurm.conf")])
