"""The files of an attempt that a pass reads: which folder is the attempt's (layout's rule, with
the ledger's count of Slurm's restarts), and the tail of its stderr for a failure's reason."""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from slurmexp import layout
from slurmexp.ledger import Ledger
from slurmexp.ledger.rows import ActiveAttempt
from slurmexp.reconcile.context import PassContext

STDERR_TAIL_LINES = 5
STDERR_TAIL_CHARS = 400


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



def _attempt_dir(ledger: Ledger, a: ActiveAttempt) -> Path | None:
    """The attempt's folder, as the task script wrote it (layout's one rule: the restart
    number counts earlier attempts with the same submission and job key)."""
    if not a.run_dir or not a.job_key:
        return None
    return layout.attempt_dir(a.run_dir, a.job_key, ledger.restarts_before(a.sub_id, a.job_key, a.attempt_id))


def _tail_for(ctx: PassContext, a: ActiveAttempt) -> str:
    paths: list[Path | None] = []
    d = _attempt_dir(ctx.ledger, a)
    if d is not None:
        paths.append(d / layout.STDERR)
    if a.exp_dir and a.job_key:
        paths.append(layout.ExperimentPaths(a.exp_dir).log(a.job_key, "err"))
    return stderr_tail(paths)
