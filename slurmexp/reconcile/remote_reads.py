"""A pass's reads from a cluster reached over SSH: one round trip, then a local mirror.

For experiments launched with a `[remote]` site the pass asks sacct (by id, and by name for
open intents), squeue and the small result files of every active attempt in one
`transport.snapshot` (so a 500-task pass costs one SSH round trip), and writes those files into
the experiment's local folder, where the ledger's paths point. The transitions then read them
as on a login node, and `status`, `report` and `show` keep working when the cluster cannot be
reached. A cluster that does not answer raises SlurmUnavailable before anything is written.
"""
from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from slurmexp import layout
from slurmexp.atomic import replace_file
from slurmexp.ledger.rows import ActiveAttempt, Submission

# The attempt folder's small files a pass (and show/report) reads; stderr comes as its tail.
ATTEMPT_FILES = (*layout.ATTEMPT_RECORD_FILES, layout.STDERR)
RUN_FILES = (layout.METRICS_FILE,)


def is_remote(backend: Any) -> bool:
    """A scheduler of experiments launched over SSH (`backends.slurm.remote.RemoteScheduler`)."""
    return getattr(backend, "remote", None) is not None and hasattr(backend, "to_remote")


def wanted_files(ledger: Any, backend: Any, active: Sequence[ActiveAttempt],
                 restarts: dict[int, int] | None = None) -> dict[str, str]:
    """The cluster files to fetch (relative to the transport's root) -> their local mirror's path.

    Built with strings, one path mapping per folder (its files map with it) and one ledger
    read for every attempt's restart number: a Path per file and a query per attempt made
    this 0.3 s of a 500-task pass (bench/README.md)."""
    root = str(backend.transport.root).rstrip("/") + "/"
    restarts = ledger.restarts_of(active) if restarts is None else restarts
    out: dict[str, str] = {}
    inside_root: dict[str, str | None] = {}      # local folder -> its path under the root

    def want(local_dir: str, names: Sequence[str]) -> None:
        if local_dir not in inside_root:
            remote = str(backend.to_remote(local_dir))
            inside = remote.rstrip("/") + "/"
            inside_root[local_dir] = (inside[len(root):] if remote != local_dir
                                      and inside.startswith(root) else None)
        rel = inside_root[local_dir]
        if rel is not None:
            for name in names:
                out[rel + name] = f"{local_dir.rstrip('/')}/{name}"

    logs_dirs: dict[str, str] = {}
    for a in active:
        if not a.run_dir or not a.job_key:
            continue
        # layout's rule (RunPaths.find_attempt with the restart number, ExperimentPaths.log),
        # written with strings: test_remote_mapping holds the two to the same paths.
        run = os.fspath(Path(a.run_dir))
        attempt = layout.attempt_name(a.job_key, restarts[a.attempt_id])
        want(f"{run}/{layout.ATTEMPTS_DIR}/{attempt}", ATTEMPT_FILES)
        want(run, RUN_FILES)
        if a.exp_dir:
            if a.exp_dir not in logs_dirs:
                logs_dirs[a.exp_dir] = os.fspath(layout.ExperimentPaths(a.exp_dir).logs_dir)
            want(logs_dirs[a.exp_dir], (layout.log_name(a.job_key, "err"),))
    return out


def wanted_ages(ctx: Any, backend: Any, active: Sequence[ActiveAttempt],
                restarts: dict[int, int]) -> dict[Path, list[str]]:
    """Local attempt folder -> the cluster files (relative to the transport's root) whose
    changes say the command lives: its stdout and stderr, the run's metrics files. Only for
    experiments with `[liveness] stall_after` (nothing else needs them)."""
    root = PurePosixPath(str(backend.transport.root))
    out: dict[Path, list[str]] = {}

    def judged(a: ActiveAttempt) -> bool:
        exp = ctx.exps.get(a.exp_id)
        live = exp["settings"].liveness if exp and exp.get("settings") else None
        return bool(live is not None and live.stall_after_s and a.run_dir and a.job_key)

    for a in (a for a in active if judged(a)):
        run = layout.RunPaths(a.run_dir)
        folder = run.find_attempt(a.job_key, restarts[a.attempt_id])
        paths = [folder / n for n in layout.ATTEMPT_OUTPUT_FILES] + [run.metrics, run.metrics_history]
        remote = [backend.to_remote(p) for p in paths]
        out[Path(folder)] = [str(r.relative_to(root)) for r in remote if r.is_relative_to(root)]
    return out


def read_remote(ctx: Any, backend: Any, active: Sequence[ActiveAttempt], intents: Sequence[Submission],
                *, since: str | None, names: Sequence[str], names_since: str | None):
    """(sacct rows by id, sacct rows by name, squeue rows) in one round trip; the attempts'
    files mirrored locally on the way, and for `stall_after` when their output last changed."""
    job_ids = sorted({str(a.job_id) for a in active if a.job_id})
    array_ids = sorted({str(a.job_id) for a in active if a.task_index is not None})
    restarts = ctx.ledger.restarts_of(active)       # one ledger read serves both lists
    files = wanted_files(ctx.ledger, backend, active, restarts)
    ages = wanted_ages(ctx, backend, active, restarts)
    asked = sorted({p for paths in ages.values() for p in paths})
    from slurmexp.transport.snapshot import snapshot  # only passes over SSH need it

    snap = snapshot(backend.backend, job_ids, since=since or names_since or "now-7days",
                    files=sorted(files), names=names, names_since=names_since, user_queue=True,
                    array_ids=array_ids, ages=asked)
    mirror(files, snap.files)
    mirror_output_times(ages, snap.ages, time.time())
    return snap.accounting, snap.by_name, snap.queue


def mirror_output_times(ages: dict[Path, list[str]], found: dict[str, float], now: float) -> None:
    """Write each attempt's `layout.OUTPUT_CHANGED`: the last change of its output on the
    cluster, in this machine's clock (now less the age the cluster measured), which
    `layout.last_output` reads beside the local files' own times."""
    for folder, paths in ages.items():
        seen = [found[p] for p in paths if p in found]
        if not seen or not folder.is_dir():
            continue
        replace_file(folder / layout.OUTPUT_CHANGED, f"{now - min(seen):.0f}\n")


def mirror(files: Mapping[str, str | Path], texts: dict[str, str | None]) -> int:
    """Write the fetched files into their local places (only what changed; atomically)."""
    written = 0
    for rel, local in files.items():
        text = texts.get(rel)
        if text is None:
            continue
        path = Path(local)
        try:
            if path.read_text(errors="replace") == text:
                continue
        except OSError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_file(path, text)
        written += 1
    return written
