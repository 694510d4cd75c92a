"""`slurmexp report` on a small ledger whose every number was worked out by hand.

The sweep: lr in {0.1, 0.01} x seed in {0, 1}, four runs, each 1 attempt except rB0 (NODE_FAIL,
then a COMPLETED retry). Accounting (elapsed, alloc_tres, ...) is what reconcile would store.

  run  attempt  state      wait  elapsed  TRES                    GPU-h  CPU-h  TotalCPU  RSS/req
  rA0  1001_0   COMPLETED   60    3600    cpu=4 gpu=1 (typed+tot)  1.0    4.0    10800   8192/16G
  rA1  1001_1   FAILED     120    1800    cpu=4 gres/gpu=2         1.0    2.0     3600   1024/16G
  rB0  1001_2   NODE_FAIL  180    1800    cpu=2 gpu:a100=1         0.5    1.0     1800   2048/8G
  rB0  1002_0   COMPLETED  240    3600    cpu=2 gpu:a100=1         1.0    2.0     5400   4096/8G
  rB1  1001_3   COMPLETED  300    5400    cpu=4 gres/gpu=1         1.5    6.0    16200  12288/16G

  GPU-h 5.0 (1.5 wasted), CPU-h 15.0 (3.0 wasted), wait median 180, p95 288,
  CPU efficiency 37800 / 54000 = 0.7, memory efficiency median 0.5, max 0.75.
"""
from __future__ import annotations

import io
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
try:
    import pandas as pd
except ImportError:
    if IN_CI:
        raise              # a test dependency: missing in CI is a failure, not a skip
    pd = None
# Marks only this module's tests: test_inspect imports build_ledger and needs no pandas.
pytestmark = pytest.mark.skipif(pd is None, reason="pandas is not installed: pip install "
                                "-e '.[report]'")

from slurmexp.errors import SlurmexpError  # noqa: E402
from slurmexp.ledger import Ledger  # noqa: E402
from slurmexp.report.build import build_report, guess_minimize, render_report  # noqa: E402
from slurmexp.report.frames import RUN_COLUMNS, attempts_frame, runs_frame  # noqa: E402
from slurmexp.report.metrics_files import read_metrics  # noqa: E402

EXP = "demo-abcdef12"
RUNS = {"rA0": {"lr": 0.1, "seed": 0}, "rA1": {"lr": 0.1, "seed": 1},
        "rB0": {"lr": 0.01, "seed": 0}, "rB1": {"lr": 0.01, "seed": 1}}
ACCOUNTING = {
    "rA0": dict(state="COMPLETED", node="gpu01", start_time="2026-11-21T14:01:00",
                end_time="2026-11-21T15:01:00", elapsed_s=3600, exit_code="0:0",
                alloc_tres="billing=4,cpu=4,gres/gpu:a100=1,gres/gpu=1,mem=16G,node=1",
                req_mem="16G", max_rss="8192", total_cpu_s=10800),
    "rA1": dict(state="FAILED", node="gpu02", start_time="2026-11-21T14:02:00",
                end_time="2026-11-21T14:32:00", elapsed_s=1800, exit_code="1:0",
                alloc_tres="billing=4,cpu=4,gres/gpu=2,mem=16G,node=1", req_mem="16G",
                max_rss="1024", total_cpu_s=3600, failure_class="app_error",
                reason="NonZeroExitCode"),
    "rB0": dict(state="NODE_FAIL", node="gpu03", start_time="2026-11-21T14:03:00",
                end_time="2026-11-21T14:33:00", elapsed_s=1800, exit_code="0:0",
                alloc_tres="billing=2,cpu=2,gres/gpu:a100=1,mem=8G,node=1", req_mem="8G",
                max_rss="2048", total_cpu_s=1800, failure_class="node_fail",
                reason="node gpu03 failed"),
    "rB1": dict(state="COMPLETED", node="gpu04", start_time="2026-11-21T14:05:00",
                end_time="2026-11-21T15:35:00", elapsed_s=5400, exit_code="0:0",
                alloc_tres="billing=4,cpu=4,gres/gpu=1,mem=16G,node=1", req_mem="16G",
                max_rss="12288", total_cpu_s=16200),
}
RETRY = dict(state="COMPLETED", node="gpu01", start_time="2026-11-21T14:44:00",
             end_time="2026-11-21T15:44:00", elapsed_s=3600, exit_code="0:0",
             alloc_tres="billing=2,cpu=2,gres/gpu:a100=1,mem=8G,node=1", req_mem="8G",
             max_rss="4096", total_cpu_s=5400)
METRICS = {"rA0": {"acc": 0.80, "loss": 0.5}, "rB0": {"acc": 0.90, "loss": 0.3},
           "rB1": {"acc": 0.86, "loss": 0.4}}


def build_ledger(root: Path) -> Ledger:
    """The ledger and run folders described in the module docstring, under `root`."""
    exp_dir = root / "exp"
    led = Ledger(root / "home" / "ledger.db")
    runs = [dict(run_id=rid, idx=i, params=p, seed=p["seed"], source="grid",
                 run_dir=exp_dir / "runs" / rid, chunk=0, task_index=i)
            for i, (rid, p) in enumerate(RUNS.items())]
    led.create_experiment(exp_id=EXP, name="demo", fingerprint="fp", cluster="mini",
                          backend="slurm", exp_dir=exp_dir, sweep_path="/src/sweep.toml",
                          sweep_copy_path=exp_dir / "sweep.toml", site_path=None,
                          site_hash="sh", template_hash="th",
                          provenance={"git": {"commit": "abc123", "branch": "main",
                                              "dirty": False}, "user": "ada", "host": "login1"},
                          runs=runs)
    scripts = exp_dir / "scripts"
    scripts.mkdir(parents=True)
    (scripts / "chunk-000.sbatch").write_text("#!/bin/bash\n")
    (scripts / "chunk-001.sbatch").write_text("#!/bin/bash\n")
    sub = led.record_intent(EXP, 0, "0-3", 4, scripts / "chunk-000.sbatch", "h0", "mini")
    ids = led.record_submitted(sub, "1001", "2026-11-21T14:00:00")
    common = dict(partition="gpu", qos="normal", account="lab")
    for attempt_id, rid in zip(ids, RUNS):
        fields = dict(ACCOUNTING[rid])
        reason = fields.pop("reason", None)
        led.update_attempt(attempt_id, reason=reason, **common, **fields,
                           sacct_json={"JobID": f"1001_{RUNS[rid]['seed']}"})
    # The retry of rB0, as `slurmexp retry` does it: a new one-task array in a new chunk.
    led.set_run_state(EXP, ["rB0"], "PLANNED", "retry after NODE_FAIL")
    led.assign_chunk(EXP, 1, ["rB0"])
    sub = led.record_intent(EXP, 1, "0", 1, scripts / "chunk-001.sbatch", "h1", "mini")
    (retry_id,) = led.record_submitted(sub, "1002", "2026-11-21T14:40:00")
    led.update_attempt(retry_id, **common, **RETRY)

    for rid in RUNS:
        (exp_dir / "runs" / rid).mkdir(parents=True)
    for rid, values in METRICS.items():
        (exp_dir / "runs" / rid / "metrics.json").write_text(json.dumps(values))
    # rA1 died before writing metrics.json; its history still has the last loss.
    (exp_dir / "runs" / "rA1" / "metrics.jsonl").write_text(
        '{"time": 1.0, "step": 1, "loss": 2.0}\n{"time": 2.0, "step": 2, "loss": 1.5}\n'
        '{"time": 3.0, "st')
    return led


@pytest.fixture
def ledger(tmp_path):
    led = build_ledger(tmp_path)
    yield led
    led.close()


@pytest.fixture
def report(ledger):
    return build_report(ledger, [EXP])


# --- frames -------------------------------------------------------------------------------

def test_runs_frame_has_one_column_per_parameter(ledger):
    runs = runs_frame(ledger, [EXP])
    assert list(runs["run_id"]) == ["rA0", "rA1", "rB0", "rB1"]
    assert list(runs["param.lr"]) == [0.1, 0.1, 0.01, 0.01]
    assert list(runs["param.seed"]) == [0, 1, 0, 1]


def test_attempts_frame_derives_gpus_cpus_and_hours(ledger):
    a = attempts_frame(ledger, [EXP]).set_index("job_key")
    assert a.loc["1001_0", "gpus"] == 1          # gres/gpu=1, not 1 + the typed 1
    assert a.loc["1001_1", "gpus"] == 2
    assert a.loc["1001_2", "gpus"] == 1          # typed only: gres/gpu:a100=1
    assert a.loc["1001_3", "cpus"] == 4
    assert a.loc["1001_1", "gpu_hours"] == pytest.approx(1.0)
    assert a.loc["1002_0", "cpu_hours"] == pytest.approx(2.0)
    assert a.loc["1001_0", "cpu_efficiency"] == pytest.approx(0.75)
    assert a.loc["1001_1", "mem_efficiency"] == pytest.approx(1024 / 16384)
    assert a.loc["1001_0", "alloc_mem_mib"] == 16384
    assert a.loc["1002_0", "wait_s"] == 240
    assert a.loc["1001_2", "attempt_no"] == 1 and a.loc["1002_0", "attempt_no"] == 2
    assert bool(a.loc["1001_2", "retried"]) and not bool(a.loc["1002_0", "retried"])
    assert list(a["failed"]) == [False, True, True, False, False]


def test_req_mem_per_cpu_and_bare_numbers_are_scaled(tmp_path):
    from slurmexp.report.frames import _mem_mib
    values = pd.Series(["4000Mc", "2Gn", "512", "1.5G", "2048K", None, "junk"])
    cpus = pd.Series([2.0] * 7)
    nodes = pd.Series([3.0] * 7)
    got = _mem_mib(values, cpus, nodes).tolist()
    assert got[:5] == [8000, 6144, 512, 1536, 2]
    assert math.isnan(got[5]) and math.isnan(got[6])


def test_read_metrics_falls_back_to_the_last_history_values(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        '{"time": 1, "step": 1, "loss": 2.0, "lr": 0.1}\n{"time": 2, "loss": 1.5}\n')
    assert read_metrics(tmp_path) == {"loss": 1.5, "lr": 0.1}
    (tmp_path / "metrics.json").write_text('{"loss": 1.0, "eval": {"acc": 0.5}, "curve": [1]}')
    assert read_metrics(tmp_path) == {"loss": 1.0, "eval.acc": 0.5}
    assert read_metrics(tmp_path / "missing") is None


# --- summary ------------------------------------------------------------------------------

def test_summary_numbers(report):
    (s,) = report.experiments
    assert s["runs"] == 4
    assert s["runs_by_state"] == {"COMPLETED": 3, "FAILED": 1}
    assert s["attempts"] == 5
    assert s["retries"] == 1 and s["retries_by_class"] == {"node_fail": 1}
    assert s["failed_attempts"] == 2
    assert s["gpu_hours"] == pytest.approx(5.0)
    assert s["gpu_hours_wasted"] == pytest.approx(1.5)
    assert s["cpu_hours"] == pytest.approx(15.0)
    assert s["cpu_hours_wasted"] == pytest.approx(3.0)
    assert s["wait_s_median"] == pytest.approx(180)
    assert s["wait_s_p95"] == pytest.approx(288)
    assert s["elapsed_s_median"] == pytest.approx(3600)
    assert s["elapsed_s_max"] == pytest.approx(5400)
    assert s["span_s"] == pytest.approx(6240)      # 14:00:00 submit .. 15:44:00 end
    assert s["cpu_efficiency"] == pytest.approx(0.7)
    assert s["mem_efficiency_median"] == pytest.approx(0.5)
    assert s["mem_efficiency_max"] == pytest.approx(0.75)
    assert s["top_failures"] == [
        {"state": "FAILED", "failure_class": "app_error", "reason": "NonZeroExitCode",
         "attempts": 1},
        {"state": "NODE_FAIL", "failure_class": "node_fail", "reason": "node gpu03 failed",
         "attempts": 1}]
    assert s["runs_with_metrics"] == 4


def test_run_table_rows(report):
    t = report.runs.set_index("run_id")
    assert t.loc["rB0", "state"] == "COMPLETED"
    assert t.loc["rB0", "attempts"] == 2
    assert t.loc["rB0", "job_ids"] == "1001_2,1002_0"
    assert t.loc["rB0", "job_id"] == "1002_0"
    assert t.loc["rB0", "node"] == "gpu01"
    assert t.loc["rB0", "gpu_hours"] == pytest.approx(1.5)
    assert t.loc["rB0", "gpu_hours_wasted"] == pytest.approx(0.5)
    assert t.loc["rB0", "wait_s"] == 240
    assert t.loc["rB0", "start_time"] == "2026-11-21T14:44:00"
    assert t.loc["rA1", "state"] == "FAILED"
    assert t.loc["rA1", "reason"] == "NonZeroExitCode"
    assert t.loc["rA1", "exit_code"] == "1:0"
    assert t.loc["rA1", "metric.loss"] == 1.5 and math.isnan(t.loc["rA1", "metric.acc"])
    assert t.loc["rA0", "metric.acc"] == 0.8
    assert t.loc["rA0", "partition"] == "gpu" and t.loc["rA0", "qos"] == "normal"
    assert report.params == ["lr", "seed"]
    assert sorted(report.metrics) == ["acc", "loss"]


# --- --by and --best ----------------------------------------------------------------------

def test_by_aggregates_over_the_other_parameters(ledger):
    rep = build_report(ledger, [EXP], by="lr", best="acc")
    by = rep.by_table.set_index("param.lr")
    assert list(rep.by_table.columns) == [
        "exp_id", "param.lr", "n_runs", "metric.acc.mean", "metric.acc.std", "metric.acc.n"]
    assert by.loc[0.01, "metric.acc.mean"] == pytest.approx(0.88)
    assert by.loc[0.01, "metric.acc.std"] == pytest.approx(math.sqrt(2 * 0.02 ** 2))
    assert by.loc[0.01, "metric.acc.n"] == 2
    assert by.loc[0.1, "metric.acc.mean"] == pytest.approx(0.80)   # rA1 FAILED: not counted
    assert by.loc[0.1, "metric.acc.n"] == 1 and math.isnan(by.loc[0.1, "metric.acc.std"])
    assert by.loc[0.1, "n_runs"] == 1


def test_by_two_parameters_and_all_metrics(ledger):
    rep = build_report(ledger, EXP, by=["lr", "seed"])
    assert len(rep.by_table) == 3     # (0.1, 1) has no COMPLETED run
    assert {"metric.loss.mean", "metric.acc.mean"} <= set(rep.by_table.columns)


@pytest.mark.parametrize("metric, minimize, run", [
    ("acc", None, "rB0"), ("loss", None, "rB0"), ("loss", True, "rB0"),
    ("loss", False, "rA0"), ("metric.acc", False, "rB0"), ("acc", True, "rA0")])
def test_best_picks_the_right_run(ledger, metric, minimize, run):
    rep = build_report(ledger, [EXP], best=metric, minimize=minimize)
    assert list(rep.best["run_id"]) == [run]
    assert rep.minimize_guessed == (minimize is None)


def test_direction_guess():
    assert guess_minimize("val_loss") and guess_minimize("test-error") and guess_minimize("mse")
    assert not guess_minimize("acc") and not guess_minimize("reward")


def test_unknown_names_are_reported_with_the_known_ones(ledger):
    with pytest.raises(SlurmexpError) as e:
        build_report(ledger, [EXP], by="batch")
    assert "lr, seed" in e.value.format()
    with pytest.raises(SlurmexpError) as e:
        build_report(ledger, [EXP], best="f1")
    assert "acc" in e.value.format()
    with pytest.raises(SlurmexpError):
        build_report(ledger, ["nope"])


def test_experiment_prefix_and_default_all(ledger):
    assert build_report(ledger, ["demo-ab"]).experiments[0]["exp_id"] == EXP
    assert [s["exp_id"] for s in build_report(ledger).experiments] == [EXP]


# --- formats ------------------------------------------------------------------------------

def test_csv_has_the_documented_columns(report):
    frame = pd.read_csv(io.StringIO(render_report(report, "csv")))
    assert list(frame.columns[:len(RUN_COLUMNS)]) == RUN_COLUMNS
    assert list(frame.columns[len(RUN_COLUMNS):]) == [
        "param.lr", "param.seed", "metric.acc", "metric.loss"]
    assert len(frame) == 4
    row = frame.set_index("run_id").loc["rB0"]
    assert row["gpu_hours"] == pytest.approx(1.5) and row["metric.acc"] == 0.9
    doc = (Path(__file__).parent.parent / "docs" / "REPORT.md").read_text()
    for col in RUN_COLUMNS:
        assert f"`{col}`" in doc, f"{col} is not documented in docs/REPORT.md"


def test_csv_with_by_and_best(ledger):
    by = pd.read_csv(io.StringIO(render_report(build_report(ledger, EXP, by="lr"), "csv")))
    assert set(by["param.lr"]) == {0.1, 0.01}
    best = pd.read_csv(io.StringIO(render_report(build_report(ledger, EXP, best="acc"), "csv")))
    assert list(best["run_id"]) == ["rB0"]


def test_excel_safe_csv_neutralises_formulas_and_keeps_numbers(ledger):
    import csv

    rep = build_report(ledger, EXP)
    # Text a run can put into the table: Slurm's reason or the stderr tail, parameter values.
    rep.runs["reason"] = ['=HYPERLINK("http://x","y")', "+cmd|' /C calc'!A0", None, "fine"]
    rep.runs["param.note"] = ["@SUM(A1)", "-2", "\tx", "-x"]
    rep.runs["param.lr"] = -rep.runs["param.lr"]                       # a numeric column
    rep.runs["param.mixed"] = pd.Series([-3, "=x", -0.5, None], dtype=object)
    rep.runs["param.ints"] = pd.Series([1, None, -2, 3], dtype=object)   # no text at all

    exact = list(csv.DictReader(io.StringIO(render_report(rep, "csv"))))
    assert exact[0]["reason"] == '=HYPERLINK("http://x","y")' and exact[0]["param.note"] == "@SUM(A1)"

    rows = list(csv.DictReader(io.StringIO(render_report(rep, "csv", excel_safe=True))))
    assert [r["reason"] for r in rows] == ["'=HYPERLINK(\"http://x\",\"y\")", "'+cmd|' /C calc'!A0",
                                           "", "fine"]
    assert [r["param.note"] for r in rows] == ["'@SUM(A1)", "-2", "'\tx", "'-x"]
    assert [r["param.lr"] for r in rows] == ["-0.1", "-0.1", "-0.01", "-0.01"]
    assert [r["param.mixed"] for r in rows] == ["-3", "'=x", "-0.5", ""]
    assert [r["param.ints"] for r in rows] == ["1", "", "-2", "3"]
    for r in rows:
        assert all(not v or v[0] not in "=+@\t\r" for v in r.values())
        assert all(not v or v[0] != "-" or float(v) < 0 for v in r.values())
    # Machines keep the exact values; people's formats are not spreadsheets.
    with pytest.raises(SlurmexpError, match="--excel-safe is for --format csv"):
        render_report(rep, "json", excel_safe=True)


def test_json_document(ledger):
    rep = build_report(ledger, [EXP], by="lr", best="acc")
    doc = json.loads(render_report(rep, "json"))
    assert doc["schema_version"] == 1
    assert doc["experiments"][0]["gpu_hours"] == pytest.approx(5.0)
    assert len(doc["runs"]) == 4 and doc["runs"][1]["metric.acc"] is None
    assert doc["best"][0]["run_id"] == "rB0"
    assert {r["param.lr"] for r in doc["by_table"]} == {0.1, 0.01}


def test_table_and_markdown_for_people(ledger):
    rep = build_report(ledger, [EXP], by="lr", best="acc")
    text = render_report(rep, "table", width=200)
    assert "GPU hours    5 used, 1.5 wasted (30%)" in text
    assert "median 0:03:00, p95 0:04:48" in text
    assert "CPU 70.0%" in text
    assert "rB0 acc=0.9 (highest, guessed; use --min to flip)" in text
    assert "1001_2,1002_0" in text
    md = render_report(rep, "markdown")
    assert "| run | lr | seed | state |" in md
    assert "## Runs (4)" in md


def test_table_fits_80_columns_and_names_what_it_left_out(ledger, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    text = render_report(build_report(ledger, [EXP]), "table")
    runs = text[text.index("Runs (4)"):].splitlines()[1:]
    assert max(map(len, runs)) <= 80, text
    assert runs[0].split() == ["run", "lr", "seed", "state", "attempts", "elapsed", "exit",
                               "GPU", "h", "acc", "loss"]
    assert runs[2].split() == ["rA0", "0.1", "0", "COMPLETED", "1", "1:00:00", "0:0", "1",
                               "0.8", "0.5"]
    assert " ".join(runs[-2:]) == (
        "(left out to fit 80 columns: qos, partition, node, reason, wait, job ids; pick them "
        "with --columns, or use --format csv/json/html)")
    wide = render_report(build_report(ledger, [EXP]), "table", width=200)
    assert "left out" not in wide and "1001_2,1002_0" in wide
    # CSV keeps every column whatever the terminal
    assert render_report(build_report(ledger, [EXP]), "csv").splitlines()[0].count(",") >= 30


def test_columns_picks_the_run_table_and_keeps_them_whole(ledger):
    rep = build_report(ledger, [EXP])
    text = render_report(rep, "table", columns="job_ids,state,loss", width=40)
    runs = text[text.index("Runs (4)"):].splitlines()[1:]
    assert runs[0].split() == ["run", "job", "ids", "state", "loss"]
    assert [r.split() for r in runs[2:]][2] == ["rB0", "1001_2,1002_0", "COMPLETED", "0.3"]
    md = render_report(rep, "markdown", columns=["metric.acc"])
    assert "| run | acc |" in md
    with pytest.raises(SlurmexpError) as info:
        render_report(rep, "table", columns="lossx")
    assert info.value.problems[0].key == "--columns"
    assert "pick from: run, lr, seed, state" in info.value.problems[0].fix
    with pytest.raises(SlurmexpError) as info:
        render_report(rep, "csv", columns="loss")
    assert info.value.problems[0].fix == (
        "drop --columns, or use --format table or --format markdown")


def test_markdown_cells_with_newlines_stay_in_their_row(ledger):
    ledger.set_run_state(EXP, ["rA1"], "FAILED", "line one\nline two | piped")
    md = render_report(build_report(ledger, [EXP]), "markdown")
    row = next(line for line in md.splitlines() if line.startswith("| rA1 "))
    assert "line one<br>line two \\| piped" in row and row.endswith(" |")


def test_unknown_format(report):
    with pytest.raises(SlurmexpError):
        render_report(report, "xml")


def test_importing_the_cli_side_does_not_import_pandas():
    code = ("import sys, slurmexp, slurmexp.report.frames, slurmexp.report.show, slurmexp.report.html_page; "
            "assert 'pandas' not in sys.modules, 'pandas imported at import time'")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- HTML ---------------------------------------------------------------------------------

def test_html_is_self_contained(ledger):
    rep = build_report(ledger, [EXP], by="lr", best="acc")
    html = render_report(rep, "html")
    assert "http://" not in html and "https://" not in html
    assert "<svg" in html and html.count("<table") >= 3
    for text in ("rB0", "1001_2,1002_0", "demo-abcdef12", "NODE_FAIL"):
        assert text in html
    assert "<script src" not in html and "<link" not in html


def _figures(html: str) -> dict[str, str]:
    """The metric plots of an HTML report by their label ("acc against lr")."""
    import re
    return {m.group(1): m.group(0) for m in re.finditer(r'<svg [^>]*aria-label="([^"]+ against [^"]+)".*?</svg>',
                                                        html)}


def test_html_plots_every_metric_or_those_of_metric(ledger):
    figures = _figures(render_report(build_report(ledger, [EXP]), "html"))
    assert set(figures) == {"acc against lr", "loss against lr", "acc against seed", "loss against seed"}
    only = _figures(render_report(build_report(ledger, [EXP]), "html", metrics=["loss"]))
    assert set(only) == {"loss against lr", "loss against seed"}
    with pytest.raises(SlurmexpError) as err:
        render_report(build_report(ledger, [EXP]), "html", metrics="los")
    assert err.value.problems[0].key == "--metric" and "acc, loss" in err.value.problems[0].fix
    with pytest.raises(SlurmexpError, match="--metric is for --format html"):
        render_report(build_report(ledger, [EXP]), "csv", metrics="loss")


def test_an_integer_parameter_gets_whole_number_ticks(ledger):
    import re
    seed = _figures(render_report(build_report(ledger, [EXP]), "html"))["acc against seed"]
    below = re.findall(r'text-anchor="middle">([^<]*)</text>', seed)
    assert below[:-1] == ["0", "1"], below        # the x ticks, then the axis title
    assert below[-1] == "seed"


def test_a_sampled_continuous_parameter_is_drawn_as_points(tmp_path):
    from slurmexp.report.build import continuous_params
    from slurmexp.report.svg_plots import metric_vs_param_svg

    copy = tmp_path / "sweep.toml"
    copy.write_text('name = "s"\ncommand = "x {wd} {opt} {n}"\n[sample]\nseed = 0\nn = 8\n'
                    '[sample.params]\nwd = { dist = "uniform", low = 0.0, high = 0.1 }\n'
                    'opt = { dist = "choice", values = ["a", "b"] }\nn = { dist = "int", low = 1, high = 3 }\n')
    assert continuous_params([{"sweep_copy_path": str(copy)}, {"sweep_copy_path": None}]) == ["wd"]
    wd = [0.011, 0.023, 0.042, 0.057, 0.061, 0.078, 0.083, 0.097]
    table = pd.DataFrame({"exp_id": "e", "state": "COMPLETED", "param.wd": wd,
                          "metric.loss": [1.0 - w for w in wd]})
    assert "<polyline" in metric_vs_param_svg(table, "wd", "loss")      # means joined by a line
    points = metric_vs_param_svg(table, "wd", "loss", scatter=True)
    assert "<polyline" not in points and points.count("<circle") == len(wd)
    assert "mean" not in points


def test_the_report_draws_a_parameter_its_sweep_samples_as_points(ledger, tmp_path):
    exp_dir = tmp_path / "exp"
    (exp_dir / "sweep.toml").write_text(
        'name = "demo"\ncommand = "x {lr} {seed}"\n[params]\nseed = [0, 1]\n[sample]\nseed = 3\nn = 2\n'
        '[sample.params]\nlr = { dist = "loguniform", low = 0.001, high = 0.1 }\n')
    rep = build_report(ledger, [EXP])
    assert rep.continuous == ["lr"]
    figures = _figures(render_report(rep, "html"))
    assert "<polyline" not in figures["acc against lr"] and "<polyline" not in figures["loss against lr"]
    assert "<polyline" in figures["acc against seed"]


def _png_info(path: Path) -> tuple[int, int, int]:
    """(width, height, distinct colours) of an 8-bit RGB/RGBA PNG, decoded here with zlib."""
    import numpy as np
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat.append(chunk)
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    bpp = 3 if colour == 2 else 4
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8)
    rows = raw.reshape(height, width * bpp + 1)
    out = np.zeros((height, width * bpp), dtype=np.uint8)
    prev = np.zeros(width * bpp, dtype=np.int32)
    for y in range(height):
        kind, line = rows[y, 0], rows[y, 1:].astype(np.int32)
        if kind == 0:
            cur = line
        elif kind == 2:
            cur = (line + prev) & 255
        elif kind == 1:
            cur = (np.cumsum(line.reshape(width, bpp), axis=0) & 255).reshape(-1)
        else:
            cur = np.zeros_like(line)
            for x in range(width * bpp):
                a = cur[x - bpp] if x >= bpp else 0
                b = prev[x]
                if kind == 3:
                    cur[x] = (line[x] + ((a + b) >> 1)) & 255
                else:
                    c = prev[x - bpp] if x >= bpp else 0
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                    cur[x] = (line[x] + pred) & 255
        out[y] = cur
        prev = cur
    pixels = out.reshape(-1, bpp)[:, :3]
    colours = np.unique(pixels[:, 0].astype(np.uint32) << 16 | pixels[:, 1].astype(np.uint32) << 8
                        | pixels[:, 2])
    return width, height, len(colours)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_html_screenshot_in_headless_chromium(ledger, tmp_path):
    browser = _chromium()
    if browser is None:
        msg = "chromium is not installed: apt-get install -y chromium (.ci/apt-packages.txt)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    page = tmp_path / "report.html"
    page.write_text(render_report(build_report(ledger, [EXP], by="lr", best="acc"), "html"),
                    encoding="utf-8")
    png = tmp_path / "shot.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}",
           f"--screenshot={png}", "--window-size=1280,2000", page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert png.exists(), f"no screenshot; chromium said:\n{proc.stderr[-3000:]}"
    keep = os.environ.get("SLURMEXP_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(png, keep)
    width, height, colours = _png_info(png)
    assert (width, height) == (1280, 2000)
    # Text, table rules and coloured plot marks: a blank or error page has a handful.
    assert colours > 50, f"the page looks blank ({colours} colours)"


# --- several experiments, unreconciled and unsubmitted runs -------------------------------

def add_second_experiment(led: Ledger, root: Path) -> str:
    """rZ0 never submitted; rZ1 ran but was never reconciled (no accounting); rZ2 finished."""
    exp_id, exp_dir = "other-12345678", root / "other"
    runs = [dict(run_id=f"rZ{i}", idx=i, params={"lr": 0.5, "seed": i, "opt": "adam"},
                 run_dir=exp_dir / "runs" / f"rZ{i}", chunk=None if i == 0 else 0,
                 task_index=None if i == 0 else i - 1) for i in range(3)]
    led.create_experiment(exp_id=exp_id, name="other", fingerprint="fp2", cluster="mini",
                          backend="slurm", exp_dir=exp_dir, sweep_path=None,
                          sweep_copy_path=None, site_path=None, site_hash=None,
                          template_hash=None, provenance=None, runs=runs)
    sub = led.record_intent(exp_id, 0, "0-1", 2, exp_dir / "chunk.sbatch", "h", "mini")
    a1, a2 = led.record_submitted(sub, "2001", "2026-11-22T09:00:00")
    led.update_attempt(a1, state="RUNNING")
    led.update_attempt(a2, state="COMPLETED", start_time="2026-11-22T09:00:30",
                       end_time="2026-11-22T09:10:30", elapsed_s=600, exit_code="0:0",
                       alloc_tres="cpu=8,mem=4000M,node=1", req_mem="500Mc",
                       max_rss="1000", total_cpu_s=2400)
    (exp_dir / "runs" / "rZ2").mkdir(parents=True)
    (exp_dir / "runs" / "rZ2" / "metrics.json").write_text('{"acc": 0.5, "note": "ok"}')
    return exp_id


def test_several_experiments(ledger, tmp_path):
    other = add_second_experiment(ledger, tmp_path)
    rep = build_report(ledger, [other, "demo"], by="lr", best="acc")
    assert [s["exp_id"] for s in rep.experiments] == [other, EXP]     # the order asked for
    assert list(rep.runs["exp_id"][:3]) == [other] * 3
    assert rep.params == ["lr", "opt", "seed"]       # the ledger keeps them sorted
    s = rep.experiments[0]
    assert s["runs_by_state"] == {"PLANNED": 1, "RUNNING": 1, "COMPLETED": 1}
    assert s["gpu_hours"] == 0 and s["cpu_hours"] == pytest.approx(8 * 600 / 3600)
    assert s["wait_s_median"] == 30 and s["cpu_efficiency"] == pytest.approx(0.5)
    assert s["mem_efficiency_max"] == pytest.approx(1000 / 4000)     # 500M per CPU x 8 CPUs
    t = rep.runs.set_index("run_id")
    assert t.loc["rZ0", "attempts"] == 0 and pd.isna(t.loc["rZ0", "job_ids"])
    assert t.loc["rZ0", "gpu_hours"] == 0
    assert pd.isna(t.loc["rZ1", "gpus"]) and t.loc["rZ1", "cpu_hours"] == 0
    assert t.loc["rZ2", "req_mem_mib"] == 4000 and t.loc["rZ2", "metric.note"] == "ok"
    assert list(rep.best["run_id"]) == ["rZ2", "rB0"]
    assert set(zip(rep.by_table["exp_id"], rep.by_table["param.lr"])) == {
        (other, 0.5), (EXP, 0.1), (EXP, 0.01)}
    text = render_report(rep, "table")
    assert text.index(f"Experiment {other}") < text.index(f"Experiment {EXP}")
    assert "experiment" in text.splitlines()[text.splitlines().index("Runs (7)") + 1]
    frame = pd.read_csv(io.StringIO(render_report(build_report(ledger, [other]), "csv")))
    assert list(frame["run_id"]) == ["rZ0", "rZ1", "rZ2"]
    html = render_report(rep, "html")
    assert "http://" not in html and "https://" not in html and "rZ2" in html


def test_integers_stay_integers_across_experiments(ledger, tmp_path):
    other = add_second_experiment(ledger, tmp_path)
    ledger.create_experiment(exp_id="noseed-1", name="noseed", fingerprint="fp3", cluster="mini",
                             backend="slurm", exp_dir=tmp_path / "n", sweep_path=None,
                             sweep_copy_path=None, site_path=None, site_hash=None,
                             template_hash=None, provenance=None,
                             runs=[dict(run_id="rN0", idx=0, params={"lr": 0.2}, chunk=None)])
    rep = build_report(ledger, [EXP, other, "noseed-1"])
    frame = pd.read_csv(io.StringIO(render_report(rep, "csv")), dtype=str,
                        keep_default_na=False)
    by_run = frame.set_index("run_id")
    assert list(by_run.loc[["rA0", "rA1", "rZ2", "rN0"], "param.seed"]) == ["0", "1", "2", ""]
    assert list(by_run.loc[["rA0", "rA1", "rZ2", "rZ1"], "gpus"]) == ["1", "2", "0", ""]
    assert list(by_run.loc[["rA0", "rZ2", "rZ1"], "cpus"]) == ["4", "8", ""]
    assert list(by_run.loc[["rA0", "rN0"], "param.lr"]) == ["0.1", "0.2"]
    runs = {r["run_id"]: r for r in json.loads(render_report(rep, "json"))["runs"]}
    assert runs["rA0"]["param.seed"] == 0 and isinstance(runs["rA0"]["param.seed"], int)
    assert runs["rN0"]["param.seed"] is None and runs["rA1"]["gpus"] == 2
    text = render_report(rep, "table", width=300)
    row = next(line for line in text.splitlines() if line.startswith("noseed-1"))
    assert "<NA>" not in text and "nan" not in row


def test_sample_seed_is_the_samplers_and_empty_without_sampling(ledger, tmp_path):
    ledger.create_experiment(exp_id="smp-1", name="smp", fingerprint="fp4", cluster="mini",
                             backend="slurm", exp_dir=tmp_path / "s", sweep_path=None,
                             sweep_copy_path=None, site_path=None, site_hash=None,
                             template_hash=None, provenance=None, runs=[
                                 dict(run_id="rS0", idx=0, params={"lr": 0.3, "seed": 5},
                                      seed=7, source="sample", chunk=None),
                                 dict(run_id="rS1", idx=1, params={"lr": 0.4, "seed": 6},
                                      source="extra", chunk=None)])
    rep = build_report(ledger, [EXP, "smp-1"])
    t = rep.runs.set_index("run_id")
    assert "seed" not in rep.runs.columns          # only param.seed and sample_seed
    assert t.loc["rS0", "sample_seed"] == 7 and t.loc["rS0", "param.seed"] == 5
    # the demo ledger stored its seed parameter in runs.seed, as older versions did
    assert t["sample_seed"].isna().tolist() == [True] * 4 + [False, True]
    frame = pd.read_csv(io.StringIO(render_report(rep, "csv")), dtype=str, keep_default_na=False)
    assert list(frame["sample_seed"]) == ["", "", "", "", "7", ""]


def test_failed_states_follow_the_ledger():
    from slurmexp import states
    from slurmexp.report import frames
    assert frames.FAILED_STATES is states.FAILED_STATES      # not a copy of its own
    assert states.FAILED_STATES == states.TERMINAL_STATES - {"COMPLETED"}


def test_empty_ledger(tmp_path):
    with Ledger(tmp_path / "l.db") as led:
        rep = build_report(led)
        assert rep.experiments == [] and len(rep.runs) == 0
        for fmt in ("table", "csv", "json", "markdown", "html"):
            render_report(rep, fmt)


def test_times_with_and_without_zones_still_subtract():
    from slurmexp.report.frames import _times
    naive = _times(pd.Series(["2026-11-21T14:00:00", None, "Unknown"]))
    aware = _times(pd.Series(["2026-11-21T14:01:00+00:00", "2026-11-21T15:00:00+01:00", None]))
    mixed = _times(pd.Series(["2026-11-21T14:01:00", "2026-11-21T14:02:00+00:00"]))
    assert (aware - naive).dt.total_seconds().tolist()[0] == 60
    assert str(aware[1]) == "2026-11-21 14:00:00"
    assert mixed.notna().all() and naive[1:].isna().all()
