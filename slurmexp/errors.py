"""Errors that carry every problem found, so the user fixes them all in one round.

A `Problem` always names the file and the key path: a researcher reading it on a login node
should not have to guess which of their TOML files, or which line of it, is wrong, nor what
to type next.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    file: str          # path of the file the problem is in ("" when it is not about a file)
    key: str           # dotted key path inside that file, e.g. "resources.time"
    message: str       # what is wrong
    fix: str = ""      # what to do about it
    check: str = ""    # which check found it (for --format json and for tests)

    def format(self) -> str:
        where = f"{self.file}: " if self.file else ""
        key = f"[{self.key}] " if self.key else ""
        fix = f"\n    fix: {self.fix}" if self.fix else ""
        return f"{where}{key}{self.message}{fix}"


class SlurmexpError(Exception):
    """Any error meant for the user. The CLI prints it and exits with `exit_code`."""

    exit_code = 1

    def __init__(self, message: str, problems: list[Problem] | None = None):
        super().__init__(message)
        self.message = message
        self.problems = list(problems or [])

    def format(self) -> str:
        lines = [self.message]
        lines += [f"  - {p.format()}" for p in self.problems]
        return "\n".join(lines)


class SlurmexpWarning(UserWarning):
    """Something allowed but worth saying (the CLI prints it as `warning: ...` and goes on)."""


class SpecError(SlurmexpError):
    """A sweep or site file does not parse or does not follow the schema."""

    exit_code = 2


class ValidationError(SlurmexpError):
    """The sweep asks for something the cluster cannot give; nothing was submitted."""

    exit_code = 2


class ExperimentExists(SlurmexpError):
    """The ledger already holds this experiment id (another launch of the same sweep won)."""

    exit_code = 1


class SlurmUnavailable(SlurmexpError):
    """A Slurm daemon did not answer (slurmctld or slurmdbd). Not a job failure.

    `timed_out`: the command was killed at its timeout, so a request it had sent (an sbatch)
    may have been carried out; otherwise the command itself said it reached no daemon."""

    exit_code = 3
    timed_out = False


class SlurmCommandError(SlurmexpError):
    """A Slurm command ran and refused what we asked."""

    exit_code = 1


class SlurmQueueLimit(SlurmCommandError):
    """Slurm refused a job for a queue limit: the cluster's MaxJobCount (its queue is full) or
    a QOS/association submit limit (MaxSubmitJobs). Nothing was created; the job can be
    submitted once enough queued jobs have ended. `limit` names the limit."""

    exit_code = 1

    def __init__(self, message: str, problems: list[Problem] | None = None, *, limit: str = ""):
        super().__init__(message, problems)
        self.limit = limit


class LedgerError(SlurmexpError):
    """The ledger file cannot be used as asked: missing, empty, not a ledger, damaged, read-only,
    or written by a newer slurmexp. Nothing was changed; the message names the file and the fix."""

    exit_code = 4


class PartlySubmitted(SlurmexpError):
    """Some of an experiment's arrays are in the queue and Slurm refused the others: the runs
    not submitted are named, with the command that submits them."""

    exit_code = 5


class SubmissionUnknown(SlurmexpError):
    """sbatch did not answer for an array (timed out, daemon away): the job may exist. The
    intent is in the ledger; `slurmexp reconcile` adopts the job or submits the runs."""

    exit_code = 6


class StorageFull(SlurmexpError):
    """A file or the ledger could not be written for want of space: the disk (or quota) is
    full. What was already submitted is recorded or left for reconcile."""

    exit_code = 7
