"""A report table as CSV, written as a stream: the same bytes as pandas'
`DataFrame.to_csv(index=False, lineterminator="\\n")`, in chunks of rows written as they are
made, never the whole (35 MB at 100,000 runs) in one string.

pandas formats a cell as `str` of its value (a float64 column: numpy's shortest repr, which
is Python's `repr`), a missing value as "" and hands the cells to Python's csv writer
(QUOTE_MINIMAL). Doing that per column on plain lists, and formatting each distinct number of
a column once (a sweep's parameters, GPU counts, whole seconds repeat), is about twice as fast
as pandas' own writer (bench/README.md). A column of a type not handled here (datetimes,
categoricals, ...) sends the whole table through pandas, still in chunks of rows.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

CHUNK_ROWS = 5000
_QUOTED_IF = (",", '"', "\n", "\r")       # what makes the csv writer quote a cell (and more)


def _quote(cell: str) -> str:
    """A cell as Python's csv writer writes it (quoted, quotes doubled): the one rule."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([cell])
    return buf.getvalue()[:-1]


def _quoted(cells: list[str]) -> list[str]:
    joined = "\x00".join(cells)
    if not any(c in joined for c in _QUOTED_IF):
        return cells
    return [_quote(c) if any(q in c for q in _QUOTED_IF) else c for c in cells]


def _numbers(values, fmt: Callable[[Any], str]) -> Callable[[int, int], list[str]]:
    """Cells of a numpy number column; each distinct value (by its bits: -0.0 is not 0.0)
    formatted once when the column repeats values."""
    import numpy as np
    import pandas as pd
    n = len(values)
    if n >= 1000 and values.dtype.kind in "fiu" and values.dtype.itemsize == 8:
        codes, uniques = pd.factorize(np.ascontiguousarray(values).view(np.int64))
        if len(uniques) <= n // 4:
            table = np.array([fmt(v) for v in uniques.view(values.dtype).tolist()],
                             dtype=object)
            return lambda i, j: table[codes[i:j]].tolist()
    return lambda i, j: [fmt(v) for v in values[i:j].tolist()]


def _float_text(v: float) -> str:
    return "" if v != v else repr(v)       # NaN is missing; inf is "inf", as numpy writes it


def _column(s: pd.Series) -> Callable[[int, int], list[str]] | None:
    """A function of (start, stop) giving the column's cells there, or None when this module
    does not know how pandas writes its type."""
    import numpy as np
    import pandas as pd
    dtype = s.dtype
    if isinstance(dtype, np.dtype):
        if dtype.kind == "f" and dtype.itemsize == 8:
            return _numbers(s.to_numpy(), _float_text)
        if dtype.kind in "iub":
            return _numbers(s.to_numpy(), str)
        if dtype.kind != "O":
            return None
    elif not (isinstance(dtype, pd.StringDtype)
              or (dtype.kind in "iub" and hasattr(s.array, "_mask"))):   # Int64, boolean
        return None
    values = s.to_numpy(dtype=object)
    missing = s.isna().to_numpy()

    def cells(i: int, j: int) -> list[str]:
        part = values[i:j].tolist()
        if missing[i:j].any():
            gone = missing[i:j].tolist()
            out = ["" if g else v if type(v) is str else str(v) for v, g in zip(part, gone)]
        else:
            out = [v if type(v) is str else str(v) for v in part]
        return _quoted(out)
    return cells


def csv_chunks(frame: pd.DataFrame, chunk_rows: int = CHUNK_ROWS) -> Iterator[str]:
    """The CSV text of `frame` (header first), `chunk_rows` rows at a time."""
    columns = [_column(frame.iloc[:, k]) for k in range(frame.shape[1])]
    if len(columns) < 2 or any(c is None for c in columns):
        # (one column: the csv writer writes an empty cell as "", a row of its own)
        yield from _pandas_chunks(frame, chunk_rows)
        return
    yield ",".join(_quoted([str(c) for c in frame.columns])) + "\n"
    for i in range(0, len(frame), chunk_rows):
        j = min(i + chunk_rows, len(frame))
        rows = zip(*(cells(i, j) for cells in columns))
        yield "\n".join(map(",".join, rows)) + "\n"


def _pandas_chunks(frame: pd.DataFrame, chunk_rows: int) -> Iterator[str]:
    for i in range(0, max(len(frame), 1), chunk_rows):
        yield frame.iloc[i:i + chunk_rows].to_csv(index=False, header=i == 0,
                                                  lineterminator="\n")


def write_csv(frame: pd.DataFrame, out: TextIO, chunk_rows: int = CHUNK_ROWS) -> None:
    for text in csv_chunks(frame, chunk_rows):
        out.write(text)
