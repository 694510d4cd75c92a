"""`report --format csv` written as a stream (report.csv_out): byte for byte what pandas'
`DataFrame.to_csv(index=False, lineterminator="\\n")` wrote before, in chunks of rows."""
from __future__ import annotations

import io
import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

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


# --- the run table's CSV without frames (report.csv_rows) against the frame path ------------

from slurmexp.report.csv_rows import write_run_csv  # noqa: E402

ODD_TIMES = ["2026-11-21T08:00:00", "2026-11-21 08:00:05", "2026-11-21T09:00:00+01:00",
             "2026-11-21T08:00:00Z", "2026-11-21T08:00:01.250000", "2026-11-21T07:59:59-00:30"]
ODD_PARAMS = [1, 2.5, "a,b", 'q"x', True, None, -0.0, 1e300, "=1+2", "-3", [1, 2], {"k": 1},
              float("inf"), 10 ** 17, 0]


def odd_ledger(root: Path, seed: int, *, mixed: bool = True) -> Ledger:
    """Three experiments with what a report meets: runs never submitted, retried and failed
    runs, a local (in-process) experiment, sampled parameters of every JSON type and missing
    ones, metrics stored with the newest attempt, only in files (metrics.json, or only
    metrics.jsonl), or nowhere, per-CPU memory, zoned times, a missing TRES. With `mixed`,
    columns also mix types (an int exit code beside "0:0", a MaxRSS with a unit)."""
    import random

    from slurmexp.reconcile.transitions import final_metrics
    rng = random.Random(seed)
    led = Ledger(root / "ledger.db")
    conn = led.db.conn
    for e, backend in enumerate(("slurm", "local", "slurm")):
        exp_id, exp_dir = f"odd{e}-{seed:04d}abcd", root / f"exp{e}"
        runs = []
        for i in range(rng.randint(3, 40)):
            sampled = e == 0 and i % 3 == 0
            params = {"lr": rng.choice([0.1, 0.01, 1e-3]), "n": rng.randint(0, 5)}
            if sampled:
                params["odd"] = rng.choice(ODD_PARAMS)
            if rng.random() < 0.3:
                params["only_some"] = rng.choice([1, 2, 3] if e != 1 else [1, 2.0, -0.0, 0.0])
            if e == 2 and seed % 2:
                params = {}
            runs.append(dict(run_id=f"r{i:03d}", idx=i, params=params,
                             seed=rng.randint(0, 2 ** 40) if sampled else i,
                             source="sample" if sampled else "grid",
                             run_dir=exp_dir / "runs" / f"r{i:03d}", chunk=0, task_index=i))
        led.create_experiment(exp_id=exp_id, name=f"odd{e}", fingerprint="fp", cluster="c",
                              backend=backend, exp_dir=exp_dir, sweep_path=None,
                              sweep_copy_path=None, site_path=None, site_hash=None,
                              template_hash=None, provenance={}, runs=runs)
        with led.transaction():
            sub = conn.execute(
                "INSERT INTO submissions (exp_id, chunk, array_spec, n_tasks, script_path, state, "
                "job_id, cluster, submit_time, created) VALUES (?, 0, '0-99', 100, 's', "
                "'SUBMITTED', '7', 'c', ?, ?)", [exp_id, ODD_TIMES[0], ODD_TIMES[0]]).lastrowid
            job = 1000 * (e + 1)
            for r in runs:
                d = Path(r["run_dir"])
                d.mkdir(parents=True)
                values = {"loss": rng.uniform(0, 2), "epoch": rng.randint(1, 9)}
                if rng.random() < 0.2:
                    values["note"] = rng.choice(["ok", "a,b", True])
                if rng.random() < 0.2:
                    values.pop("epoch")
                where = rng.random()
                if where < 0.1:
                    (d / "metrics.jsonl").write_text(json.dumps({"step": 1, **values}) + "\n")
                elif where < 0.9:
                    (d / "metrics.json").write_text(json.dumps(values))
                n = 0 if (e == 1 and rng.random() < 0.3) else rng.choice([1, 1, 1, 2, 3])
                state = "PLANNED"
                for no in range(1, n + 1):
                    job += 1
                    state = rng.choice(["COMPLETED", "FAILED", "TIMEOUT", "RUNNING"]
                                       if no == n else ["FAILED", "NODE_FAIL", "PREEMPTED"])
                    gpus = rng.choice([0, 1, 2])
                    tres = rng.choice([f"cpu={2 * gpus + 1},gres/gpu={gpus},mem=8G,node=1",
                                       None, "cpu=3,mem=4G,node=2"])
                    elapsed = rng.choice([None, float(rng.randint(0, 9000)), 0.5])
                    rss = rng.choice([None, rng.uniform(100, 9000)]
                                     + (["1234K", "2G"] if mixed else []))
                    exit_code = rng.choice(([0, 1] if seed % 4 == 1 else [0, 1, None])
                                           + (["0:0", "1:15"] if mixed else []))
                    stored = (final_metrics(SimpleNamespace(run_dir=str(d)))
                              if rng.random() < 0.6 else None)
                    conn.execute(
                        "INSERT INTO attempts (exp_id, run_id, attempt_no, sub_id, cluster, "
                        "job_id, task_index, job_key, submit_time, state, reason, node, "
                        "partition, qos, start_time, end_time, elapsed_s, exit_code, alloc_tres, "
                        "req_mem, max_rss, total_cpu_s, failure_class, metrics_json) VALUES "
                        "(?, ?, ?, ?, 'c', ?, 0, ?, ?, ?, ?, ?, 'p', ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                        "?, ?)",
                        [exp_id, r["run_id"], no, sub, str(job), f"{job}_0",
                         rng.choice(ODD_TIMES + [None]), state,
                         rng.choice([None, "a reason", 'why, "quoted"']),
                         rng.choice(["n1", None, "=cmd"]), rng.choice(["normal", None]),
                         rng.choice(ODD_TIMES + [None]), rng.choice(ODD_TIMES + [None]),
                         elapsed, exit_code, tres, rng.choice(["8G", "4000Mc", "2Gn", None]),
                         rss, rng.choice([None, rng.uniform(0, 9000), 0.0]),
                         None if state == "COMPLETED" else rng.choice(["node", None]), stored])
                conn.execute("UPDATE runs SET state = ?, n_attempts = ? WHERE exp_id = ? AND "
                             "run_id = ?", [state, n, exp_id, r["run_id"]])
    return led


def frame_csv(led: Ledger, refs, excel: bool = False) -> str:
    return render_report(build_report(led, refs), "csv", excel_safe=excel)


def rows_csv(led: Ledger, refs, excel: bool = False, chunk_rows: int = 5000) -> str | None:
    out = io.StringIO()
    done = write_run_csv(led, refs, out, excel_safe=excel, chunk_rows=chunk_rows)
    return out.getvalue() if done else None


@pytest.mark.parametrize("seed", range(12))
def test_csv_without_frames_is_the_frame_paths_bytes(tmp_path, seed):
    led = odd_ledger(tmp_path, seed, mixed=seed % 3 != 0)
    ids = [e["exp_id"] for e in led.experiments()]
    try:
        for refs in (None, ids, ids[::-1], [ids[1]], [ids[2], ids[0]], ["odd0"], [ids[1][:5]]):
            for excel in (False, True):
                got = rows_csv(led, refs, excel, chunk_rows=7)
                assert got is not None, (refs, excel)          # none of these falls back
                assert got == frame_csv(led, refs, excel), (refs, excel)
    finally:
        led.close()


def test_csv_without_frames_on_the_report_ledger(tmp_path):
    with build_ledger(tmp_path) as led:
        assert rows_csv(led, [EXP]) == frame_csv(led, [EXP]) == rows_csv(led, None)


def test_csv_without_frames_on_the_synthetic_ledger(bench_ledger):
    assert rows_csv(bench_ledger, [bench_report.EXP]) == frame_csv(bench_ledger,
                                                                    [bench_report.EXP])


def test_what_it_does_not_reproduce_falls_back_to_the_frame_path(tmp_path):
    led = odd_ledger(tmp_path, 1)
    exp = led.experiments()[0]["exp_id"]
    conn = led.db.conn
    try:
        assert rows_csv(led, [exp]) is not None
        (aid,) = conn.execute("SELECT max(attempt_id) FROM attempts WHERE exp_id = ?",
                              [exp]).fetchone()
        for column, value in (("start_time", "Unknown"), ("max_rss", "n/a"),
                              ("elapsed_s", "12:00")):
            old = conn.execute(f"SELECT {column} FROM attempts WHERE attempt_id = ?",
                               [aid]).fetchone()[0]
            conn.execute(f"UPDATE attempts SET {column} = ? WHERE attempt_id = ?", [value, aid])
            assert rows_csv(led, [exp]) is None, column
            conn.execute(f"UPDATE attempts SET {column} = ? WHERE attempt_id = ?", [old, aid])
        assert rows_csv(led, [exp]) == frame_csv(led, [exp])
        conn.execute("DELETE FROM attempts WHERE exp_id = ?", [exp])     # never submitted
        assert rows_csv(led, [exp]) is None
    finally:
        led.close()


def test_report_csv_command_takes_either_path_with_the_same_bytes(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import slurmexp.report.csv_rows as csv_rows
    from slurmexp.cli import main

    odd_ledger(tmp_path, 5).close()
    calls = []
    real = csv_rows.write_run_csv
    monkeypatch.setattr(csv_rows, "write_run_csv",
                        lambda *a, **k: calls.append(a[1]) or real(*a, **k))

    def report(*args):
        result = CliRunner().invoke(main, ["--ledger", str(tmp_path / "ledger.db"), "report",
                                           *args, "--format", "csv"])
        assert result.exit_code == 0, result.output
        return result.output

    with Ledger(tmp_path / "ledger.db") as led:
        ids = [e["exp_id"] for e in led.experiments()]
        assert report() == frame_csv(led, None)
        assert report(ids[2], ids[0], "--excel-safe") == frame_csv(led, [ids[2], ids[0]], True)
        assert calls == [None, [ids[2], ids[0]]]
        by = build_report(led, [ids[0]], by="lr")
        assert report(ids[0], "--by", "lr") == render_report(by, "csv")
        best = build_report(led, [ids[0]], best="loss")
        assert report(ids[0], "--best", "loss") == render_report(best, "csv")
        assert len(calls) == 2                     # --by and --best: the frame path's tables


@pytest.mark.parametrize("with_nan", [False, True])
def test_per_run_sums_are_pandas_groupby_sums_to_the_bit(with_nan):
    import random

    from slurmexp.report.csv_sums import run_sums
    rng = random.Random(4)
    sizes = [rng.choice([0, 1, 2, 3, 5, 7, 8, 9, 16, 17, 100, 128, 129, 300]) for _ in range(400)]
    values, last, multi, keys = [], [], [], []
    for run, n in enumerate(sizes):
        first = len(values)
        for _ in range(n):
            values.append(rng.uniform(0, 10) ** rng.randint(-6, 6))
            keys.append(run)
        last.append(len(values) - 1 if n else -1)
        if n > 1:
            multi.append((run, first, len(values)))
    if with_nan:
        values[5] = float("nan")
    frame = pd.DataFrame({"run": keys, "v": values})
    expected = frame.groupby("run", sort=False)[["v"]].sum()["v"].reindex(
        range(len(sizes))).fillna(0.0).tolist()
    got = run_sums(values, last, multi)
    assert [struct_bits(v) for v in got] == [struct_bits(v) for v in expected]
    assert got != [0.0 if k < 0 else values[k] if n < 2 else sum(values[k - n + 1:k + 1])
                   for k, n in zip(last, sizes)]       # a plain sum would differ somewhere


def struct_bits(v: float) -> bytes:
    import struct
    return struct.pack("<d", v)
