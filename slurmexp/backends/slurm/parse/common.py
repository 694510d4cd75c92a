"""Pure parsers for the text Slurm commands print; nothing here runs a command.

Every function takes the exact text a command wrote (tests feed them output captured from the
real test cluster, `tests/data/captured/`), so a change in Slurm's output shows up as a failing
unit test instead of as wrong states in somebody's ledger. Command lines that produce this text
live in `backends/slurm/commands.py`; the field lists they use live here, next to the code that
depends on their order.
"""
from __future__ import annotations

import re

from slurmexp.errors import SlurmexpError

# `sacct -P` and `squeue -o` do no escaping at all: a "|" in a job name or comment would shift
# every later column. The ASCII unit separator cannot be typed into sbatch's --job-name or
# --comment by accident and Slurm never prints it itself.
DELIMITER = "\x1f"


# Words Slurm prints where a value is absent; all of them mean None to us.
_EMPTY = frozenset({"", "None", "none", "Unknown", "(null)", "N/A", "n/a", "None assigned"})


def _opt(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return None if value in _EMPTY else value


# --------------------------------------------------------------------------------------------
# errors


_UNAVAILABLE_PATTERNS = (
    "unable to contact slurm controller",
    "socket timed out",
    "slurmdbd",
    "connection refused",
    "zero bytes were transmitted",
    "slurm_persist_conn_open",
    "unable to establish a connection",
    "communication connection failure",
    "slurm backup controller in standby mode",
    "resource temporarily unavailable",
    # Slurm 24.11 and 26.05 (not 22.05), any client run with --clusters/-M while that cluster's
    # slurmctld is down: "squeue: error: 'sx2411' can't be reached now, or it is an invalid entry
    # for --cluster. ..." then "fatal: Could not get cluster information" (exit 1). slurmdbd
    # no longer lists a controller for the cluster, so this is the controller being away;
    # a misspelt cluster name says the same and shows up as a cluster that never answers.
    "can't be reached now",
    "could not get cluster information",
    # A controller that is restarting accepts the connection and drops it (seen from squeue on
    # 24.11 in CI: "slurm_load_jobs error: Connection reset by peer"); a link that drops does
    # the same.
    "connection reset by peer",
    "broken pipe",
    "connection timed out",
    "no route to host",
    "network is unreachable",
    # No usable slurm.conf on this machine (22.05: SLURM_CONF naming a missing file, after 60 s
    # of retries; no /etc/slurm/slurm.conf and no configless source, at once): no daemon can
    # be asked from here.
    "unable to process configuration file",
    "could not establish a configuration source",
)


# sbatch's words when slurmctld answered EAGAIN: MaxJobCount is reached (every array task
# counts, `job_count + tasks >= MaxJobCount`) or the job queue is full. The controller did
# answer: it is a refusal of this job for now, not a daemon that is away. sbatch prints the
# first line, sleeps and retries (15 times, 1+2+...+15 s: two minutes), then the second line;
# captured in tests/data/captured/22.05/sbatch_queue_full.txt. These phrases are also where
# the Slurm backend stops sbatch's retry loop (`SBATCH_RETRYING`).
SBATCH_RETRYING = (
    "temporarily unable to accept job, sleeping and retrying",
    "job queue full, sleeping and retrying",
)
_QUEUE_FULL_PATTERNS = (
    *SBATCH_RETRYING,
    "batch job submission failed: resource temporarily unavailable",
    # `sbatch --test-only` on a full queue (22.05): the same EAGAIN, said at once.
    "allocation failure: resource temporarily unavailable",
    "maxjobcount",
)
# A submit limit of the QOS or the association (MaxSubmitJobs / MaxSubmitJobsPerUser /
# GrpSubmitJobs ...): "sbatch: error: QOSMaxSubmitJobPerUserLimit" then "Batch job submission
# failed: Job violates accounting/QOS policy (job submit limit, ...)"
# (captured/22.05/sbatch_max_submit_refused.txt).
_SUBMIT_LIMIT_RE = re.compile(r"\b((?:QOS|Assoc)\w*SubmitJob\w*Limit)\b", re.IGNORECASE)


def classify_error(stderr: str) -> str:
    """What a failed Slurm command's stderr means:

    "queue_full"   slurmctld refused new jobs for now (MaxJobCount reached, queue full);
    "submit_limit" a QOS or association submit limit (MaxSubmitJobs...) refused the job;
    "unavailable"  a daemon did not answer (retry later, the job is not at fault);
    "refused"      Slurm understood the request and said no for another reason.
    The first two are refusals too: nothing was created, and waiting for the queue to drain
    (not for a daemon to come back) is what helps.
    """
    low = (stderr or "").lower()
    if any(p in low for p in _QUEUE_FULL_PATTERNS):
        return "queue_full"
    if _SUBMIT_LIMIT_RE.search(stderr or "") or "job submit limit" in low:
        return "submit_limit"
    return "unavailable" if any(p in low for p in _UNAVAILABLE_PATTERNS) else "refused"


def submit_limit_name(stderr: str) -> str | None:
    """The limit Slurm named in a submit-limit refusal, e.g. "QOSMaxSubmitJobPerUserLimit"."""
    m = _SUBMIT_LIMIT_RE.search(stderr or "")
    return m.group(1) if m else None


# --------------------------------------------------------------------------------------------
# host lists


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(depth - 1, 0)
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in (p.strip() for p in parts) if p]


def _expand_range(body: str) -> list[str]:
    out: list[str] = []
    for item in body.split(","):
        item = item.strip()
        if not item:
            continue
        if "-" in item:
            lo, _, hi = item.partition("-")
            width = len(lo) if lo.startswith("0") else 0
            out += [f"{n:0{width}d}" for n in range(int(lo), int(hi) + 1)]
        else:
            out.append(item)
    return out


def expand_hostlist(text: str | None) -> list[str]:
    """"c[1-3],g[1-2],x01" -> ["c1", "c2", "c3", "g1", "g2", "x01"], zero padding kept."""
    if text is None or _opt(text) is None:
        return []
    names: list[str] = []
    for part in _split_top_level(text):
        prefixes = [""]
        rest = part
        while rest:
            open_at = rest.find("[")
            if open_at < 0:
                prefixes = [p + rest for p in prefixes]
                break
            close_at = rest.find("]", open_at)
            if close_at < 0:
                raise SlurmexpError(f"bad host list {text!r}: '[' without ']'")
            head, body = rest[:open_at], rest[open_at + 1:close_at]
            prefixes = [p + head + s for p in prefixes for s in _expand_range(body)]
            rest = rest[close_at + 1:]
        names += prefixes
    return names
