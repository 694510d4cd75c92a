"""`report --format csv` written as a stream (report.csv_out): byte for byte what pandas'
`DataFrame.to_csv(index=False, lineterminator="\\n")` wrote before, in chunks of rows."""
from __future__ import annotations

import io
import math
import sys
from pathlib import Path

import pytest

pd = pytest.importorskip("pandas")
np = pytest.importorskip("numpy")

from test_report import EXP, build_ledger  # noqa: E402

from slurmexp.ledger import Ledger  # noqa: E402
from slurmexp.report.build import build_report, render_report  # noqa: E402
from slurmexp.report.csv_out import csv_chunks, write_csv  # noqa: E402
from slurmexp.report.text import excel_safe  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import bench_report  # noqa: E402


def pandas_csv(frame: pd.DataFrame) -> str:
    """How render_csv wrote CSV before it streamed (the reference)."""
    return frame.to_csv(index=False, lineterminator="\n")


def streamed(frame: pd.DataFrame, chunk_rows: int) -> str:
    return "".join(csv_chunks(frame, chunk_rows))


def test_the_format_itself():
    frame = pd.DataFrame({
        "run_id": ["r1", "r2", "r3"], "note": ['say "hi", twice', "two\nlines", None],
        "x": [0.1, float("nan"), 1e16], "n": pd.array([1, None, 3], dtype="Int64"),
        "ok": [True, False, True]})
    assert streamed(frame, 2) == (
        'run_id,note,x,n,ok\n'
        'r1,"say ""hi"", twice",0.1,1,True\n'
        'r2,"two\nlines",,,False\n'
        'r3,,1e+16,3,True\n')


@pytest.fixture(scope="module")
def bench_ledger(tmp_path_factory):
    """bench_report's synthetic ledger (grid, retries, failures, metrics.json, .jsonl or none),
    3,000 runs: enough for the columns whose repeated values are formatted once."""
    root = tmp_path_factory.mktemp("bench")
    led = Ledger(bench_report.make_ledger(root, 3000))
    yield led
    led.close()


@pytest.mark.parametrize("chunk_rows", [1, 7, 1000, 5000])
def test_same_bytes_as_pandas_on_the_synthetic_ledger(bench_ledger, chunk_rows):
    rep = build_report(bench_ledger, [bench_report.EXP])
    assert len(rep.runs) == 3000 and rep.metrics == ["acc", "epoch", "eval.f1", "loss"]
    assert streamed(rep.runs, chunk_rows) == pandas_csv(rep.runs)
    assert render_report(rep, "csv") == pandas_csv(rep.runs)
    by = build_report(bench_ledger, [bench_report.EXP], by="lr,batch", best="loss")
    assert render_report(by, "csv") == pandas_csv(by.by_table)
    best = build_report(bench_ledger, [bench_report.EXP], best="acc")
    assert render_report(best, "csv") == pandas_csv(best.best)


def test_same_bytes_as_pandas_on_the_report_ledger_and_excel_safe(tmp_path):
    with build_ledger(tmp_path) as led:
        rep = build_report(led, [EXP])
    rep.runs["reason"] = ['=HYPERLINK("http://x","y")', "+cmd|' /C calc'!A0", None, "a,b"]
    assert render_report(rep, "csv") == pandas_csv(rep.runs)
    assert render_report(rep, "csv", excel_safe=True) == pandas_csv(excel_safe(rep.runs))


def odd_frame(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    floats = rng.standard_normal(n) * 10.0 ** rng.integers(-20, 20, n)
    floats[::7] = np.nan
    floats[1::11] = np.inf
    floats[2::13] = -np.inf
    repeated = np.tile([0.0, -0.0, 0.1, 1e-5, 123456789.125, np.nan, 2.5e16], n // 7 + 1)[:n]
    objects = [None, float("nan"), pd.NA, "x", 'q"uote', "c,omma", "cr\rlf\n", 3, -0.0, True,
               np.float64(0.1), np.int64(7), {"a": [1, 2]}, [1, "b"], "Zürich ∑", "", b"raw",
               float("inf"), 2 ** 70, pd.Timestamp("2026-12-03T15:00:00")]
    return pd.DataFrame({
        "f": floats, "f_rep": repeated,
        "i": rng.integers(-2 ** 62, 2 ** 62, n), "i_rep": np.tile([1, -1, 0], n // 3 + 1)[:n],
        "u": np.arange(n, dtype=np.uint64) * np.uint64(2 ** 40),
        "b": np.arange(n) % 3 == 0,
        "I": pd.array([None if k % 5 == 0 else k for k in range(n)], dtype="Int64"),
        "B": pd.array([None if k % 4 == 0 else k % 2 == 0 for k in range(n)], dtype="boolean"),
        "s": pd.array([None if k % 6 == 0 else f"v{k % 9},{k}" if k % 10 == 0 else f"v{k}"
                       for k in range(n)], dtype="str"),
        "o": pd.Series([objects[k % len(objects)] for k in range(n)], dtype=object),
        'head "quoted", too': ["h"] * n,
    })


@pytest.mark.parametrize("n", [0, 1, 20, 2500])
def test_same_bytes_as_pandas_for_every_kind_of_cell(n):
    frame = odd_frame(n)
    for chunk_rows in (1, 3, 5000):
        assert streamed(frame, chunk_rows) == pandas_csv(frame)


def test_types_it_does_not_format_itself_go_through_pandas_still_in_chunks():
    frame = odd_frame(50)
    frame["when"] = pd.date_range("2026-01-01", periods=50, freq="h")
    frame["cat"] = pd.Categorical(["a", "b"] * 25)
    frame["f32"] = np.linspace(0, 1, 50, dtype=np.float32)
    assert streamed(frame, 7) == pandas_csv(frame)
    one = pd.DataFrame({"only": ["a", None, ""]})           # one column: "" is written '""'
    assert streamed(one, 2) == pandas_csv(one) == 'only\na\n""\n""\n'


class Recorder(io.StringIO):
    def __init__(self):
        super().__init__()
        self.sizes: list[int] = []

    def write(self, text):
        self.sizes.append(len(text))
        return super().write(text)


def test_it_is_written_in_chunks_of_rows(bench_ledger):
    rep = build_report(bench_ledger, [bench_report.EXP])
    out = Recorder()
    write_csv(rep.runs, out, chunk_rows=500)
    assert len(out.sizes) == 1 + 3000 // 500              # the header, then six chunks
    assert max(out.sizes) < len(out.getvalue()) / 5
    assert out.getvalue() == pandas_csv(rep.runs)
    assert not math.isnan(rep.runs["metric.loss"].iloc[0])


def test_report_csv_output_file_and_options_checked_before_it_is_touched(tmp_path):
    from click.testing import CliRunner

    from slurmexp.cli import main

    with build_ledger(tmp_path) as led:
        expected = pandas_csv(build_report(led, [EXP]).runs)
    ledger = str(tmp_path / "home" / "ledger.db")
    out = tmp_path / "r.csv"
    result = CliRunner().invoke(main, ["--ledger", ledger, "report", EXP, "--format", "csv",
                                       "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8") == expected
    result = CliRunner().invoke(main, ["--ledger", ledger, "report", EXP, "--format", "json",
                                       "--excel-safe", "-o", str(out)])
    assert result.exit_code == 1 and "--excel-safe is for --format csv" in result.output
    assert out.read_text(encoding="utf-8") == expected       # refused: the file is as it was
    result = CliRunner().invoke(main, ["--ledger", ledger, "report", EXP, "--format", "csv"])
    assert result.exit_code == 0 and result.stdout == expected
