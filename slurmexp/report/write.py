"""`slurmexp report`'s one library call: which path builds the report, then writing it.

The run table's CSV (no --by, --best, --columns or --metric) is written straight from the
ledger's rows by `report.csv_rows`, without importing pandas; it declines (before writing a
byte) the rare ledgers it cannot reproduce exactly, and those, like every other format, go
through the pandas frames of `report.build`.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:  # pragma: no cover
    from slurmexp.ledger import Ledger


def write_report(ledger: Ledger, refs: Sequence[str] | None, fmt: str, out: TextIO, *,
                 by: str | None = None, best: str | None = None, minimize: bool | None = None,
                 columns: str | None = None, excel_safe: bool = False,
                 metrics: Sequence[str] = ()) -> None:
    if fmt == "csv" and not (by or best or columns or metrics):
        from slurmexp.report.csv_rows import write_run_csv

        if write_run_csv(ledger, refs, out, excel_safe=excel_safe):
            return
    from slurmexp.report.build import build_report, render_report

    built = build_report(ledger, refs, by=by, best=best, minimize=minimize)
    render_report(built, fmt, excel_safe=excel_safe, columns=columns, metrics=metrics, out=out)
