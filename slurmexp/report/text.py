"""A built `Report` as text: terminal table, Markdown, JSON and CSV (HTML is report_html's).

Kept apart from report.py, which decides what the numbers are, so that how they are shown can
change without touching the accounting. The human formats (table, Markdown, HTML) share the
cell and summary texts made here, so a value reads the same in each; JSON and CSV carry the
raw values, whose names are a contract with scripts (docs/REPORT.md).
Speed matters at 100,000 runs: cells are formatted per column from plain lists, and the large
JSON tables are written by pandas. pandas is imported inside functions only.
"""
from __future__ import annotations

import io
import json
import math
import re
from typing import TYPE_CHECKING, Any, TextIO

from slurmexp import units
from slurmexp.report.model import finite_float

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from slurmexp.report.model import Report

SCHEMA_VERSION = 1          # of the JSON document
_DURATIONS = {"elapsed_s": "elapsed", "wait_s": "wait"}
_HUMAN_COLUMNS = [("state", "state"), ("reason", "reason"), ("attempts", "attempts"),
                  ("job_ids", "job ids"), ("node", "node"), ("partition", "partition"),
                  ("qos", "qos"), ("elapsed_s", "elapsed"), ("wait_s", "wait"),
                  ("exit_code", "exit"), ("gpu_hours", "GPU h")]


# --- values -----------------------------------------------------------------------------

def fmt_duration(seconds: Any) -> str:
    """Slurm's elapsed form: "H:MM:SS", "D-HH:MM:SS" from one day on; "" when unknown."""
    value = finite_float(seconds)
    if value is None:
        return ""
    sign = "-" if value < 0 else ""
    return sign + units.format_seconds(int(round(abs(value))), pad_hours=False)


def fmt_value(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return str(bool(value))
    if isinstance(value, float) or type(value).__name__.startswith("float"):
        value = float(value)
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.4g}"
    text = str(value)
    return "" if text in ("nan", "<NA>", "NaT") else text


def fmt_amount(value: float) -> str:
    """Totals for people: 170,912 rather than 1.709e+05; small ones to 3 digits."""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 100 else f"{value:.3g}"


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


# --- cells ------------------------------------------------------------------------------

def display_columns(report: Report, frame: pd.DataFrame) -> list[tuple[str, str]]:
    """(column, header) pairs a person reads, in reading order, for run-table rows."""
    cols = [("exp_id", "experiment")] if len(report.experiments) > 1 else []
    cols += [("run_id", "run")] + [(f"param.{p}", p) for p in report.params]
    cols += [c for c in _HUMAN_COLUMNS if c[0] != "gpu_hours" or frame[c[0]].any()]
    return cols + [(f"metric.{m}", m) for m in report.metrics]


def by_columns(report: Report) -> list[tuple[str, str]]:
    """(column, header) pairs of the `--by` table: "metric.loss.mean" reads "loss mean"."""
    cols = [("exp_id", "experiment")] if len(report.experiments) > 1 else []
    cols += [(f"param.{p}", p) for p in report.by] + [("n_runs", "runs")]
    return cols + [(c, c[7:].replace(".", " ")) for c in report.by_table.columns
                   if c.startswith("metric.")]


def _float_cells(values: list) -> list[str]:
    # fmt_value's rule for floats inlined into one loop: every float cell of a report is here.
    return ["" if v != v or v in (math.inf, -math.inf) else
            (str(int(v)) if v.is_integer() and abs(v) < 1e15 else f"{v:.4g}") for v in values]


def _duration_cells(values: list) -> list[str]:
    return [fmt_duration(v) if v == v and v is not None else "" for v in values]


def display_cells(frame: pd.DataFrame, columns: list[tuple[str, str]],
                  width: int | None = None) -> dict[str, list[str]]:
    """{header: cell texts} (durations as H:MM:SS, floats to 4 digits), for people.

    Plain lists, formatted per dtype: at 100,000 runs this is most of a text report's time.
    """
    from pandas import NA as pd_NA  # noqa: N812 - pandas' missing value
    from pandas.api.types import is_float_dtype, is_integer_dtype
    out = {}
    for col, header in columns:
        s = frame[col]
        if col in _DURATIONS:
            cells = _duration_cells(s.tolist())
        elif is_float_dtype(s):
            cells = _float_cells(s.tolist())
        elif is_integer_dtype(s):      # Int64 (integers_stay_integers) has NA: ""
            cells = ["" if v is None or v is pd_NA else str(v) for v in s.tolist()]
        else:
            cells = [fmt_value(v) for v in s.tolist()]
        if width:
            cells = [c if len(c) <= width else c[:width - 1] + "…" for c in cells]
        out[header] = cells
    return out


def _is_numeric_column(cells: list[str]) -> bool:
    sample = [c for c in cells[:200] if c]
    return bool(sample) and all(re.fullmatch(r"-?[\d.:e+-]+%?", c) for c in sample)


def text_table(cells: dict[str, list[str]]) -> str:
    if not cells or not next(iter(cells.values())):
        return "(none)\n"
    heads, cols = [], []
    for header, col in cells.items():
        width = max(len(header), max(map(len, col)))
        if _is_numeric_column(col):
            heads.append(header.rjust(width))
            cols.append([c.rjust(width) for c in col])
        else:
            heads.append(header.ljust(width))
            cols.append([c.ljust(width) for c in col])
    lines = ["  ".join(heads).rstrip(), "  ".join("-" * len(h) for h in heads)]
    lines += ["  ".join(row).rstrip() for row in zip(*cols)]
    return "\n".join(lines) + "\n"


def markdown_table(cells: dict[str, list[str]]) -> str:
    if not cells or not next(iter(cells.values())):
        return "(none)\n"
    def esc(text: str) -> str:    # a newline would end the table row: <br> renders as one
        return re.sub(r"\r\n|\r|\n", "<br>", text.replace("|", "\\|"))
    cols = [[esc(c) for c in col] for col in cells.values()]
    lines = ["| " + " | ".join(map(esc, cells)) + " |", "|" + "|".join("---" for _ in cells) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in zip(*cols)]
    return "\n".join(lines) + "\n"


# --- the summary ------------------------------------------------------------------------

def summary_lines(s: dict) -> list[tuple[str, str]]:
    """(label, value) pairs of one experiment's summary, shared by every human format."""
    def counts(d: dict) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(d.items(), key=lambda kv: -kv[1]))

    def hours(used: float, wasted: float) -> str:
        share = f" ({100 * wasted / used:.0f}%)" if used else ""
        return f"{fmt_amount(used)} used, {fmt_amount(wasted)} wasted{share}"

    retries = f", {s['retries']} retried" + (
        f" ({counts(s['retries_by_class'])})" if s["retries"] else "")
    eff = [f"CPU {_pct(s['cpu_efficiency'])}" if s["cpu_efficiency"] is not None else "",
           f"memory median {_pct(s['mem_efficiency_median'])}, max "
           f"{_pct(s['mem_efficiency_max'])}" if s["mem_efficiency_median"] is not None else ""]
    failures = "; ".join(
        f"{f['state']}" + (f"/{f['failure_class']}" if f["failure_class"] != f["state"] else "")
        + (f" ({f['reason']})" if f["reason"] else "") + f" x{f['attempts']}"
        for f in s["top_failures"])
    return [
        ("runs", f"{s['runs']}: {counts(s['runs_by_state'])}"),
        ("attempts", f"{s['attempts']}{retries}, {s['failed_attempts']} failed"),
        ("GPU hours", hours(s["gpu_hours"], s["gpu_hours_wasted"])),
        ("CPU hours", hours(s["cpu_hours"], s["cpu_hours_wasted"])),
        ("queue wait", f"median {fmt_duration(s['wait_s_median']) or '-'}, "
                       f"p95 {fmt_duration(s['wait_s_p95']) or '-'}"),
        ("wall time", f"median {fmt_duration(s['elapsed_s_median']) or '-'} (completed), "
                      f"max {fmt_duration(s['elapsed_s_max']) or '-'}, "
                      f"span {fmt_duration(s['span_s']) or '-'}"),
        ("efficiency", ", ".join(e for e in eff if e) or "-"),
        ("top failures", failures or "-"),
        ("metrics", f"{s['runs_with_metrics']} of {s['runs']} runs"),
    ]


def best_line(report: Report, exp_id: str) -> str | None:
    if report.best is None:
        return None
    direction = "lowest" if report.minimize else "highest"
    if report.minimize_guessed:
        direction += f", guessed; use --{'max' if report.minimize else 'min'} to flip"
    rows = report.best[report.best["exp_id"] == exp_id]
    if rows.empty:
        return f"no COMPLETED run has {report.best_metric}"
    row = rows.iloc[0]
    params = ", ".join(f"{p}={fmt_value(row[f'param.{p}'])}" for p in report.params
                       if fmt_value(row[f"param.{p}"]))
    value = fmt_value(row[f"metric.{report.best_metric}"])
    return f"{row['run_id']} {report.best_metric}={value} ({direction}) {params}".rstrip()


def experiment_rows(report: Report, s: dict) -> list[tuple[str, str]]:
    """(label, value) pairs of one experiment's block: what it is, its summary, its best run."""
    meta = ", ".join(str(x) for x in (s["name"], s["backend"], s["cluster"]) if x)
    from slurmexp.timeutil import display_time
    rows = [("experiment", f"{meta}; state {s['state']}; created {display_time(s['created'])}")]
    rows += summary_lines(s)
    line = best_line(report, s["exp_id"])
    if line:
        rows.append(("best", line))
    return rows


# --- the formats ------------------------------------------------------------------------

# How a terminal table is fitted (report.fit): ids and states whole; parameters and metrics
# left out last, then wall time, GPU hours and exit; qos, node and partition first.
_FIT = {"exp_id": (True, None, 0), "run_id": (True, None, 0), "state": (True, None, 0),
        "reason": (False, 12, 1), "attempts": (False, None, 3), "job_ids": (False, 9, 2),
        "node": (False, None, 1), "partition": (False, None, 1), "qos": (False, None, 0),
        "elapsed_s": (False, None, 4), "wait_s": (False, None, 2),
        "exit_code": (False, None, 3), "gpu_hours": (False, None, 4)}
_LEFT_OUT_HINT = "pick them with --columns, or use --format csv/json/html"


def pick_columns(columns: list[tuple[str, str]], names: list[str] | None
                 ) -> list[tuple[str, str]]:
    """The (column, header) pairs `--columns` names, in its order, after the id columns.
    A name is a header ("lr", "job ids"), a column ("param.lr", "job_ids") or either form
    of a metric ("loss", "metric.loss")."""
    if not names:
        return columns
    from slurmexp.errors import Problem, SlurmexpError
    index = {}
    for col, header in columns:
        index.setdefault(col, (col, header))
        index.setdefault(header, (col, header))
    missing = [n for n in names if n not in index]
    if missing:
        known = ", ".join(h for _, h in columns)
        raise SlurmexpError(f"unknown column {', '.join(map(repr, missing))}", [Problem(
            "", "--columns", f"the run table has no column {', '.join(missing)}",
            fix=f"pick from: {known}")])
    ids = [c for c in columns if c[0] in ("exp_id", "run_id")]
    picked = ids + [index[n] for n in names if index[n] not in ids]
    return list(dict.fromkeys(picked))


def fitted_table(frame: pd.DataFrame, columns: list[tuple[str, str]], width: int | None,
                 picked: bool = False) -> str:
    """`frame` as a terminal table fitted to `width` (report.fit); picked columns (from
    --columns) are all kept: the user asked for them."""
    from slurmexp.report.fit import Column, render
    cells = display_cells(frame, columns)
    cols = []
    for col, header in columns:
        keep, shrink, priority = _FIT.get(col, (False, 8 if col.startswith("param.") else None,
                                               6 if col.startswith("param.") else 5))
        cols.append(Column(header, cells[header], keep=keep or picked, shrink_to=shrink,
                           priority=priority))
    return render(cols, width, left_out_hint=_LEFT_OUT_HINT)


def _sections(report: Report, table_fn, heading, run_table_fn=None) -> list[str]:
    out = []
    for s in report.experiments:
        out.append(heading(1, f"Experiment {s['exp_id']}"))
        out.append(table_fn(experiment_rows(report, s)))
    if report.by_table is not None:
        out.append(heading(2, f"Metrics by {', '.join(report.by)} "
                              "(mean, std, n over COMPLETED runs)"))
        out.append((run_table_fn or _cells_table(table_fn))(report.by_table,
                                                            by_columns(report)))
    out.append(heading(2, f"Runs ({len(report.runs)})"))
    columns = pick_columns(display_columns(report, report.runs), report.columns)
    out.append((run_table_fn or _cells_table(table_fn))(report.runs, columns))
    return out


def _cells_table(table_fn):
    return lambda frame, columns: table_fn(display_cells(frame, columns, width=60))


def render_table(report: Report, width: int | None = None) -> str:
    """The report for a terminal `width` columns wide (default: $COLUMNS or the terminal's)."""
    def kv(rows):
        return "".join(f"  {k:<13}{v}\n" for k, v in rows)
    return "\n".join(_sections(
        report, kv, lambda level, text: text,
        lambda frame, columns: fitted_table(frame, columns, width, bool(report.columns))))


def render_markdown(report: Report) -> str:
    def table(rows):
        if isinstance(rows, list):
            rows = {"": [k for k, _ in rows], "value": [v for _, v in rows]}
        return markdown_table(rows)
    head = f"# slurmexp report\n\nGenerated {report.generated}.\n"
    return head + "\n" + "\n".join(
        _sections(report, table, lambda level, text: "#" * (level + 1) + f" {text}\n"))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def render_json(report: Report) -> str:
    """One JSON document; the large tables are written by pandas (C speed) and spliced in."""
    def records(frame: pd.DataFrame | None) -> str:
        if frame is None:
            return "null"
        return frame.to_json(orient="records", double_precision=15, force_ascii=False)

    head = _jsonable({
        "schema_version": SCHEMA_VERSION, "generated": report.generated,
        "params": report.params, "metrics": report.metrics, "by": report.by,
        "best_metric": report.best_metric, "minimize": report.minimize,
        "experiments": report.experiments})
    text = json.dumps(head, ensure_ascii=False)[:-1]
    return (f'{text}, "runs": {records(report.runs)}, "by_table": {records(report.by_table)}, '
            f'"best": {records(report.best)}}}\n')


# A spreadsheet reads a cell that starts with one of these as a formula (OWASP's list); a
# leading apostrophe makes it text, and the spreadsheet does not show the apostrophe.
_FORMULA_START = re.compile(r"[=+\-@\t\r]")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def _formula_like(value: Any) -> bool:
    return (isinstance(value, str) and _FORMULA_START.match(value) is not None
            and _PLAIN_NUMBER.fullmatch(value) is None)


def excel_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with every text cell that a spreadsheet would run as a formula prefixed with '.

    Only text cells change: numeric columns, and numbers in columns of mixed type, stay as
    they are (a negative number is a number, not a formula), as does text that is a plain
    number ("-2", "+1e-3"), which a spreadsheet reads as that number and nothing else.
    """
    from pandas.api.types import is_object_dtype, is_string_dtype
    out = frame
    for col in frame.columns:
        s = frame[col]
        if not (is_object_dtype(s) or is_string_dtype(s)):
            continue
        values = s.tolist()
        risky = [_formula_like(v) for v in values]
        if any(risky):
            if out is frame:
                out = frame.copy()
            out[col] = _object_series([f"'{v}" if r else v for v, r in zip(values, risky)], s)
    return out


def _object_series(values: list, like: pd.Series) -> pd.Series:
    import pandas as pd
    return pd.Series(values, index=like.index, dtype=object, name=like.name)


def render_csv(report: Report, *, excel_safe_cells: bool = False) -> str:
    """One table: the `--by` aggregate when asked for, else the best runs when `--best` was
    given, else the run table. Exact by default (for machines); `excel_safe_cells` for
    people who open it in a spreadsheet (see excel_safe)."""
    out = io.StringIO()
    write_csv(report, out, excel_safe_cells=excel_safe_cells)
    return out.getvalue()


def write_csv(report: Report, out: TextIO, *, excel_safe_cells: bool = False) -> None:
    """render_csv's text written to `out` in chunks of rows as they are made (csv_out)."""
    from slurmexp.report.csv_out import write_csv as write_frame
    frame = report.by_table if report.by_table is not None else (
        report.best if report.best is not None else report.runs)
    if excel_safe_cells:
        frame = excel_safe(frame)
    write_frame(frame, out)
