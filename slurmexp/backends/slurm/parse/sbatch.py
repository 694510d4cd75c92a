"""What sbatch prints: the job id of --parsable, and the start estimate of --test-only.
"""
from __future__ import annotations

import re

from slurmexp.backends.facts import (
    SubmitResult,
)
from slurmexp.errors import SlurmexpError

# --------------------------------------------------------------------------------------------
# sbatch


def parse_sbatch_parsable(text: str) -> SubmitResult:
    """`sbatch --parsable` prints "123" or "123;cluster"; anything else means we do not know
    whether a job was created, which the caller must hear about rather than store a bad id."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    # sbatch may print warnings to stdout before the id on some sites; the id is the last line.
    last = lines[-1] if lines else ""
    job, _, cluster = last.partition(";")
    if not re.fullmatch(r"\d+", job):
        raise SlurmexpError(f"could not read a job id from sbatch --parsable output {text!r}")
    return SubmitResult(job_id=job, cluster=cluster.strip() or None)


_TEST_ONLY_RE = re.compile(r"Job (\d+) to start at (\S+)")


def parse_test_only(stderr: str) -> tuple[str, str] | None:
    """(job id, start time) from `sbatch --test-only`'s stderr, None when it did not say so."""
    match = _TEST_ONLY_RE.search(stderr or "")
    return (match.group(1), match.group(2)) if match else None
