"""Text tables that fit the terminal without cutting what users type.

`status` and `report` print tables people read on an 80-column terminal and copy ids from.
So a column is one of three kinds: kept whole (experiment and run ids, states: cutting them
makes a value nobody can paste), shortened with "…" down to a floor (reasons, parameters:
`show` has them whole), or left out whole when the others do not fit (created, node, ...),
in the order of its priority, and the table says which columns it left out. Nothing here
imports pandas or rich: `status` stays fast.
"""
from __future__ import annotations

import re
import shutil
import textwrap
from dataclasses import dataclass

_NEWLINES = re.compile(r"\r\n|\r|\n")
_NUMERIC = re.compile(r"-?[\d.:e+-]+%?")


@dataclass
class Column:
    """One column: `keep` never cut nor left out; `shrink_to` the narrowest a cut leaves
    (None: never cut, left out instead); higher `priority` is left out later."""

    header: str
    cells: list[str]
    keep: bool = False
    shrink_to: int | None = None
    priority: int = 0

    def natural(self) -> int:
        return max([len(self.header), *map(len, self.cells)])

    def floor(self) -> int:
        if self.keep or self.shrink_to is None:
            return self.natural()
        return min(self.natural(), max(self.shrink_to, len(self.header)))


def one_line(text: str) -> str:
    """A cell on one line: a newline inside a value would break every row after it."""
    return _NEWLINES.sub(" ⏎ ", text)


def terminal_width() -> int:
    """$COLUMNS, else the terminal's width, else 80 (a pipe): what tables are fitted to."""
    return shutil.get_terminal_size((80, 24)).columns


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:max(width - 1, 0)] + "…"


def _widths(cols: list[Column], width: int) -> list[int] | None:
    """Widths that fit `width` (two spaces between columns), or None when even the floors
    do not. Cut columns share what is left over, narrowest first."""
    gaps = 2 * (len(cols) - 1)
    natural = [c.natural() for c in cols]
    if sum(natural) + gaps <= width:
        return natural
    floors = [c.floor() for c in cols]
    spare = width - gaps - sum(floors)
    if spare < 0:
        return None
    out = list(floors)
    wants = sorted((natural[i] - floors[i], i) for i in range(len(cols)) if natural[i] > floors[i])
    for n, (want, i) in enumerate(wants):
        share = min(want, spare // (len(wants) - n))
        out[i] += share
        spare -= share
    return out


def fit_columns(cols: list[Column], width: int) -> tuple[list[Column], list[int], list[str]]:
    """The columns to show, their widths and the headers left out, for a table `width` wide.

    Left out lowest priority first (then rightmost); kept columns are never left out, so a
    table of kept columns alone may be wider than `width`: wider beats wrong.
    """
    shown = list(cols)
    dropped: list[str] = []
    while True:
        widths = _widths(shown, width)
        if widths is not None:
            return shown, widths, dropped
        optional = [(c.priority, -i) for i, c in enumerate(shown) if not c.keep]
        if not optional:
            return shown, [c.natural() for c in shown], dropped
        _, neg = min(optional)
        dropped.append(shown.pop(-neg).header)


def render(cols: list[Column], width: int | None = None, *, left_out_hint: str = "") -> str:
    """The table as text fitted to `width` (default: the terminal's), with a last line naming
    the columns left out and `left_out_hint` (how to see them)."""
    return render_fitted(cols, width, left_out_hint=left_out_hint)[0]


def render_fitted(cols: list[Column], width: int | None = None, *,
                  left_out_hint: str = "") -> tuple[str, set[str]]:
    """render()'s text and the headers of the columns it cut or left out."""
    for c in cols:
        c.cells = [one_line(x) for x in c.cells]
    if not cols or not cols[0].cells:
        return "(none)\n", set()
    width = terminal_width() if width is None else width
    shown, widths, dropped = fit_columns(cols, width)
    heads, body = [], []
    for c, w in zip(shown, widths):
        cells = [_cut(x, w) for x in c.cells]
        sample = [x for x in cells[:200] if x]
        right = bool(sample) and all(_NUMERIC.fullmatch(x) for x in sample)
        pad = str.rjust if right else str.ljust
        heads.append(pad(c.header, w))
        body.append([pad(x, w) for x in cells])
    lines = ["  ".join(heads).rstrip(), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(row).rstrip() for row in zip(*body)]
    if dropped:
        note = (f"(left out to fit {width} columns: "
                f"{', '.join(dropped)}{'; ' + left_out_hint if left_out_hint else ''})")
        lines += textwrap.wrap(note, max(width, 30), break_on_hyphens=False)
    cut = {c.header for c, w in zip(shown, widths) if w < c.natural()}
    return "\n".join(lines) + "\n", cut | set(dropped)
