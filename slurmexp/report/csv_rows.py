"""`report --format csv` of the run table without pandas: the ledger's rows (each run with its
attempts, `Ledger.report_rows`) joined and formatted in one pass, the same bytes the frame path
(`report.frames` -> `report.csv_out`) writes, at 100,000 runs several times faster
(bench/README.md).

Exact means doing what pandas did to each column: the type `read_sql` or `from_records` gave it
(a number column with a missing value is float, so `3` is written `3.0`; a column with text is
written cell by cell), a run without attempts turning an int column of the join into float,
`integers_stay_integers` for GPU/CPU counts and sampled seeds, parameters whose values are all
ints as Int64, times parsed and taken to UTC when they carry a zone, and the per-run sums of
float columns as numpy's `add.reduceat` adds a group (Kahan's sum, as pandas' Cython kernel,
when the column has a NaN).

The frame path writes the report instead (`write_run_csv` returns False before writing a byte)
when: `--by` or `--best` is given (another table); no run is selected, or no selected run has
an attempt; a time is not `YYYY-MM-DD[T ]HH:MM:SS[.ffffff][Z|+HH:MM]` (pandas' ISO 8601 parser
accepts more); a stored `max_rss` is an int or text that is not a number with a unit; elapsed
or CPU time, or a seed, stored as text; an int beyond int64 in any column; a run with several
attempts one of which has no job key. The cyclic GC is off while the table is built.
"""
from __future__ import annotations

import gc
import json
import re
from datetime import datetime, timedelta, timezone
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Callable, Sequence, TextIO

from slurmexp.report.csv_out import CHUNK_ROWS, _quoted
from slurmexp.report.csv_sums import run_sums
from slurmexp.report.frames import RUN_COLUMNS, _in_process_experiments, _mem_parts, _tres_numbers
from slurmexp.report.metrics_files import read_metrics_bulk
from slurmexp.report.refs import resolve_experiments
from slurmexp.states import FAILED_STATES

if TYPE_CHECKING:  # pragma: no cover
    from slurmexp.ledger import Ledger

NAN = float("nan")
_NONE = type(None)
_I64 = (-2 ** 63, 2 ** 63 - 1)
# Ledger.report_rows' columns
(R_EXP, R_RUN, R_IDX, R_PARAMS, R_SEED, R_SOURCE, R_STATE, R_REASON, R_DIR, R_N, R_REUSED,
 A_ID, A_KEY, A_SUBMIT, A_STATE, A_NODE, A_PART, A_QOS, A_START, A_END, A_ELAPSED, A_EXIT,
 A_TRES, A_REQ_MEM, A_RSS, A_CPU, A_CLASS, A_METRICS) = range(28)
_TIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?"
                   r"(Z|[+-]\d\d:\d\d)?")
_PLAIN_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")    # written back as it is
_UNIT_MEM = re.compile(r"\d+(?:\.\d+)?[KMGTPkmgtp][A-Za-z]*")


class _Fallback(Exception):
    """A case this module does not reproduce: the frame path writes the report."""


# --- what pandas made of a column -------------------------------------------------------

def _kind(values: Sequence[Any]) -> str:
    """The dtype pandas' inference gives a column of these Python values, as CSV shows it:
    "int" (int64), "float" (numbers with a missing value: NaN or None), "object" (anything
    else, written cell by cell; all missing, bools, text)."""
    seen = set(map(type, values))
    if int in seen:
        ints = values if seen == {int} else [v for v in values if type(v) is int]
        if min(ints) < _I64[0] or max(ints) > _I64[1]:
            raise _Fallback("an int beyond int64")
        if seen == {int}:
            return "int"
    if seen <= {int, float, _NONE} and seen & {int, float}:
        return "float"
    return "object"


def _joined(kind: str, any_missing: bool) -> str:
    """A column of the newest attempts after the join with the runs: a run without one is
    NaN there, so int64 becomes float64."""
    return "float" if kind == "int" and any_missing else kind


def _whole(values: Sequence[float]) -> str:
    """integers_stay_integers of a float column: "int_na" when every value it has is whole."""
    have = [v for v in values if v == v]
    if not have:
        return "float"
    whole = all(v % 1 == 0 for v in have) and all(abs(v) < 2 ** 53 for v in have)
    return "int_na" if whole else "float"


# --- cells -------------------------------------------------------------------------------

def _cells_of(values: list, kind: str, excel_safe: bool) -> Callable[[int, int], list[str]]:
    if kind == "int":
        return lambda i, j: repr(values[i:j])[1:-1].split(", ")
    if kind == "float":
        floats = values if set(map(type, values)) == {float} else [
            NAN if v is None else float(v) for v in values]
        distinct = set(floats)
        if len(distinct) <= len(floats) // 4:     # repeated values: each formatted once
            text = {v: "" if v != v else repr(v) for v in distinct}
            texts = [text[v] if v else repr(v) for v in floats]   # 0.0 == -0.0 as a key
            return lambda i, j: texts[i:j]

        def float_cells(i: int, j: int) -> list[str]:
            cells = repr(floats[i:j])[1:-1].split(", ")
            if "nan" in cells:
                cells = ["" if c == "nan" else c for c in cells]
            return cells
        return float_cells
    if kind == "int_na":
        text = {v: "" if v is None or v != v else str(int(v)) for v in set(values)}
        texts = [text[v] if v == v else "" for v in values]     # (a NaN is no key of a dict)
        return lambda i, j: texts[i:j]

    from slurmexp.report.text import _formula_like
    seen = set(map(type, values))
    if seen <= {str, _NONE} and not excel_safe:          # text, no formula check: as it is
        if _NONE in seen:
            return lambda i, j: _quoted(["" if v is None else v for v in values[i:j]])
        return lambda i, j: _quoted(values[i:j])

    def object_cells(i: int, j: int) -> list[str]:
        out = []
        for v in values[i:j]:
            if type(v) is str:
                out.append(f"'{v}" if excel_safe and _formula_like(v) else v)
            elif v is None or (type(v) is float and v != v):
                out.append("")
            else:
                out.append(str(v))
        return _quoted(out)
    return object_cells


# --- the parts of a row ------------------------------------------------------------------

def _rss_mib(v: Any) -> float:
    if v is None:
        return NAN
    if type(v) is float:
        return v
    if type(v) is str and _UNIT_MEM.fullmatch(v):
        return _mem_parts(v)[0]
    raise _Fallback(f"max_rss {v!r}")


def _records(texts: list[str | None]) -> list[dict]:
    return json.loads("[" + ",".join(t or "{}" for t in texts) + "]")


def _record_columns(records: list[dict], prefix: str, *, params: bool,
                    excel_safe: bool) -> list[tuple[str, Callable]]:
    """`_records_frame` (and, for parameters, `_params_frame`) as cells."""
    if not any(records):
        return []
    out = []
    missing = NAN
    names = sorted({k for r in records for k in r})
    columns: list = []
    if len(names) > 1 and all(len(r) == len(names) for r in records):    # every key in each
        columns = list(zip(*map(itemgetter(*names), records)))
    for n, key in enumerate(names):
        if columns:
            values = columns[n]
            present = set(map(type, values))
        else:
            values = [r.get(key, missing) for r in records]
            present = {type(r[key]) for r in records if key in r}
        if params and present == {int}:
            _kind([v for v in values if type(v) is int])       # the int64 range
            kind = "int_na"
            values = [None if v is missing else v for v in values]
        else:
            kind = _kind(values)
            if params and kind == "object" and present & {dict, list}:
                values = [json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v
                          for v in values]
        out.append((prefix + key, _cells_of(values, kind, excel_safe)))
    return out


# --- the table ---------------------------------------------------------------------------

def _columns(ledger: Ledger, ids: list[str], excel_safe: bool
             ) -> tuple[int, list[tuple[str, Callable]]]:
    rows = ledger.report_rows(ids)
    if not rows:
        raise _Fallback("no runs")
    if len(ids) > 1:                       # the order the user named them in
        rank = {e: i for i, e in enumerate(ids)}
        rows.sort(key=lambda r: rank[r[R_EXP]])
    runs: list[tuple] = []                 # each run's first row
    last: list[int] = []                   # the index of its newest attempt in `attempts`, or -1
    attempts: list[tuple] = []
    multi: list[tuple[int, int, int]] = []   # (run, first, stop) of runs with several attempts
    key = None
    first = 0
    for r in rows:
        if r[R_RUN] != key or r[R_EXP] != runs[-1][R_EXP]:
            if len(attempts) - first > 1:
                multi.append((len(runs) - 1, first, len(attempts)))
            key, first = r[R_RUN], len(attempts)
            runs.append(r)
            last.append(-1)
        if r[A_STATE] is not None:         # NOT NULL in the table: NULL is no attempt
            last[-1] = len(attempts)
            attempts.append(r)
    if len(attempts) - first > 1:
        multi.append((len(runs) - 1, first, len(attempts)))
    if not attempts:
        raise _Fallback("no attempts")
    any_missing = -1 in last
    a_cols = list(zip(*attempts))

    # each attempt's derived numbers (attempts_frame), as columns in attempt order
    tres = {t: _tres_numbers(t) for t in set(a_cols[A_TRES])}
    gpus = [tres[t][0] for t in a_cols[A_TRES]]
    cpus = [tres[t][1] for t in a_cols[A_TRES]]
    nodes = [tres[t][2] for t in a_cols[A_TRES]]
    mem = {m: _mem_parts(m) for m in set(a_cols[A_REQ_MEM])}
    req_mib = [mem[m][0] * c if mem[m][1] == "c" else mem[m][0] * n if mem[m][1] == "n"
               else mem[m][0] for m, c, n in zip(a_cols[A_REQ_MEM], cpus, nodes)]
    rss_of = {v: _rss_mib(v) for v in set(a_cols[A_RSS]) if type(v) is not float}
    rss = [v if type(v) is float else rss_of[v] for v in a_cols[A_RSS]]
    elapsed, total_cpu = _numbers(a_cols[A_ELAPSED]), _numbers(a_cols[A_CPU])
    times = _times({*a_cols[A_SUBMIT], *a_cols[A_START], *a_cols[A_END]})
    in_process = set(_in_process_experiments(ledger, list(dict.fromkeys(a_cols[R_EXP]))))
    one_s = timedelta(seconds=1)
    wait = [NAN if b is None or s is None or e in in_process
            else (times[s][0] - times[b][0]) / one_s
            for b, s, e in zip(a_cols[A_SUBMIT], a_cols[A_START], a_cols[R_EXP])]
    e0 = [0.0 if e != e else e for e in elapsed]
    gpu_h = [(0.0 if g != g else g) * e / 3600.0 for g, e in zip(gpus, e0)]
    cpu_h = [(0.0 if c != c else c) * e / 3600.0 for c, e in zip(cpus, e0)]
    failed = [s in FAILED_STATES for s in a_cols[A_STATE]]
    cpu_eff = [t / (e * c) if e * c > 0 else NAN for t, e, c in zip(total_cpu, elapsed, cpus)]
    mem_eff = [r / q if q > 0 else NAN for r, q in zip(rss, req_mib)]

    def of_last(values: Sequence, missing: Any = NAN) -> list:
        values = [*values, missing]        # index -1: a run without attempts
        return [values[k] for k in last]

    def raw_last(col: int) -> tuple[list, str]:
        return of_last(a_cols[col], None), _joined(_kind(a_cols[col]), any_missing)

    def iso(col: int) -> tuple[list, str]:
        return of_last([None if t is None else times[t][1] for t in a_cols[col]], None), "object"

    job_ids = of_last(a_cols[A_KEY], None)
    for run, i, j in multi:
        keys = a_cols[A_KEY][i:j]
        if None in keys:
            raise _Fallback("an attempt without a job key")
        job_ids[run] = ",".join(map(str, keys))
    elapsed_kind = "int" if set(map(type, a_cols[A_ELAPSED])) == {int} else "float"
    gpus_last, cpus_last = of_last(gpus), of_last(cpus)

    cols: dict[str, tuple[list, str]] = {}
    r_cols = list(zip(*runs))
    for name, col in (("exp_id", R_EXP), ("run_id", R_RUN), ("idx", R_IDX), ("state", R_STATE),
                      ("reason", R_REASON), ("attempts", R_N), ("run_dir", R_DIR),
                      ("reused_from", R_REUSED)):
        cols[name] = (list(r_cols[col]), _kind(r_cols[col]))
    cols["job_ids"] = (job_ids, "object")
    for name, col in (("job_id", A_KEY), ("node", A_NODE), ("partition", A_PART),
                      ("qos", A_QOS), ("exit_code", A_EXIT), ("failure_class", A_CLASS)):
        cols[name] = raw_last(col)
    for name, col in (("submit_time", A_SUBMIT), ("start_time", A_START), ("end_time", A_END)):
        cols[name] = iso(col)
    if elapsed_kind == "int" and not any_missing:
        cols["elapsed_s"] = (of_last(a_cols[A_ELAPSED]), "int")
    else:
        cols["elapsed_s"] = (of_last(elapsed), "float")
    cols["wait_s"] = (of_last(wait), "float")
    cols["gpus"] = (gpus_last, _whole(gpus_last))
    cols["cpus"] = (cpus_last, _whole(cpus_last))
    for name, values in (("gpu_hours", gpu_h), ("cpu_hours", cpu_h)):
        cols[name] = (run_sums(values, last, multi), "float")
        wasted = [v if f else 0.0 for v, f in zip(values, failed)]
        cols[f"{name}_wasted"] = (run_sums(wasted, last, multi), "float")
    for name, values in (("cpu_efficiency", cpu_eff), ("mem_efficiency", mem_eff),
                         ("max_rss_mib", rss), ("req_mem_mib", req_mib)):
        cols[name] = (of_last(values), "float")
    cols["sample_seed"] = _sample_seeds(r_cols[R_SEED], r_cols[R_SOURCE])
    table = [(name, _cells_of(*cols[name], excel_safe)) for name in RUN_COLUMNS]
    table += _record_columns(_records(r_cols[R_PARAMS]), "param.", params=True,
                             excel_safe=excel_safe)
    stored = of_last(a_cols[A_METRICS], None)
    table += _record_columns(_metrics(r_cols[R_DIR], stored), "metric.", params=False,
                             excel_safe=excel_safe)
    return len(runs), table


def _numbers(values: Sequence[Any]) -> list[float]:
    """pd.to_numeric of an elapsed or CPU time column as floats; text is not handled here."""
    seen = set(map(type, values))
    if not seen <= {int, float, _NONE}:
        raise _Fallback("a time stored as text")
    if seen == {float}:
        return list(values)
    return [NAN if v is None else float(v) for v in values]


def _times(texts: set) -> dict[str, tuple[datetime, str]]:
    """pandas' ISO 8601 parse of each distinct ledger time (a zone taken to UTC, naive
    stays) and the run table's text of it."""
    out = {}
    for text in texts:
        if text is None:
            continue
        plain = type(text) is str and _PLAIN_TIME.fullmatch(text) is not None
        m = plain or (_TIME.fullmatch(text) if type(text) is str else None)
        if m is None or not 1678 <= int(text[:4]) <= 2261:
            raise _Fallback(f"time {text!r}")
        try:
            t = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise _Fallback(f"time {text!r}") from None
        if t.tzinfo is not None:
            t = t.astimezone(timezone.utc).replace(tzinfo=None)
        out[text] = (t, text if plain else t.strftime("%Y-%m-%dT%H:%M:%S"))
    return out


def _sample_seeds(seeds: Sequence[Any], sources: Sequence[Any]) -> tuple[list, str]:
    """run_table's sample_seed: the seed of a [sample] run, through integers_stay_integers."""
    kind = _kind(seeds)
    if kind == "object" and any(s is not None for s in seeds):
        raise _Fallback("a seed that is not a number")
    sampled = [s if src == "sample" else None for s, src in zip(seeds, sources)]
    if kind == "int" and None not in sampled:
        return sampled, "int"            # Series.where kept int64
    floats = [NAN if s is None else float(s) for s in sampled]
    return floats, _whole(floats)


def _metrics(run_dirs: Sequence[str | None], stored: list[str | None]) -> list[dict]:
    """Each run's metrics: its newest attempt's stored summary, else its files."""
    known = iter(_records([s for s in stored if s is not None]))
    unknown = iter(read_metrics_bulk([d for d, s in zip(run_dirs, stored) if s is None]))
    return [next(known) if s is not None else next(unknown) or {} for s in stored]


def write_run_csv(ledger: Ledger, exp_ids: Sequence[str] | str | None, out: TextIO, *,
                  excel_safe: bool = False, chunk_rows: int = CHUNK_ROWS) -> bool:
    """The run table of `exp_ids` (as build_report resolves them) as CSV on `out`, in chunks
    of rows; `excel_safe` as `report --excel-safe`. False, with nothing written, for a case
    the frame path must write (the module's docstring lists them)."""
    ids = resolve_experiments(ledger, exp_ids)
    collecting = gc.isenabled()
    gc.disable()       # millions of new rows, dicts and strings, no cycles: its passes were 30%
    try:
        return _write(ledger, ids, out, excel_safe, chunk_rows)
    finally:
        if collecting:
            gc.enable()


def _write(ledger: Ledger, ids: list[str], out: TextIO, excel_safe: bool,
           chunk_rows: int) -> bool:
    try:
        n, table = _columns(ledger, ids, excel_safe)
    except _Fallback:
        return False
    out.write(",".join(_quoted([name for name, _ in table])) + "\n")
    for i in range(0, n, chunk_rows):
        j = min(i + chunk_rows, n)
        rows = zip(*(cells(i, j) for _, cells in table))
        out.write("\n".join(map(",".join, rows)) + "\n")
    return True
