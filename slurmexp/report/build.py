"""Building a report from the frames (summary, `--by`, `--best`) and rendering it in a format.
"""
from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence, TextIO

from slurmexp.errors import Problem, SlurmexpError
from slurmexp.report.frames import attempts_frame, run_table, runs_frame
from slurmexp.report.metrics_files import _metrics_frame, stored_summaries
from slurmexp.report.model import FORMATS, Report, finite_float
from slurmexp.report.refs import resolve_experiments

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from slurmexp.ledger import Ledger


_MINIMIZE_WORDS = frozenset({
    "loss", "error", "err", "mse", "mae", "rmse", "nll", "perplexity", "ppl", "wer", "cer",
    "regret", "latency", "time", "seconds", "bpc", "bpd", "cost"})
# --- summary ----------------------------------------------------------------------------


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


def continuous_params(exps: Sequence[dict]) -> list[str]:
    """The parameters a [sample] table draws from a continuous distribution (uniform,
    loguniform) in the sweep copy of any of `exps`: plotted as points, never as a line through
    means of values that hardly repeat. An unreadable copy names none."""
    import tomllib
    out: list[str] = []
    for exp in exps:
        try:
            data = tomllib.loads(Path(exp.get("sweep_copy_path") or "").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue
        sample = data.get("sample") if isinstance(data.get("sample"), dict) else {}
        for name, dist in (sample.get("params") or {}).items():
            if isinstance(dist, dict) and dist.get("dist") in ("uniform", "loguniform") and name not in out:
                out.append(name)
    return out


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
                 workers: int | None = None, from_files: bool = False) -> Report:
    """Everything a report shows, for experiments `exp_ids` (ids or unique prefixes; none =
    all). `by`: parameter names ("a,b" or a list) for aggregate_by(); `best`: a metric name,
    best = lowest when `minimize`, highest when not, guessed from the name when None.
    Metrics are the summaries reconcile stored when a run's newest attempt ended, and the
    files for the other runs (`from_files`: every run's files, as before schema 7; the same
    values). `metrics=False` reads neither; `workers` threads read the files (None: chosen by
    how fast the first reads are)."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    ids = resolve_experiments(ledger, exp_ids)
    exps = {e["exp_id"]: e for e in ledger.experiments()}
    runs = runs_frame(ledger, ids)
    attempts = attempts_frame(ledger, ids)
    timings["ledger_s"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    stored = None if from_files or not metrics else stored_summaries(ledger, runs, ids)
    mframe = _metrics_frame(runs["run_dir"], workers, stored) if metrics else None
    timings["metrics_s"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    table = run_table(runs, attempts, mframe)
    params = [c[6:] for c in table.columns if c.startswith("param.")]
    metric_names = [c[7:] for c in table.columns if c.startswith("metric.")]
    by_names = _split(by)
    twice = sorted({n for n in by_names if by_names.count(n) > 1})
    if twice:
        unique = ",".join(dict.fromkeys(by_names))
        raise SlurmexpError(f"--by names {', '.join(map(repr, twice))} more than once", [Problem(
            "", "--by", f"parameter {', '.join(twice)} given more than once", fix=f"--by {unique}")])
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
                        timespec="seconds"), timings=timings,
                    continuous=continuous_params([exps[e] for e in ids]))
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

def render_report(report: Report, fmt: str = "table", *, excel_safe: bool = False,
                  columns: str | Sequence[str] | None = None, width: int | None = None,
                  metrics: str | Sequence[str] | None = None, out: TextIO | None = None,
                  **options: Any) -> str | None:
    """The report as text in `fmt` (one of FORMATS): HTML from report_html, the others from
    report_format. `excel_safe` (CSV only) neutralises cells a spreadsheet would run as
    formulas. `columns` (table and Markdown: names or "a,b") picks the run table's columns;
    `width` is the terminal's (table only; default $COLUMNS); `metrics` (HTML only) the metrics
    to plot (default: every metric). Options go to the HTML renderer (`max_rows`).
    With `out` the text is written there instead, and None returned: CSV in chunks of rows as
    they are made; nothing is written before the options are checked."""
    from slurmexp.report import text as report_format
    if excel_safe and fmt != "csv":
        raise SlurmexpError("--excel-safe is for --format csv", [Problem(
            "", "--excel-safe", f"--format {fmt} is not opened by spreadsheets; JSON and the "
            "other formats stay exact", fix="use --format csv --excel-safe, or drop --excel-safe")])
    picked = _split(columns)
    if picked and fmt not in ("table", "markdown"):
        raise SlurmexpError("--columns is for --format table or markdown", [Problem(
            "", "--columns", f"--format {fmt} always has every column (its names are a "
            "contract with scripts, docs/REPORT.md)",
            fix="drop --columns, or use --format table or --format markdown")])
    report.columns = picked or None
    plotted = [m.removeprefix("metric.") for m in _split(metrics)]
    if plotted and fmt != "html":
        raise SlurmexpError("--metric is for --format html", [Problem(
            "", "--metric", f"--format {fmt} has no plots; it always has every metric",
            fix="use --format html --metric NAME, or drop --metric")])
    _check_names(plotted, report.metrics, "metric", "--metric")
    report.plot_metrics = plotted or None
    if fmt == "csv" and out is not None:
        report_format.write_csv(report, out, excel_safe_cells=excel_safe)
        return None
    if out is not None:
        out.write(render_report(report, fmt, excel_safe=excel_safe, columns=columns,
                                width=width, metrics=metrics, **options))
        return None
    if fmt == "csv":
        return report_format.render_csv(report, excel_safe_cells=excel_safe)
    if fmt == "json":
        return report_format.render_json(report)
    if fmt == "table":
        return report_format.render_table(report, width)
    if fmt == "markdown":
        return report_format.render_markdown(report)
    if fmt == "html":
        from slurmexp.report.html_page import render_html
        return render_html(report, **options)
    raise SlurmexpError(f"unknown report format {fmt!r}", [Problem(
        "", "--format", f"{fmt!r} is not a report format", fix=f"use one of {', '.join(FORMATS)}")])
