"""The runs' metrics for a report: the summary reconcile stored with a run's final attempt
(`attempts.metrics_json`), else the files the run wrote (metrics.json, else the last values of
metrics.jsonl), read in threads when the file system is slow (bench/README.md).
"""
from __future__ import annotations

import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Sequence

from slurmexp.metrics import read_metrics
from slurmexp.report.frames import _records_frame

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from slurmexp.ledger import Ledger

__all__ = ["read_metrics", "read_metrics_bulk"]

METRICS_WORKERS = 8
PROBE = 200                 # metrics files read (and timed) before choosing threads or not
SLOW_READ_S = 60e-6         # per run; a page-cached read takes ~15 us, a cold or remote one 100s


def read_metrics_bulk(run_dirs: Sequence[str | None],
                      workers: int | None = None) -> list[dict | None]:
    """read_metrics for many runs, in `workers` threads.

    Threads pay only when reads wait on a disk or a file server (a network file system, a
    cold cache); with the files in the page cache they contend for the GIL and are 2-3 times
    slower than one thread (bench/README.md). So with `workers=None` the first PROBE runs are
    read in this thread and timed, and the rest use threads only when those were slow.
    """
    def read_all(dirs: Sequence[str | None]) -> list[dict | None]:
        return [read_metrics(d) if isinstance(d, str) and d else None for d in dirs]

    head: list[dict | None] = []
    if workers is None:
        t = time.perf_counter()
        head = read_all(run_dirs[:PROBE])
        slow = (time.perf_counter() - t) / max(len(head), 1) > SLOW_READ_S
        workers, run_dirs = (METRICS_WORKERS if slow else 1), run_dirs[PROBE:]
    if workers <= 1 or len(run_dirs) < 64:
        return head + read_all(run_dirs)
    size = math.ceil(len(run_dirs) / (workers * 4))
    pieces = [run_dirs[i:i + size] for i in range(0, len(run_dirs), size)]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sx-metrics") as pool:
        return head + [m for part in pool.map(read_all, pieces) for m in part]


def stored_summaries(ledger: Ledger, runs: pd.DataFrame, exp_ids: Sequence[str] | None
                     ) -> list[str | None]:
    """Per row of `runs`, the metrics summary the ledger stored with its newest attempt's
    final state (JSON text, `Ledger.stored_metrics`), None where it has none."""
    stored = ledger.stored_metrics(exp_ids)
    if not stored:
        return [None] * len(runs)
    return [stored.get(key) for key in zip(runs["exp_id"].tolist(), runs["run_id"].tolist())]


def _metrics_frame(run_dirs: pd.Series, workers: int | None = None,
                   stored: Sequence[str | None] | None = None) -> pd.DataFrame:
    """One `metric.<name>` column per metric: a run's stored summary where `stored` has one
    (the same dict `read_metrics` gave when its attempt ended), else its files."""
    dirs = run_dirs.tolist()
    if stored is None or not any(s is not None for s in stored):
        records = [r or {} for r in read_metrics_bulk(dirs, workers)]
    else:
        # One json.loads of all stored summaries as one array (as the parameters are read).
        known = iter(json.loads("[" + ",".join(s for s in stored if s is not None) + "]"))
        unknown = iter(read_metrics_bulk([d for d, s in zip(dirs, stored) if s is None],
                                         workers))
        records = [next(known) if s is not None else next(unknown) or {} for s in stored]
    return _records_frame(records, run_dirs.index, "metric.")
