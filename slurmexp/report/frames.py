"""`slurmexp report`: what a sweep cost, how it went and what it found, from the ledger alone.

Accounting was stored in the ledger by reconcile, so a finished sweep can be reported on long
after the cluster forgot its jobs, and a report never runs sacct. Metrics come from the files
each run wrote (metrics.json, else the last values in metrics.jsonl).

Speed matters at 100,000 runs: every table is read with one query and handled column-wise in
pandas; the one per-run cost left is opening each run's metrics file (bench/README.md).
pandas is imported inside functions only, so `import slurmexp.cli` stays fast for `--help`.
Column names of the run table are a contract with scripts: see docs/REPORT.md.
This module decides what the numbers are; report_format and report_html show them.
"""
from __future__ import annotations

import json
import math
import os
import re
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from slurmexp.errors import Problem, SlurmexpError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from slurmexp.ledger import Ledger

FORMATS = ("table", "csv", "json", "markdown", "html")
# Every way an attempt can end without its run's result: what "wasted" hours were spent on.
# (ledger.TERMINAL_STATES less COMPLETED; spelled out because importing the ledger imports
# sqlite_utils, which imports pandas when it is installed, and this module must import fast.)
FAILED_STATES = frozenset({
    "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
    "DEADLINE", "LOST"})
METRICS_WORKERS = 8
PROBE = 200                 # metrics files read (and timed) before choosing threads or not
SLOW_READ_S = 60e-6         # per run; a page-cached read takes ~15 us, a cold or remote one 100s

_ATTEMPT_SQL = (
    "attempt_id, exp_id, run_id, attempt_no, sub_id, cluster, job_id, task_index, job_key, "
    "submit_time, state, reason, node, partition, qos, account, start_time, end_time, "
    "elapsed_s, exit_code, alloc_tres, req_mem, max_rss, total_cpu_s, failure_class")
_RUN_SQL = ("exp_id, run_id, idx, params_json, seed, source, state, reason, run_dir, chunk, "
            "task_index, n_attempts")

# The run table's fixed columns, in order; `param.<name>` and `metric.<name>` follow.
RUN_COLUMNS = [
    "exp_id", "run_id", "idx", "state", "reason", "attempts", "job_ids", "job_id", "node",
    "partition", "qos", "submit_time", "start_time", "end_time", "elapsed_s", "wait_s",
    "exit_code", "failure_class", "gpus", "cpus", "gpu_hours", "cpu_hours",
    "gpu_hours_wasted", "cpu_hours_wasted", "cpu_efficiency", "mem_efficiency",
    "max_rss_mib", "req_mem_mib", "seed", "run_dir",
]
_MEM_SCALE = {"": 1.0, "K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0 ** 2, "P": 1024.0 ** 3}
_MINIMIZE_WORDS = frozenset({
    "loss", "error", "err", "mse", "mae", "rmse", "nll", "perplexity", "ppl", "wer", "cer",
    "regret", "latency", "time", "seconds", "bpc", "bpd", "cost"})


@dataclass
class Report:
    experiments: list[dict]                 # one summary per experiment (see summarise())
    runs: pd.DataFrame                      # the run table (RUN_COLUMNS + param.* + metric.*)
    attempts: pd.DataFrame                  # attempts_frame(), for plots and the curious
    params: list[str]
    metrics: list[str]
    by: list[str] | None = None
    by_table: pd.DataFrame | None = None    # exp_id, param.*, n_runs, metric.<m>.mean/std/n
    best_metric: str | None = None
    minimize: bool | None = None
    minimize_guessed: bool = False
    best: pd.DataFrame | None = None        # the best run of each experiment (run-table rows)
    generated: str = ""
    timings: dict[str, float] = field(default_factory=dict)


# --- experiments ------------------------------------------------------------------------

def resolve_experiments(ledger: Ledger, refs: Iterable[str] | str | None) -> list[str]:
    """Experiment ids for what the user typed (exact ids or unique prefixes); none = all."""
    known = [r[0] for r in ledger.db.execute(
        "SELECT exp_id FROM experiments ORDER BY created, exp_id")]
    if isinstance(refs, str):
        refs = [refs]
    refs = [r for r in (refs or []) if r]
    if not refs:
        return known
    out: list[str] = []
    for ref in refs:
        hits = [ref] if ref in known else [k for k in known if k.startswith(ref)]
        if not hits:
            ledger.get_experiment(ref, required=True)   # raises, with suggestions
        if len(hits) > 1:
            raise SlurmexpError(f"experiment {ref!r} is ambiguous", [Problem(
                str(ledger.path), "experiments", f"{len(hits)} experiments start with {ref!r}",
                fix=f"type more of the id: {', '.join(hits[:8])}")])
        if hits[0] not in out:
            out.append(hits[0])
    return out


def _read_sql(ledger: Ledger, columns: str, table: str, exp_ids: Sequence[str] | None,
              order: str) -> pd.DataFrame:
    import pandas as pd
    sql, params = f"SELECT {columns} FROM {table}", []
    if exp_ids is not None:
        sql += f" WHERE exp_id IN ({', '.join('?' * len(exp_ids))})"
        params = list(exp_ids)
    return pd.read_sql_query(f"{sql} ORDER BY {order}", ledger.db.conn, params=params)


# --- frames -----------------------------------------------------------------------------

def _records_frame(records: list[dict], index: pd.Index, prefix: str) -> pd.DataFrame:
    """One `<prefix><key>` column per key any record has, sorted by key, on `index`."""
    import pandas as pd
    if not any(records):
        return pd.DataFrame(index=index)
    frame = pd.DataFrame.from_records(records, index=index)
    return frame[sorted(frame.columns)].add_prefix(prefix)


def _params_frame(params_json: pd.Series) -> pd.DataFrame:
    frame = _records_frame([json.loads(text) if text else {} for text in params_json],
                           params_json.index, "param.")
    for col in frame.columns:
        if frame[col].dtype == object and any(isinstance(v, (dict, list)) for v in frame[col]):
            frame[col] = [json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v
                          for v in frame[col]]
    return frame


def runs_frame(ledger: Ledger, exp_ids: Sequence[str] | None = None, *,
               params: bool = True) -> pd.DataFrame:
    """One row per run, ledger order; each parameter in its own `param.<name>` column."""
    runs = _read_sql(ledger, _RUN_SQL, "runs", exp_ids, "exp_id, idx")
    if exp_ids is not None and len(exp_ids) > 1:   # the order the user named them in
        rank = {e: i for i, e in enumerate(exp_ids)}
        runs = runs.iloc[runs["exp_id"].map(rank).argsort(kind="stable")].reset_index(drop=True)
    if params:
        runs = runs.join(_params_frame(runs["params_json"]))
    return runs


_MEM_RE = re.compile(r"^\s*(\d*\.?\d+)\s*([KMGTP]?)(?:i?B)?\s*([cn]?)\s*$", re.IGNORECASE)
_NAN = float("nan")


def parse_mem(text: Any) -> tuple[float, str]:
    """(MiB, "c" | "n" | "") for a Slurm memory string ("250M", "1.5G"; bare numbers are MiB,
    as in sbatch). Older sacct writes ReqMem per CPU ("4000Mc") or per node ("4000Mn")."""
    m = _MEM_RE.match(text) if isinstance(text, str) else None
    if not m:
        return _NAN, ""
    return float(m.group(1)) * _MEM_SCALE[m.group(2).upper()], m.group(3).lower()


def parse_tres(text: Any) -> tuple[float, float, float, float]:
    """(gpus, cpus, nodes, mem MiB) of a TRES string such as
    "billing=2,cpu=2,gres/gpu:a100=1,gres/gpu=1,mem=8G,node=1". `gres/gpu=N` is the total;
    without it the typed counts (`gres/gpu:a100=1`) add up. NaN when there is no string."""
    if not isinstance(text, str) or not text.strip():
        return _NAN, _NAN, _NAN, _NAN
    fields = dict(part.split("=", 1) for part in text.split(",") if "=" in part)

    def number(key: str) -> float:
        try:
            return float(fields[key])
        except (KeyError, ValueError):
            return _NAN
    gpus = number("gres/gpu")
    if gpus != gpus:
        gpus = sum(float(v) for k, v in fields.items()
                   if k.startswith("gres/gpu:") and v.isdigit())
    return gpus, number("cpu"), number("node"), parse_mem(fields.get("mem"))[0]


def _per_distinct(values: pd.Series, parse) -> list:
    """`parse` applied to each distinct value only, spread back over the rows as arrays: a
    sweep has a handful of distinct TRES strings among 100,000 attempts."""
    import numpy as np
    import pandas as pd
    codes, uniques = pd.factorize(values.astype("object"), use_na_sentinel=True)
    parsed = [parse(u) for u in uniques] + [parse(None)]     # code -1 (missing): the last
    table = np.array(parsed, dtype=object)
    return [table[:, i][codes] for i in range(table.shape[1])]


def _mem_mib(values: pd.Series, cpus: pd.Series | None = None,
             nodes: pd.Series | None = None) -> pd.Series:
    """MiB per row of memory strings, per-CPU and per-node forms scaled to the whole job."""
    import pandas as pd
    mib, per = _per_distinct(values, parse_mem)
    mib = pd.Series(mib, index=values.index, dtype=float)
    if cpus is not None:
        mib = mib.where(per != "c", mib * cpus)
    if nodes is not None:
        mib = mib.where(per != "n", mib * nodes)
    return mib


def _times(values: pd.Series) -> pd.Series:
    """Naive datetimes. Slurm writes the cluster's local time without a zone; a value that
    carries one (written by other code) is taken to UTC, so that a column never mixes the two
    and start - submit always computes."""
    import pandas as pd
    from pandas.api.types import is_datetime64_any_dtype
    text = values.astype("object").where(values.notna(), None)
    try:
        with warnings.catch_warnings():   # pandas 2 warns on mixed zones; 3 raises
            warnings.simplefilter("ignore", FutureWarning)
            times = pd.to_datetime(text, errors="coerce", format="ISO8601")
    except (TypeError, ValueError):
        times = None
    if times is None or not is_datetime64_any_dtype(times):
        times = pd.to_datetime(text, errors="coerce", format="ISO8601", utc=True)
    if times.dt.tz is not None:
        times = times.dt.tz_convert("UTC").dt.tz_localize(None)
    return times


def attempts_frame(ledger: Ledger, exp_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per attempt with what reconcile stored, plus derived accounting columns.

    Added: gpus, cpus, nodes (from alloc_tres), alloc_mem_mib, req_mem_mib, max_rss_mib,
    wait_s (start - submit), gpu_hours and cpu_hours (count x elapsed), cpu_efficiency
    (TotalCPU / (Elapsed x AllocCPUS), as seff), mem_efficiency (MaxRSS / requested memory),
    failed (ended in a state other than COMPLETED) and retried (a later attempt exists).
    Times are parsed into datetimes.
    """
    import pandas as pd
    a = _read_sql(ledger, _ATTEMPT_SQL, "attempts", exp_ids,
                  "exp_id, run_id, attempt_no, attempt_id")
    for col, values in zip(("gpus", "cpus", "nodes", "alloc_mem_mib"),
                           _per_distinct(a["alloc_tres"], parse_tres)):
        a[col] = values.astype(float)
    a["req_mem_mib"] = _mem_mib(a["req_mem"], a["cpus"], a["nodes"])
    rss = pd.to_numeric(a["max_rss"], errors="coerce")
    odd = rss.isna() & a["max_rss"].notna()            # "1234K" rather than MiB: rare
    a["max_rss_mib"] = rss.where(~odd, _mem_mib(a["max_rss"].where(odd)))
    for col in ("submit_time", "start_time", "end_time"):
        a[col] = _times(a[col])
    a["elapsed_s"] = pd.to_numeric(a["elapsed_s"], errors="coerce")
    a["total_cpu_s"] = pd.to_numeric(a["total_cpu_s"], errors="coerce")
    a["wait_s"] = (a["start_time"] - a["submit_time"]).dt.total_seconds()
    elapsed = a["elapsed_s"].fillna(0.0)
    a["gpu_hours"] = a["gpus"].fillna(0.0) * elapsed / 3600.0
    a["cpu_hours"] = a["cpus"].fillna(0.0) * elapsed / 3600.0
    core_s = a["elapsed_s"] * a["cpus"]
    a["cpu_efficiency"] = (a["total_cpu_s"] / core_s).where(core_s > 0)
    a["mem_efficiency"] = (a["max_rss_mib"] / a["req_mem_mib"]).where(a["req_mem_mib"] > 0)
    a["failed"] = a["state"].isin(FAILED_STATES)
    last_no = a.groupby(["exp_id", "run_id"], sort=False)["attempt_no"].transform("max")
    a["retried"] = a["attempt_no"] < last_no
    return a


# --- metrics ----------------------------------------------------------------------------

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
    data = _slurp(os.path.join(base, "metrics.json"))
    if data is not None:
        try:
            values = json.loads(data)
            if isinstance(values, dict):
                return _flat(values)
        except ValueError:
            pass      # damaged (written by hand, or a full disk): the history may do
    data = _slurp(os.path.join(base, "metrics.jsonl"))
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


def _metrics_frame(run_dirs: pd.Series, workers: int | None = None) -> pd.DataFrame:
    records = [r or {} for r in read_metrics_bulk(run_dirs.tolist(), workers)]
    return _records_frame(records, run_dirs.index, "metric.")


# --- the run table ----------------------------------------------------------------------

def _iso(times: pd.Series) -> pd.Series:
    return times.dt.strftime("%Y-%m-%dT%H:%M:%S").astype("object").where(times.notna(), None)


def run_table(runs: pd.DataFrame, attempts: pd.DataFrame,
              metrics: pd.DataFrame | None = None) -> pd.DataFrame:
    """Runs joined with their newest attempt, their attempts' totals and their metrics."""
    import pandas as pd
    keys = ["exp_id", "run_id"]
    last = attempts.drop_duplicates(keys, keep="last").set_index(keys)
    many = attempts[attempts.duplicated(keys, keep=False)]
    job_ids = last["job_key"].astype("object").copy()
    if len(many):
        job_ids.update(many.groupby(keys, sort=False)["job_key"].agg(
            lambda ids: ",".join(str(i) for i in ids)))
    wasted = attempts[["gpu_hours", "cpu_hours"]].where(attempts["failed"], 0.0)
    totals = pd.concat([
        attempts.groupby(keys, sort=False)[["gpu_hours", "cpu_hours"]].sum(),
        wasted.groupby([attempts[k] for k in keys], sort=False).sum().add_suffix("_wasted"),
    ], axis=1)
    per_run = pd.DataFrame({
        "job_ids": job_ids, "job_id": last["job_key"], "node": last["node"],
        "partition": last["partition"], "qos": last["qos"],
        "submit_time": _iso(last["submit_time"]), "start_time": _iso(last["start_time"]),
        "end_time": _iso(last["end_time"]), "elapsed_s": last["elapsed_s"],
        "wait_s": last["wait_s"], "exit_code": last["exit_code"],
        "failure_class": last["failure_class"], "gpus": last["gpus"], "cpus": last["cpus"],
        "cpu_efficiency": last["cpu_efficiency"], "mem_efficiency": last["mem_efficiency"],
        "max_rss_mib": last["max_rss_mib"], "req_mem_mib": last["req_mem_mib"],
    }).join(totals)
    table = runs.rename(columns={"n_attempts": "attempts"}).join(per_run, on=keys)
    for col in ("gpu_hours", "cpu_hours", "gpu_hours_wasted", "cpu_hours_wasted"):
        table[col] = table[col].fillna(0.0)
    params = [c for c in table.columns if c.startswith("param.")]
    if metrics is not None:
        table = table.join(metrics)
    mcols = [c for c in table.columns if c.startswith("metric.")]
    return table[RUN_COLUMNS + params + mcols].reset_index(drop=True)


# --- summary ----------------------------------------------------------------------------

def finite_float(value: Any) -> float | None:
    """A float, or None for what is missing, not a number or infinite (JSON has no NaN)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def summarise(exp: dict, runs: pd.DataFrame, attempts: pd.DataFrame) -> dict[str, Any]:
    """One experiment's summary; fields are documented in docs/REPORT.md."""
    import pandas as pd
    failed = attempts[attempts["failed"]]
    done = attempts[attempts["state"] == "COMPLETED"]
    retried = attempts[attempts["retried"]]
    waits = attempts["wait_s"].dropna()
    has_cpu = attempts["total_cpu_s"].notna() & (attempts["elapsed_s"] * attempts["cpus"] > 0)
    core_s = (attempts["elapsed_s"] * attempts["cpus"])[has_cpu].sum()
    mem = attempts["mem_efficiency"].dropna()
    first = attempts["submit_time"].min()
    if pd.isna(first):
        first = attempts["start_time"].min()
    last_end = attempts["end_time"].max()
    why = failed.assign(
        failure_class=failed["failure_class"].fillna(failed["state"]),
        reason=failed["reason"].fillna("")).groupby(
        ["state", "failure_class", "reason"]).size().sort_values(ascending=False, kind="stable")
    mcols = [c for c in runs.columns if c.startswith("metric.")]
    return {
        "exp_id": exp["exp_id"], "name": exp.get("name"), "backend": exp.get("backend"),
        "cluster": exp.get("cluster"), "created": exp.get("created"), "state": exp.get("state"),
        "runs": int(len(runs)),
        "runs_by_state": {str(k): int(v) for k, v in runs["state"].value_counts().items()},
        "attempts": int(len(attempts)),
        "retries": int(len(retried)),
        "retries_by_class": {str(k): int(v) for k, v in retried["failure_class"].fillna(
            retried["state"]).value_counts().items()},
        "failed_attempts": int(len(failed)),
        "gpu_hours": float(attempts["gpu_hours"].sum()),
        "gpu_hours_wasted": float(failed["gpu_hours"].sum()),
        "cpu_hours": float(attempts["cpu_hours"].sum()),
        "cpu_hours_wasted": float(failed["cpu_hours"].sum()),
        "wait_s_median": finite_float(waits.median()) if len(waits) else None,
        "wait_s_p95": finite_float(waits.quantile(0.95)) if len(waits) else None,
        "elapsed_s_median": finite_float(done["elapsed_s"].median()) if len(done) else None,
        "elapsed_s_max": finite_float(attempts["elapsed_s"].max()),
        "elapsed_s_total": float(attempts["elapsed_s"].fillna(0).sum()),
        "span_s": finite_float((last_end - first).total_seconds()) if len(attempts) else None,
        "cpu_efficiency": finite_float(attempts["total_cpu_s"][has_cpu].sum() / core_s)
        if core_s > 0 else None,
        "mem_efficiency_median": finite_float(mem.median()) if len(mem) else None,
        "mem_efficiency_max": finite_float(mem.max()) if len(mem) else None,
        "top_failures": [{"state": s, "failure_class": c, "reason": r or None, "attempts": int(n)}
                         for (s, c, r), n in why.head(5).items()],
        "runs_with_metrics": int(runs[mcols].notna().any(axis=1).sum()) if mcols else 0,
    }


# --- --by and --best --------------------------------------------------------------------

def _check_names(wanted: Iterable[str], known: list[str], what: str, option: str) -> None:
    missing = [w for w in wanted if w not in known]
    if missing:
        listed = ", ".join(known) if known else f"(the runs have no {what}s)"
        raise SlurmexpError(f"unknown {what} {', '.join(map(repr, missing))}", [Problem(
            "", option, f"no run has a {what} named {', '.join(missing)}",
            fix=f"known {what}s: {listed}")])


def guess_minimize(metric: str) -> bool:
    """Losses, errors and times are minimised; anything else (accuracy, reward) maximised."""
    words = [w for w in re.split(r"[^a-z0-9]+", metric.lower()) if w]
    return any(w in _MINIMIZE_WORDS or w.endswith("loss") for w in words)


def aggregate_by(table: pd.DataFrame, by: Sequence[str],
                 metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean, sample std and count of each numeric metric over COMPLETED runs, per experiment
    and value of the `by` parameters, i.e. averaged over all the other parameters."""
    import pandas as pd
    from pandas.api.types import is_bool_dtype, is_numeric_dtype
    keys = ["exp_id", *(f"param.{p}" for p in by)]
    done = table[table["state"] == "COMPLETED"]
    mcols = [f"metric.{m}" for m in metrics] if metrics is not None else [
        c for c in table.columns if c.startswith("metric.")]
    mcols = [c for c in mcols if is_numeric_dtype(table[c]) and not is_bool_dtype(table[c])]
    values = done[mcols].astype(float)
    try:
        grouped = values.groupby([done[k] for k in keys], dropna=False, sort=True)
        stats = grouped.agg(["mean", "std", "count"]) if mcols else grouped.size().to_frame()
    except TypeError:        # a parameter with mixed types (1 and "a") cannot be sorted
        grouped = values.groupby([done[k] for k in keys], dropna=False, sort=False)
        stats = grouped.agg(["mean", "std", "count"]) if mcols else grouped.size().to_frame()
    sizes = done.groupby(keys, dropna=False, sort=False).size()
    if mcols:
        stats.columns = [f"{c}.{'n' if s == 'count' else s}" for c, s in stats.columns]
        for c in stats.columns:
            if c.endswith(".n"):
                stats[c] = stats[c].astype(int)
    else:
        stats = stats.iloc[:, :0]
    stats.insert(0, "n_runs", sizes.reindex(stats.index).fillna(0).astype(int).to_numpy())
    out = stats.reset_index()
    out.columns = [*keys, *out.columns[len(keys):]]
    return pd.DataFrame(out)


def best_runs(table: pd.DataFrame, metric: str, minimize: bool) -> pd.DataFrame:
    """The COMPLETED run with the best value of `metric`, one per experiment."""
    import pandas as pd
    col = f"metric.{metric}"
    values = pd.to_numeric(table[col], errors="coerce").where(table["state"] == "COMPLETED")
    values = values.dropna()
    if values.empty:
        return table.iloc[:0]
    grouped = values.groupby(table.loc[values.index, "exp_id"], sort=False)
    picks = grouped.idxmin() if minimize else grouped.idxmax()
    return table.loc[picks.to_numpy()].reset_index(drop=True)


# --- building ---------------------------------------------------------------------------

def _split(names: str | Sequence[str] | None) -> list[str]:
    if names is None:
        return []
    if isinstance(names, str):
        names = [names]
    return [n.strip() for item in names for n in item.split(",") if n.strip()]


def build_report(ledger: Ledger, exp_ids: Sequence[str] | str | None = None,
                 by: str | Sequence[str] | None = None, best: str | None = None,
                 minimize: bool | None = None, *, metrics: bool = True,
                 workers: int | None = None) -> Report:
    """Everything a report shows, for experiments `exp_ids` (ids or unique prefixes; none =
    all). `by`: parameter names ("a,b" or a list) for aggregate_by(); `best`: a metric name,
    best = lowest when `minimize`, highest when not, guessed from the name when None.
    `metrics=False` skips reading the runs' metrics files (the slow part on a large sweep);
    `workers` threads read them (None: chosen by how fast the first reads are)."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    ids = resolve_experiments(ledger, exp_ids)
    exps = {e["exp_id"]: e for e in ledger.experiments()}
    runs = runs_frame(ledger, ids)
    attempts = attempts_frame(ledger, ids)
    timings["ledger_s"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    mframe = _metrics_frame(runs["run_dir"], workers) if metrics else None
    timings["metrics_s"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    table = run_table(runs, attempts, mframe)
    params = [c[6:] for c in table.columns if c.startswith("param.")]
    metric_names = [c[7:] for c in table.columns if c.startswith("metric.")]
    by_names = _split(by)
    _check_names(by_names, params, "parameter", "--by")
    if best is not None:
        best = best.removeprefix("metric.")
        _check_names([best], metric_names, "metric", "--best")
    summaries = []
    for exp_id in ids:
        summaries.append(summarise(exps[exp_id], table[table["exp_id"] == exp_id],
                                   attempts[attempts["exp_id"] == exp_id]))
    report = Report(experiments=summaries, runs=table, attempts=attempts, params=params,
                    metrics=metric_names, generated=datetime.now(timezone.utc).isoformat(
                        timespec="seconds"), timings=timings)
    if by_names:
        report.by = by_names
        report.by_table = aggregate_by(table, by_names, [best] if best else None)
    if best is not None:
        report.best_metric = best
        report.minimize_guessed = minimize is None
        report.minimize = guess_minimize(best) if minimize is None else bool(minimize)
        report.best = best_runs(table, best, report.minimize)
    timings["tables_s"] = time.perf_counter() - t2
    timings["total_s"] = time.perf_counter() - t0
    return report


# --- rendering --------------------------------------------------------------------------

def render_report(report: Report, fmt: str = "table", **options: Any) -> str:
    """The report as text in `fmt` (one of FORMATS): HTML from report_html, the others from
    report_format. Options go to the HTML renderer (`max_rows`)."""
    from slurmexp.report import text as report_format
    if fmt == "csv":
        return report_format.render_csv(report)
    if fmt == "json":
        return report_format.render_json(report)
    if fmt == "table":
        return report_format.render_table(report)
    if fmt == "markdown":
        return report_format.render_markdown(report)
    if fmt == "html":
        from slurmexp.report.html_page import render_html
        return render_html(report, **options)
    raise SlurmexpError(f"unknown report format {fmt!r}", [Problem(
        "", "--format", f"{fmt!r} is not a report format", fix=f"use one of {', '.join(FORMATS)}")])
