"""The HTML report: one self-contained file with the tables and plots, for people.

Self-contained because it is mailed, attached to issues and opened on air-gapped clusters: no
external URL, no CDN, no web font. The plots are inline SVG (svg_plots).
Large sweeps stay readable and small: plots sample points and bin timelines, and the run table
shows at most `max_rows` rows (the CSV has them all).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from slurmexp.report.svg_plots import _e, metric_vs_param_svg, state_bar_svg, timeline_svg
from slurmexp.report.text import by_columns, display_cells, display_columns, experiment_rows

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from slurmexp.report.model import Report

MAX_ROWS = 2000
MAX_PLOTS = 60          # metric plots per page; --metric picks when there would be more

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI","DejaVu Sans",sans-serif;margin:24px;
color:#212121;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.meta{color:#666;margin:0 0 12px}
.row{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
table{border-collapse:collapse;font-size:12.5px}
th,td{padding:3px 8px;border-bottom:1px solid #eee;text-align:left;vertical-align:top;
white-space:nowrap}
td.n{text-align:right;font-variant-numeric:tabular-nums}
th{background:#f5f5f5;position:sticky;top:0}
table.sortable th{cursor:pointer}table.sortable th:hover{background:#e8eaf6}
table.kv th{position:static;background:none;color:#555;font-weight:600}
table.kv td{white-space:normal;max-width:640px}
tr.s-FAILED td,tr.s-TIMEOUT td,tr.s-OUT_OF_MEMORY td,tr.s-NODE_FAIL td{background:#fff5f5}
.tbl{max-height:720px;overflow:auto;border:1px solid #eee}
figure{margin:0}figcaption{font-size:12px;color:#555}
svg text{font:11px system-ui,"DejaVu Sans",sans-serif;fill:#424242}
.note{color:#666;font-size:12px}
"""

_JS = """
document.querySelectorAll('table.sortable th').forEach(function (th, i) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0], asc = th.dataset.asc !== '1';
    th.dataset.asc = asc ? '1' : '0';
    function key(r) { var c = r.cells[i], v = c.dataset.v !== undefined ? c.dataset.v : c.textContent;
      var n = parseFloat(v); return (v === '' || isNaN(n)) ? [1, v] : [0, n]; }
    Array.from(body.rows).map(function (r) { return [key(r), r]; }).sort(function (a, b) {
      var x = a[0], y = b[0], d = x[0] - y[0] || (x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0);
      return asc ? d : -d; }).forEach(function (p) { body.appendChild(p[1]); });
  });
});
"""


# --- tables -----------------------------------------------------------------------------

def _kv_table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


def _table(frame: pd.DataFrame, columns: list[tuple[str, str]]) -> str:
    """A sortable table; numeric cells carry their raw value so they sort as numbers."""
    from pandas.api.types import is_bool_dtype, is_numeric_dtype
    cells = display_cells(frame, columns, width=80)
    heads = "".join(f"<th>{_e(h)}</th>" for _, h in columns)
    cols = []
    for col, header in columns:
        texts = [_e(t) for t in cells[header]]
        raw = frame[col]
        if is_numeric_dtype(raw) and not is_bool_dtype(raw):
            cols.append([f'<td class="n" data-v="{"" if v != v else v}">{t}</td>'
                         for v, t in zip(raw.tolist(), texts)])
        else:
            cols.append([f"<td>{t}</td>" for t in texts])
    states = frame["state"].tolist() if "state" in frame.columns else [""] * len(frame)
    rows = [f'<tr class="s-{_e(s)}">{"".join(r)}</tr>' for s, *r in zip(states, *cols)]
    return (f'<div class="tbl"><table class="sortable"><thead><tr>{heads}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


# --- the page ---------------------------------------------------------------------------

def _plot_metrics(report: Report) -> list[str]:
    """--metric's metrics, else every numeric metric (--best's first)."""
    from pandas.api.types import is_bool_dtype, is_numeric_dtype
    if report.plot_metrics:
        return list(report.plot_metrics)
    numeric = [m for m in report.metrics
               if is_numeric_dtype(col := report.runs[f"metric.{m}"]) and not is_bool_dtype(col)
               and col.notna().any()]
    if report.best_metric in numeric:
        numeric.remove(report.best_metric)
        numeric.insert(0, report.best_metric)
    return numeric


def _metric_plots(report: Report) -> tuple[list[str], str]:
    """One figure per (metric, parameter) that has something to show, at most MAX_PLOTS,
    and a note when some were left out."""
    plots, left_out = [], 0
    metrics = _plot_metrics(report)
    for metric in metrics:
        for p in report.params:
            svg = metric_vs_param_svg(report.runs, p, metric, scatter=p in report.continuous)
            if not svg:
                continue
            if len(plots) < MAX_PLOTS:
                plots.append(f"<figure>{svg}</figure>")
            else:
                left_out += 1
    note = (f'<p class="note">{left_out} more plots left out ({len(metrics)} metrics x '
            f"{len(report.params)} parameters); pick metrics with <code>--metric NAME</code>.</p>"
            if left_out else "")
    return plots, note


def render_html(report: Report, max_rows: int = MAX_ROWS) -> str:
    runs = report.runs
    ids = [s["exp_id"] for s in report.experiments]
    out = [f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
           f'<meta name="viewport" content="width=device-width, initial-scale=1">'
           f'<title>slurmexp report: {_e(", ".join(ids))}</title><style>{_CSS}</style></head>'
           f'<body><h1>slurmexp report</h1><p class="meta">{_e(", ".join(ids))} · generated '
           f'{_e(report.generated)} · {len(runs)} runs, {len(report.attempts)} attempts</p>']
    for s in report.experiments:
        rows = experiment_rows(report, s)
        out.append(f'<h2>Experiment {_e(s["exp_id"])}</h2><div class="row">{_kv_table(rows)}'
                   f'<figure>{state_bar_svg(s["runs_by_state"])}<figcaption>runs by state'
                   f'</figcaption></figure></div>')

    plots, note = _metric_plots(report)
    timeline = timeline_svg(report.attempts)
    if plots or timeline:
        out.append('<h2>Plots</h2><div class="row">' + "".join(plots) + f"</div>{note}")
        if timeline:
            out.append(f'<div class="row"><figure>{timeline}</figure></div>')

    if report.best is not None and len(report.best):
        direction = "lowest" if report.minimize else "highest"
        out.append(f"<h2>Best run by {_e(report.best_metric)} ({direction})</h2>")
        out.append(_table(report.best, display_columns(report, report.best)))
    if report.by_table is not None:
        out.append(f"<h2>Metrics by {_e(', '.join(report.by))}</h2><p class=\"note\">mean, "
                   f"sample std and n over COMPLETED runs, averaged over the other parameters"
                   f"</p>{_table(report.by_table, by_columns(report))}")

    shown = runs.head(max_rows)
    note = (f'<p class="note">Showing the first {len(shown)} of {len(runs)} runs; '
            f"<code>--format csv</code> has them all.</p>" if len(shown) < len(runs) else "")
    out.append(f"<h2>Runs ({len(runs)})</h2>{note}"
               f"{_table(shown, display_columns(report, shown))}")
    out.append(f"<script>{_JS}</script></body></html>\n")
    return "".join(out)
