"""The SVG plots of the HTML report: a state bar, a metric against a parameter, a timeline.

Drawn here as inline SVG (a few dozen lines per plot) rather than with matplotlib, which would be
a heavy dependency for four charts. Large sweeps stay readable and small: plots sample points
and bin timelines.
"""
from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Any

from slurmexp.report.text import fmt_duration, fmt_value

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

MAX_POINTS = 1500          # scatter points drawn per plot; means use every run
MAX_MEANS = 30             # distinct parameter values up to which means are drawn
GANTT_MAX = 300            # more attempts than this: a binned "running attempts" chart
STATE_COLOURS = {
    "COMPLETED": "#2e7d32", "FAILED": "#c62828", "TIMEOUT": "#ef6c00",
    "OUT_OF_MEMORY": "#6a1b9a", "NODE_FAIL": "#795548", "CANCELLED": "#9e9e9e",
    "PREEMPTED": "#d81b60", "BOOT_FAIL": "#4e342e", "DEADLINE": "#ff8f00", "LOST": "#424242",
    "DEPENDENCY_FAILED": "#9e9d24",
    "RUNNING": "#1565c0", "PENDING": "#90caf9", "SUBMITTED": "#b0bec5", "PLANNED": "#e0e0e0",
    "REQUEUED": "#4fc3f7", "SUSPENDED": "#ffd54f", "UNKNOWN": "#616161",
}
PALETTE = ["#1565c0", "#ef6c00", "#2e7d32", "#6a1b9a", "#c62828", "#00838f", "#5d4037"]


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _f(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


# --- svg helpers ------------------------------------------------------------------------

def _ticks(lo: float, hi: float, n: int = 5, integer: bool = False) -> list[float]:
    """About `n` round ticks from lo to hi; whole numbers only when `integer`."""
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= step * m:
            step *= m
            break
    if integer:
        step = max(step, 1)      # 1, 2, 5 times a power of ten: whole from 1 on
    first = math.ceil(lo / step - 1e-9) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


class _Axis:
    """Maps data values to pixels, linearly or in log10."""

    def __init__(self, lo: float, hi: float, a: float, b: float, log: bool = False,
                 integer: bool = False):
        if log:
            lo, hi = math.log10(lo), math.log10(hi)
        if not hi > lo:
            lo, hi = lo - 0.5, hi + 0.5
        self.lo, self.hi, self.a, self.b, self.log = lo, hi, a, b, log
        self.integer = integer

    def __call__(self, v: float) -> float:
        if self.log:
            v = math.log10(v)
        return self.a + (v - self.lo) / (self.hi - self.lo) * (self.b - self.a)

    def ticks(self) -> list[float]:
        if self.log:
            return [10.0 ** k for k in range(math.ceil(self.lo - 1e-9), math.floor(self.hi) + 1)
                    if not self.integer or k >= 0]
        return [round(t) for t in _ticks(self.lo, self.hi, integer=True)] if self.integer \
            else _ticks(self.lo, self.hi)


def _svg(width: int, height: int, body: str, label: str) -> str:
    return (f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
            f'role="img" aria-label="{_e(label)}">{body}</svg>')


def _frame_axes(x0: float, y0: float, x1: float, y1: float) -> str:
    return (f'<line x1="{x0}" y1="{y1}" x2="{x1}" y2="{y1}" stroke="#9e9e9e"/>'
            f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#9e9e9e"/>')


def _legend(items: list[tuple[str, str]], x: float, y: float,
            width: float = 10_000) -> tuple[str, int]:
    """Colour keys left to right, wrapped at `width`; returns the SVG and the rows used."""
    out, pos, rows = [], x, 1
    for label, colour in items:
        size = 26 + 7.2 * len(label)
        if pos > x and pos + size > x + width:
            pos, y, rows = x, y + 16, rows + 1
        out.append(f'<rect x="{_f(pos)}" y="{y - 9}" width="10" height="10" fill="{colour}"/>'
                   f'<text x="{_f(pos + 14)}" y="{y}">{_e(label)}</text>')
        pos += size
    return "".join(out), rows


# --- plots ------------------------------------------------------------------------------

def state_bar_svg(counts: dict[str, int]) -> str:
    """One stacked bar: how many runs are in each state."""
    total = sum(counts.values()) or 1
    width, x = 420, 10.0
    parts = []
    ordered = sorted(counts.items(), key=lambda kv: list(STATE_COLOURS).index(kv[0])
                     if kv[0] in STATE_COLOURS else 99)
    for state, n in ordered:
        w = (width - 20) * n / total
        parts.append(f'<rect x="{_f(x)}" y="8" width="{_f(max(w, 1))}" height="22" '
                     f'fill="{STATE_COLOURS.get(state, "#616161")}"><title>{_e(state)}: {n}'
                     f'</title></rect>')
        x += w
    legend, rows = _legend([(f"{s} {n}", STATE_COLOURS.get(s, "#616161")) for s, n in ordered],
                           10, 50, width - 20)
    return _svg(width, 44 + 16 * rows, "".join(parts) + legend, "runs by state")


def metric_vs_param_svg(table: pd.DataFrame, param: str, metric: str, *,
                        scatter: bool = False) -> str | None:
    """The metric of every COMPLETED run (a sample when there are many) against one parameter,
    with the mean (and one standard deviation) at each parameter value when there are few.
    `scatter` (a parameter sampled from a continuous distribution): the points only, no line
    through means of values that do not repeat. An integer parameter gets whole-number ticks."""
    import pandas as pd
    from pandas.api.types import is_bool_dtype, is_integer_dtype, is_numeric_dtype
    pcol, mcol = f"param.{param}", f"metric.{metric}"
    y = pd.to_numeric(table[mcol], errors="coerce").where(table["state"] == "COMPLETED")
    keep = y.notna() & table[pcol].notna()
    x, y = table.loc[keep, pcol], y[keep].astype(float)
    if x.nunique() < 2:
        return None
    numeric = is_numeric_dtype(x) and not is_bool_dtype(x)
    width, height, left, right, top, bottom = 460, 300, 58, 16, 26, 44
    if numeric:
        xv = x.astype(float)
        log = bool((xv > 0).all() and xv.max() / xv.min() >= 50)
        ax = _Axis(float(xv.min()), float(xv.max()), left + 10, width - right - 10, log,
                   integer=is_integer_dtype(x))
        px = xv.map(ax)
        xticks = [(ax(t), fmt_value(t)) for t in ax.ticks()]
    else:
        cats = sorted(x.astype(str).unique())
        if len(cats) > 40:
            return None
        slot = (width - left - right) / len(cats)
        where = {c: left + slot * (i + 0.5) for i, c in enumerate(cats)}
        xv = x.astype(str)
        px = xv.map(where)
        xticks = [(where[c], c[:12]) for c in cats]
    # One series per experiment, so that two sweeps in one report are not pooled.
    exps = table.loc[keep, "exp_id"]
    names = list(dict.fromkeys(exps))
    series = []
    for i, name in enumerate(names):
        mask = exps == name
        stats = y[mask].groupby(xv[mask]).agg(["mean", "std"]).dropna(subset=["mean"])
        if len(stats) > MAX_MEANS or scatter:   # means over a seed or a random search: noise
            stats = stats.iloc[:0]
        colours = ("#1565c0", "#ef6c00") if len(names) == 1 else (PALETTE[i % len(PALETTE)],) * 2
        series.append((name, mask, stats, *colours))
    lows, highs = [float(y.min())], [float(y.max())]
    for _, _, stats, _, _ in series:
        spread = stats["std"].fillna(0.0)
        lows += list(stats["mean"] - spread)
        highs += list(stats["mean"] + spread)
    ay = _Axis(min(lows), max(highs), height - bottom - 6, top + 6)
    body = [_frame_axes(left, top, width - right, height - bottom)]
    for t in ay.ticks():
        py = ay(t)
        body.append(f'<line x1="{left}" x2="{width - right}" y1="{_f(py)}" y2="{_f(py)}" '
                    f'stroke="#eeeeee"/><text x="{left - 6}" y="{_f(py + 4)}" '
                    f'text-anchor="end">{_e(fmt_value(t))}</text>')
    for pxv, label in xticks:
        body.append(f'<text x="{_f(pxv)}" y="{height - bottom + 16}" text-anchor="middle">'
                    f'{_e(label)}</text>')
    place = ax if numeric else where.__getitem__
    per_series = max(MAX_POINTS // len(series), 100)
    for _name, mask, stats, dot, mean in series:
        sel = px[mask]
        sample = sel.index if len(sel) <= per_series else sel.sample(
            per_series, random_state=0).index
        for i, idx in enumerate(sample):
            jitter = 0 if numeric else (i % 9 - 4) * 2.5
            body.append(f'<circle cx="{_f(px[idx] + jitter)}" cy="{_f(ay(y[idx]))}" r="3" '
                        f'fill="{dot}" fill-opacity="{0.55 if len(series) == 1 else 0.35}"/>')
        pts = sorted(zip(map(place, stats.index), stats["mean"], stats["std"]))
        for mx, my, sd in pts:
            if sd == sd and sd > 0:
                body.append(f'<line x1="{_f(mx)}" x2="{_f(mx)}" y1="{_f(ay(my - sd))}" '
                            f'y2="{_f(ay(my + sd))}" stroke="{mean}" stroke-width="2"/>')
        if pts:
            line = " ".join(f"{_f(mx)},{_f(ay(my))}" for mx, my, _ in pts)
            body.append(f'<polyline points="{line}" fill="none" stroke="{mean}" '
                        f'stroke-width="2"/>')
        body += [f'<circle cx="{_f(mx)}" cy="{_f(ay(my))}" r="4" fill="{mean}"/>'
                 for mx, my, _ in pts]
    body.append(f'<text x="{left}" y="16" font-weight="600">{_e(metric)} vs {_e(param)}'
                f'{" (log x)" if numeric and log else ""}</text>')
    body.append(f'<text x="{(left + width - right) / 2}" y="{height - 8}" '
                f'text-anchor="middle">{_e(param)}</text>')
    if len(series) == 1:
        keys = [("run", "#1565c0")] + ([("mean ± std", "#ef6c00")] if len(series[0][2]) else [])
        body.append(_legend(keys, width - 190, 16)[0])
    else:
        legend, rows = _legend([(name, dot) for name, _, _, dot, _ in series], left,
                               height + 10, width - left)
        body.append(legend)
        height += 16 * rows + 4
    return _svg(width, height, "".join(body), f"{metric} against {param}")


def timeline_svg(attempts: pd.DataFrame) -> str | None:
    """When attempts ran, coloured by how they ended: one bar per attempt for small sweeps,
    else the number of attempts running at each moment, stacked by state."""
    import numpy as np
    a = attempts[attempts["start_time"].notna()]
    if a.empty:
        return None
    t0 = a["start_time"].min()
    start = (a["start_time"] - t0).dt.total_seconds().to_numpy()
    end_t = (a["end_time"] - t0).dt.total_seconds()
    horizon = float(np.nanmax([end_t.max(), start.max()]))
    end = end_t.fillna(horizon).to_numpy()      # still running: up to the latest known time
    span = max(horizon, 1.0)
    width, left, right, top = 900, 60, 16, 26
    states = [s for s in STATE_COLOURS if s in set(a["state"])] + sorted(
        set(a["state"]) - set(STATE_COLOURS))
    body: list[str] = []
    if len(a) <= GANTT_MAX:
        row = max(2.0, min(14.0, 320 / len(a)))
        plot_h = row * len(a)
        height = int(top + plot_h + 52)
        ax = _Axis(0, span, left, width - right)
        order = np.argsort(start, kind="stable")
        labels = a["job_key"].astype(str).to_numpy()
        for i, k in enumerate(order):
            st = a["state"].iloc[k]
            x0, x1 = ax(start[k]), ax(end[k])
            body.append(f'<rect x="{_f(x0)}" y="{_f(top + i * row)}" width="{_f(max(x1 - x0, 1))}"'
                        f' height="{_f(max(row - 1, 1))}" fill="{STATE_COLOURS.get(st, "#616161")}">'
                        f'<title>{_e(labels[k])} {_e(st)} {fmt_duration(end[k] - start[k])}'
                        f'</title></rect>')
        title = "attempts over time (one bar per attempt)"
    else:
        plot_h, bins = 240.0, 180
        height = int(top + plot_h + 52)
        ax = _Axis(0, span, left, width - right)
        grid = np.linspace(0, span, bins)
        counts = {}
        for st in states:
            mask = (a["state"] == st).to_numpy()
            counts[st] = (np.searchsorted(np.sort(start[mask]), grid, side="right")
                          - np.searchsorted(np.sort(end[mask]), grid, side="right"))
        peak = max(1, int(np.max(sum(counts.values()))))
        ay = _Axis(0, peak, top + plot_h, top)
        base = np.zeros(bins)
        for st in states:
            upper = base + counts[st]
            pts = [f"{_f(ax(t))},{_f(ay(v))}" for t, v in zip(grid, upper)]
            pts += [f"{_f(ax(t))},{_f(ay(v))}" for t, v in zip(grid[::-1], base[::-1])]
            body.append(f'<polygon points="{" ".join(pts)}" fill="{STATE_COLOURS.get(st, "#616161")}"'
                        f'><title>{_e(st)}</title></polygon>')
            base = upper
        for t in ay.ticks():
            body.append(f'<text x="{left - 6}" y="{_f(ay(t) + 4)}" text-anchor="end">'
                        f'{fmt_value(t)}</text>')
        title = "attempts running over time, by final state"
    body.append(_frame_axes(left, top, width - right, top + plot_h))
    for t in _ticks(0, span, 6):
        when = (t0 + _timedelta(t)).strftime("%m-%d %H:%M")
        body.append(f'<text x="{_f(ax(t))}" y="{_f(top + plot_h + 16)}" text-anchor="middle">'
                    f'{when}</text>')
    body.append(f'<text x="{left}" y="16" font-weight="600">{_e(title)}</text>')
    body.append(_legend([(s, STATE_COLOURS.get(s, "#616161")) for s in states], left,
                        top + plot_h + 40)[0])
    return _svg(width, height, "".join(body), title)


def _timedelta(seconds: float):
    from datetime import timedelta
    return timedelta(seconds=float(seconds))
