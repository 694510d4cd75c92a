"""`log_metrics()`: the one call a run's program makes so that `slurmexp report` can find its
numbers, without the program knowing where the experiment lives.

Two files in the run directory: `metrics.jsonl`, one line per call (the history, for curves),
and `metrics.json`, the latest value of every key (what a report table shows). metrics.json is
replaced atomically, so a reader never sees half of it even while the run is still writing, and
both files are updated under one lock, so several processes of a run (data-parallel ranks) may
log at once.

`read_metrics` reads a run's summary back (report, show, and reconcile when an attempt ends).
"""
from __future__ import annotations

import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

from slurmexp.atomic import replace_file
from slurmexp.layout import METRICS_FILE, METRICS_HISTORY_FILE

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX; runs are never launched there
    fcntl = None  # type: ignore[assignment]

RESERVED = ("time", "step")
_warned_no_run_dir = False


def _plain(value: Any) -> Any:
    """numpy/torch scalars and arrays become Python numbers and lists; json knows those."""
    for method in ("item", "tolist"):
        convert = getattr(value, method, None)
        if callable(convert):
            try:
                return convert()
            except (TypeError, ValueError):
                continue
    return str(value)


def _dumps(record: dict[str, Any]) -> str:
    # NaN and infinity are not JSON; write null so any JSON reader (pandas, jq) can load the file.
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    text = json.dumps(record, default=_plain, ensure_ascii=False)
    return json.dumps(clean(json.loads(text)), ensure_ascii=False, allow_nan=False)


def log_metrics(step: int | None = None, *, run_dir: str | Path | None = None,
                **values: Any) -> dict[str, Any] | None:
    """Append `values` (with the time and `step`) to metrics.jsonl; update metrics.json.

    The run directory is `run_dir`, else `$SLURMEXP_RUN_DIR` (set by the task script). Outside
    a slurmexp task, with neither, it warns once and records nothing, so a program being
    debugged by hand does not crash. Returns the record written, or None.
    """
    global _warned_no_run_dir
    clash = [k for k in RESERVED if k in values]
    if clash:
        raise ValueError(f"metric names {clash} are reserved by log_metrics; rename them")
    if not values:
        raise ValueError("log_metrics() needs at least one metric, e.g. log_metrics(loss=0.1)")
    target = run_dir if run_dir is not None else os.environ.get("SLURMEXP_RUN_DIR")
    if not target:
        if not _warned_no_run_dir:
            warnings.warn("slurmexp.log_metrics: not running under slurmexp (no "
                          "SLURMEXP_RUN_DIR) and no run_dir given; metrics are not recorded",
                          RuntimeWarning, stacklevel=2)
            _warned_no_run_dir = True
        return None
    directory = Path(target)
    directory.mkdir(parents=True, exist_ok=True)

    record: dict[str, Any] = {"time": time.time()}
    if step is not None:
        record["step"] = step
    record.update(values)
    line = _dumps(record)
    latest_values = json.loads(line)
    latest_values = {k: v for k, v in latest_values.items() if k not in RESERVED}

    with open(directory / METRICS_HISTORY_FILE, "a", encoding="utf-8") as history:
        if fcntl is not None:
            fcntl.flock(history.fileno(), fcntl.LOCK_EX)
        try:
            history.write(line + "\n")
            history.flush()
            _update_latest(directory / METRICS_FILE, latest_values)
        finally:
            if fcntl is not None:
                fcntl.flock(history.fileno(), fcntl.LOCK_UN)
    return record


def _update_latest(path: Path, values: dict[str, Any]) -> None:
    try:
        latest = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(latest, dict):
            latest = {}
    except (FileNotFoundError, ValueError):
        latest = {}
    latest.update(values)
    text = json.dumps(latest, ensure_ascii=False, indent=1, sort_keys=True) + "\n"
    replace_file(path, text, 0o644, apply_umask=False)


# --- reading them back (report, and reconcile when an attempt ends) ---------------------

def _flat(values: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, name + "."))
        elif value is None or isinstance(value, (int, float, str, bool)):
            out[name] = value
    return out       # lists (curves, matrices) cannot be one cell; they stay in the files


def _slurp(path: str) -> bytes | None:
    # os.open/os.read: half the cost of open() for 100,000 small files (no buffered object).
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        chunks = [os.read(fd, 65536)]
        while len(chunks[-1]) == 65536:          # a short read of a regular file is its end
            chunks.append(os.read(fd, 65536))
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def read_metrics(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """Latest metric values of one run: metrics.json, else the last value of each key in
    metrics.jsonl (a run that died before its first metrics.json, or one written by hand)."""
    base = os.fspath(run_dir)
    data = _slurp(os.path.join(base, METRICS_FILE))
    if data is not None:
        try:
            values = json.loads(data)
            if isinstance(values, dict):
                return _flat(values)
        except ValueError:
            pass      # damaged (written by hand, or a full disk): the history may do
    data = _slurp(os.path.join(base, METRICS_HISTORY_FILE))
    if data is None:
        return None
    latest: dict[str, Any] = {}
    for line in data.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue     # the line being written right now, or a damaged one
        if isinstance(record, dict):
            latest.update((k, v) for k, v in record.items() if k not in ("time", "step"))
    return _flat(latest) if latest else None
