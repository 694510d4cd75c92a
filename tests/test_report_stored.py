"""The metrics summary reconcile stores with an attempt's final state (`attempts.metrics_json`,
schema 7) and the report that reads it: the same report as from the run folders' files.

The report tests' ledger (test_report.build_ledger: four runs, one retried, one with only a
metrics.jsonl) and the reconcile tests' fake scheduler (test_reconcile.FakeBackend) are reused.
"""
from __future__ import annotations

import json
import shutil
from datetime import timedelta
from types import SimpleNamespace

import pytest

pd = pytest.importorskip("pandas")

from test_reconcile import EXP as REXP  # noqa: E402
from test_reconcile import FakeBackend, make_exp, row, submit, t0  # noqa: E402, F401
from test_report import EXP, build_ledger  # noqa: E402

from slurmexp.ledger import Ledger  # noqa: E402
from slurmexp.metrics import log_metrics, read_metrics  # noqa: E402
from slurmexp.reconcile import one_pass as rc  # noqa: E402
from slurmexp.reconcile.transitions import final_metrics  # noqa: E402
from slurmexp.report.build import build_report, render_report  # noqa: E402


def store_as_reconcile_does(led: Ledger, exp_id: str, run_ids=None) -> None:
    """What reconcile writes with each final state: `final_metrics` of the attempt's run."""
    for a in led.attempts(exp_id):
        if run_ids is None or a["run_id"] in run_ids:
            run = next(r for r in led.runs(exp_id) if r["run_id"] == a["run_id"])
            led.update_attempt(a["attempt_id"],
                               metrics_json=final_metrics(SimpleNamespace(run_dir=run["run_dir"])))


def same_report(a, b) -> None:
    pd.testing.assert_frame_equal(a.runs, b.runs)
    assert a.experiments == b.experiments and a.metrics == b.metrics
    b.generated = a.generated        # the time each was built (may cross a second between them)
    for fmt in ("csv", "json", "markdown"):
        assert render_report(a, fmt) == render_report(b, fmt)


@pytest.fixture
def ledger(tmp_path):
    led = build_ledger(tmp_path)
    yield led
    led.close()


def test_stored_summaries_give_the_report_the_files_give(ledger, tmp_path):
    from_files = build_report(ledger, [EXP])
    assert ledger.stored_metrics([EXP]) == {}           # nothing stored: every file was read
    store_as_reconcile_does(ledger, EXP)
    stored = {r: json.loads(m) for (_, r), m in ledger.stored_metrics([EXP]).items()}
    assert stored == {"rA0": {"acc": 0.8, "loss": 0.5}, "rA1": {"loss": 1.5},
                      "rB0": {"acc": 0.9, "loss": 0.3}, "rB1": {"acc": 0.86, "loss": 0.4}}
    shutil.rmtree(tmp_path / "exp" / "runs")             # the report no longer needs them
    same_report(build_report(ledger, [EXP]), from_files)
    assert build_report(ledger, [EXP], from_files=True).metrics == []


def test_a_run_without_metrics_is_stored_as_none_and_reported_as_without(ledger, tmp_path):
    (tmp_path / "exp" / "runs" / "rA1" / "metrics.jsonl").unlink()
    from_files = build_report(ledger, [EXP])
    store_as_reconcile_does(ledger, EXP)
    assert ledger.stored_metrics([EXP])[(EXP, "rA1")] == "{}"
    got = build_report(ledger, [EXP])
    same_report(got, from_files)
    assert got.experiments[0]["runs_with_metrics"] == 3


def test_only_the_newest_attempts_summary_counts_and_the_rest_are_read(ledger, tmp_path):
    """rB0's first attempt (NODE_FAIL) has a summary, its retry none (still going, say): rB0's
    metrics are its files'. rA0's summary is stored: its file is not read."""
    runs = tmp_path / "exp" / "runs"
    first = min(a["attempt_id"] for a in ledger.attempts(EXP, run_id="rB0"))
    ledger.update_attempt(first, metrics_json=json.dumps({"acc": 0.1, "loss": 9.0}))
    store_as_reconcile_does(ledger, EXP, run_ids={"rA0"})
    assert list(ledger.stored_metrics([EXP])) == [(EXP, "rA0")]
    (runs / "rA0" / "metrics.json").write_text("not json, and never read")
    (runs / "rB0" / "metrics.json").write_text(json.dumps({"acc": 0.95, "loss": 0.2}))
    table = build_report(ledger, [EXP]).runs.set_index("run_id")
    assert table.loc["rA0", "metric.loss"] == 0.5 and table.loc["rA0", "metric.acc"] == 0.8
    assert table.loc["rB0", "metric.loss"] == 0.2 and table.loc["rB0", "metric.acc"] == 0.95
    assert table.loc["rA1", "metric.loss"] == 1.5        # from metrics.jsonl


def test_values_survive_the_ledger_exactly(tmp_path):
    """Nested keys flattened, big integers, -0.0, unicode, booleans, null and a lone surrogate
    (a valid JSON escape that SQLite's UTF-8 text could not hold raw): the same values."""
    values = {"eval": {"f1": 0.30000000000000004, "n": 2 ** 60 + 1}, "neg": -0.0, "ok": True,
              "name": "Zürich ∑", "none": None, "odd": "\ud800", "curve": [1, 2]}
    (tmp_path / "metrics.json").write_text(json.dumps(values))     # as a program may write it
    got = json.loads(final_metrics(SimpleNamespace(run_dir=str(tmp_path))))
    assert got == read_metrics(tmp_path)
    assert got["eval.n"] == 2 ** 60 + 1 and str(got["neg"]) == "-0.0" and "curve" not in got
    assert final_metrics(SimpleNamespace(run_dir=None)) is None
    with Ledger(tmp_path / "ledger.db") as led:              # and SQLite stores it as it is
        led.db.execute("CREATE TEMP TABLE t (m TEXT)")
        led.db.execute("INSERT INTO t VALUES (?)", [final_metrics(SimpleNamespace(run_dir=str(tmp_path)))])
        assert json.loads(led.db.execute("SELECT m FROM t").fetchone()[0]) == got


def test_a_reconcile_pass_stores_the_summary_with_the_final_state(tmp_path, t0):  # noqa: F811
    led = Ledger(tmp_path / "home" / "ledger.db")
    scripts = make_exp(led, tmp_path)
    submit(led, scripts, "100", submit_time=t0)
    runs = tmp_path / REXP / "runs"
    log_metrics(run_dir=runs / "r000", step=1, loss=0.5, acc=0.75)
    (runs / "r001").mkdir(parents=True)
    (runs / "r001" / "metrics.jsonl").write_text('{"time": 1, "step": 3, "loss": 1.25}\n')
    fake = FakeBackend()
    fake.rows = [row("100_0", "COMPLETED", t0), row("100_1", "FAILED", t0, exit_code=1),
                 row("100_2", "RUNNING", t0)]          # 100_3: nothing, LOST after the grace
    rc.reconcile_pass(led, fake, now=t0 + timedelta(seconds=61), grace_s=60)
    by_run = {a["run_id"]: a for a in led.attempts(REXP) if a["attempt_no"] == 1}
    assert by_run["r000"]["state"] == "COMPLETED"
    assert json.loads(by_run["r000"]["metrics_json"]) == {"loss": 0.5, "acc": 0.75}
    assert json.loads(by_run["r001"]["metrics_json"]) == {"loss": 1.25}
    assert by_run["r002"]["state"] == "RUNNING" and by_run["r002"]["metrics_json"] is None
    assert by_run["r003"]["state"] == "LOST" and by_run["r003"]["metrics_json"] == "{}"
    assert [a["state"] for a in led.attempts(REXP, run_id="r003")] == ["LOST", "SUBMITTED"]
    # The report takes what was stored and reads the rest (r002 is running, r003's retry is
    # not yet): the same table as from the files alone.
    log_metrics(run_dir=runs / "r002", step=2, loss=0.9)
    same_report(build_report(led, [REXP]), build_report(led, [REXP], from_files=True))
    led.close()


def test_a_cancel_confirmed_by_sacct_stores_the_summary_too(tmp_path, t0):  # noqa: F811
    """`slurmexp cancel` marks the attempts CANCELLED without a summary (the task may still be
    writing); the pass that sees their final records stores it then."""
    from test_reconcile import qrow

    from slurmexp.reconcile import cancel

    led = Ledger(tmp_path / "home" / "ledger.db")
    scripts = make_exp(led, tmp_path, n=2)
    t = t0 - timedelta(minutes=2)
    submit(led, scripts, "100", submit_time=t)
    fake = FakeBackend()
    fake.queued = [qrow(f"100_{i}", "RUNNING", t) for i in (0, 1)]
    assert cancel.cancel_experiment(led, fake, REXP, reason="cancelled by test") == 2
    assert {a["metrics_json"] for a in led.attempts(REXP)} == {None}
    runs = tmp_path / REXP / "runs"
    log_metrics(run_dir=runs / "r000", loss=0.125)
    log_metrics(run_dir=runs / "r001", loss=0.5)
    fake.queued = []
    fake.rows = [row("100_0", "COMPLETED", t), row("100_1", "CANCELLED by 0", t)]
    assert rc.reconcile_pass(led, fake, grace_s=1).ok
    got = {a["run_id"]: (a["state"], json.loads(a["metrics_json"])) for a in led.attempts(REXP)}
    assert got == {"r000": ("COMPLETED", {"loss": 0.125}), "r001": ("CANCELLED", {"loss": 0.5})}
    led.close()
