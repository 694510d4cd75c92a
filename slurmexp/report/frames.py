"""`slurmexp report`: what a sweep cost, how it went and what it found, from the ledger alone.

Accounting was stored in the ledger by reconcile, so a finished sweep can be reported on long
after the cluster forgot its jobs, and a report never runs sacct. Metrics come from the summary
reconcile stored with each run's final attempt, else from the files each run wrote
(metrics.json, else the last values in metrics.jsonl).

Speed matters at 100,000 runs: every table is read with one query and handled column-wise in
pandas; a run whose metrics the ledger does not hold costs opening its metrics file
(bench/README.md).
pandas is imported inside functions only, so `import slurmexp.cli` stays fast for `--help`.
Column names of the run table are a contract with scripts: see docs/REPORT.md.
This module decides what the numbers are; report_format and report_html show them.
"""
from __future__ import annotations

import json
import warnings
from typing import TYPE_CHECKING, Any, Sequence

from slurmexp import units
from slurmexp.states import FAILED_STATES

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from slurmexp.ledger import Ledger


# The run table's fixed columns, in order; `param.<name>` and `metric.<name>` follow.
RUN_COLUMNS = [
    "exp_id", "run_id", "idx", "state", "reason", "attempts", "job_ids", "job_id", "node",
    "partition", "qos", "submit_time", "start_time", "end_time", "elapsed_s", "wait_s",
    "exit_code", "failure_class", "gpus", "cpus", "gpu_hours", "cpu_hours",
    "gpu_hours_wasted", "cpu_hours_wasted", "cpu_efficiency", "mem_efficiency",
    "max_rss_mib", "req_mem_mib", "sample_seed", "run_dir", "reused_from",
]


# --- frames -----------------------------------------------------------------------------

def _records_frame(records: list[dict], index: pd.Index, prefix: str) -> pd.DataFrame:
    """One `<prefix><key>` column per key any record has, sorted by key, on `index`."""
    import pandas as pd
    if not any(records):
        return pd.DataFrame(index=index)
    frame = pd.DataFrame.from_records(records, index=index)
    return frame[sorted(frame.columns)].add_prefix(prefix)


def integers_stay_integers(s: pd.Series) -> pd.Series:
    """`s` as pandas' nullable Int64 when every value it has is a whole number: a parameter
    missing from one experiment, or a GPU count missing from an unreconciled run, would make
    the column float, and CSV would write `param.seed` 0.0."""
    from pandas.api.types import is_bool_dtype, is_float_dtype, is_integer_dtype, is_object_dtype
    if is_bool_dtype(s) or is_integer_dtype(s):
        return s
    values = s.dropna()
    if values.empty:
        return s
    if is_float_dtype(s):
        whole = bool(((values % 1) == 0).all()) and bool((values.abs() < 2 ** 53).all())
    elif is_object_dtype(s):
        whole = all(isinstance(v, int) and not isinstance(v, bool) for v in values)
    else:
        return s
    return s.astype("Int64") if whole else s


def _params_frame(params_json: pd.Series) -> pd.DataFrame:
    """One `param.<name>` column per parameter; an int parameter stays int whatever the
    other experiments in the table have (integers_stay_integers)."""
    import pandas as pd
    # One json.loads of every run's parameters as one array: about half the time of one
    # call per run (100,000 runs: 66 ms instead of 152 ms).
    records = json.loads("[" + ",".join(text or "{}" for text in params_json) + "]")
    frame = _records_frame(records, params_json.index, "param.")
    # Each parameter's value types in one pass. json.loads makes exact ints (bool is a type of
    # its own), so `type(v) is int` is "an int, not a bool" at a fraction of two isinstance calls.
    kinds = {(k, type(v)) for r in records for k, v in r.items()}
    ints = {k for k, t in kinds if t is int}
    others = {k for k, t in kinds if t is not int}
    for name in ints - others:
        col = f"param.{name}"
        values = [r.get(name) for r in records]
        frame[col] = pd.array(values, dtype="Int64")
    for col in frame.columns:
        if frame[col].dtype == object and any(isinstance(v, (dict, list)) for v in frame[col]):
            frame[col] = [json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v
                          for v in frame[col]]
    return frame


def runs_frame(ledger: Ledger, exp_ids: Sequence[str] | None = None, *,
               params: bool = True) -> pd.DataFrame:
    """One row per run, ledger order; each parameter in its own `param.<name>` column."""
    runs = ledger.runs_table(exp_ids)
    if exp_ids is not None and len(exp_ids) > 1:   # the order the user named them in
        rank = {e: i for i, e in enumerate(exp_ids)}
        runs = runs.iloc[runs["exp_id"].map(rank).argsort(kind="stable")].reset_index(drop=True)
    if params:
        runs = runs.join(_params_frame(runs["params_json"]))
    return runs


_NAN = float("nan")


def _mem_parts(text: Any) -> tuple[float, str]:
    """`units.read_mem` for a frame column: (MiB, "c" | "n" | ""), NaN when unreadable."""
    mem = units.read_mem(text)
    return mem if mem is not None else (_NAN, "")


def _tres_numbers(text: Any) -> tuple[float, float, float, float]:
    """(gpus, cpus, nodes, mem MiB) of a TRES string (`units.parse_tres`, `units.tres_gpus`),
    such as "billing=2,cpu=2,gres/gpu:a100=1,gres/gpu=1,mem=8G,node=1"; NaN where missing."""
    if not isinstance(text, str) or not text.strip():
        return _NAN, _NAN, _NAN, _NAN
    tres = units.parse_tres(text)
    return (float(units.tres_gpus(tres)), float(tres.get("cpu", _NAN)),
            float(tres.get("node", _NAN)), float(tres.get("mem", _NAN)))


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
    mib, per = _per_distinct(values, _mem_parts)
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


def _in_process_experiments(ledger: Ledger, exp_ids: Sequence[str]) -> list[str]:
    from slurmexp.backends.base import kind_names

    kinds = kind_names(in_process=True)
    return [e for e in exp_ids if (ledger.get_experiment(e) or {}).get("backend") in kinds]


def attempts_frame(ledger: Ledger, exp_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per attempt with what reconcile stored, plus derived accounting columns.

    Added: gpus, cpus, nodes (from alloc_tres), alloc_mem_mib, req_mem_mib, max_rss_mib,
    wait_s (start - submit; none for an in-process backend's attempts), gpu_hours and
    cpu_hours (count x elapsed), cpu_efficiency (TotalCPU / (Elapsed x AllocCPUS), as seff),
    mem_efficiency (MaxRSS / requested memory),
    failed (ended in a state other than COMPLETED) and retried (a later attempt exists).
    Times are parsed into datetimes.
    """
    import pandas as pd
    a = ledger.attempts_table(exp_ids)
    for col, values in zip(("gpus", "cpus", "nodes", "alloc_mem_mib"),
                           _per_distinct(a["alloc_tres"], _tres_numbers)):
        a[col] = values.astype(float)
    a["req_mem_mib"] = _mem_mib(a["req_mem"], a["cpus"], a["nodes"])
    rss = pd.to_numeric(a["max_rss"], errors="coerce")
    odd = rss.isna() & a["max_rss"].notna()            # "1234K" rather than MiB: rare
    a["max_rss_mib"] = rss.where(~odd, _mem_mib(a["max_rss"].where(odd)))
    for col in ("submit_time", "start_time", "end_time"):
        a[col] = _times(a[col])
    a["elapsed_s"] = pd.to_numeric(a["elapsed_s"], errors="coerce")
    a["total_cpu_s"] = pd.to_numeric(a["total_cpu_s"], errors="coerce")
    # A queue wait only where there is a queue: an in-process backend's task that waited for a
    # free slot here did not wait in one (backends.base: in_process).
    a["wait_s"] = (a["start_time"] - a["submit_time"]).dt.total_seconds().where(
        ~a["exp_id"].isin(_in_process_experiments(ledger, a["exp_id"].unique())))
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
        "failure_class": last["failure_class"], "gpus": integers_stay_integers(last["gpus"]),
        "cpus": integers_stay_integers(last["cpus"]),
        "cpu_efficiency": last["cpu_efficiency"], "mem_efficiency": last["mem_efficiency"],
        "max_rss_mib": last["max_rss_mib"], "req_mem_mib": last["req_mem_mib"],
    }).join(totals)
    table = runs.rename(columns={"n_attempts": "attempts"}).join(per_run, on=keys)
    # The sampler's seed ([sample] seed) of a sampled run; empty for grid and listed runs
    # (older ledgers stored a `seed` parameter there too: that is param.seed).
    table["sample_seed"] = integers_stay_integers(
        pd.to_numeric(table["seed"].where(table["source"] == "sample"), errors="coerce"))
    for col in ("gpu_hours", "cpu_hours", "gpu_hours_wasted", "cpu_hours_wasted"):
        table[col] = table[col].fillna(0.0)
    params = [c for c in table.columns if c.startswith("param.")]
    if metrics is not None:
        table = table.join(metrics)
    mcols = [c for c in table.columns if c.startswith("metric.")]
    return table[RUN_COLUMNS + params + mcols].reset_index(drop=True)


