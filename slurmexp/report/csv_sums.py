"""The run table's per-run sums of a float column (GPU and CPU hours, used and wasted) as
pandas' `groupby(...).sum()` makes them, to the last bit: the groups of the attempts table are
consecutive, so pandas adds each with numpy's `add.reduceat` (the first value plus numpy's
pairwise sum of the rest), unless the column has a NaN anywhere, when its Cython kernel adds
every group with Kahan's compensated sum. `tests/test_report_csv.py` holds them to pandas.
"""
from __future__ import annotations

import math


def _pairwise(xs: list[float]) -> float:
    """numpy's pairwise sum of a contiguous float64 run (what `add.reduceat` adds after a
    segment's first value)."""
    n = len(xs)
    if n < 8:
        res = -0.0
        for v in xs:
            res += v
        return res
    if n <= 128:
        r = xs[:8]
        i = 8
        while i < n - n % 8:
            for k in range(8):
                r[k] += xs[i + k]
            i += 8
        res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
        for v in xs[i:]:
            res += v
        return res
    half = n // 2
    half -= half % 8
    return _pairwise(xs[:half]) + _pairwise(xs[half:])


def _kahan(xs: list[float]) -> float:
    """pandas' group_sum (Cython), used for the whole column when it has a NaN."""
    total = comp = 0.0
    for v in xs:
        if v != v:
            continue
        y = v - comp
        t = total + y
        comp = t - total - y
        if not math.isfinite(comp):
            comp = 0.0
        total = t
    return total


def run_sums(values: list[float], last: list[int], multi: list[tuple[int, int, int]]
          ) -> list[float]:
    """Each run's sum of its attempts' `values` (run_table's groupby sum), 0.0 without any:
    numpy's `add.reduceat` of each run's attempts (one attempt: its value), or, when the
    column has a NaN anywhere, pandas' Kahan sum of every run."""
    total = sum(values)
    if total != total and any(v != v for v in values):
        out = [0.0 if k < 0 else _kahan([values[k]]) for k in last]
        for run, i, j in multi:
            out[run] = _kahan(values[i:j])
        return out
    out = [values[k] if k >= 0 else 0.0 for k in last]
    for run, i, j in multi:
        out[run] = values[i] + _pairwise(values[i + 1:j])
    return out
