"""Faults that used to lose or mislabel runs (issue 9), without a cluster: what reconcile and
cancel do with records captured from the real cluster (tests/data/captured/) and a fake backend
(test_reconcile.py's). The same faults on the real cluster: test_faults_cluster.py.
"""
from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from pathlib import Path

from test_reconcile import (  # noqa: F401  (ledger: the fixture)
    CLUSTER,
    EXP,
    FakeBackend,
    ledger,
    make_exp,
    qrow,
    row,
    snapshot,
    states,
    submit,
)

from slurmexp.backends.slurm import parse as sp
from slurmexp.reconcile import cancel
from slurmexp.reconcile import match as rd
from slurmexp.reconcile import one_pass as rc

CAPTURED = Path(__file__).parent / "data" / "captured"
SEP = "\x1f"


def captured(version: str, name: str) -> list:
    folder = CAPTURED / version
    fields = (folder / "sacct_fields.txt").read_text().strip().split(",")
    rows = sp.parse_sacct((folder / name).read_text(), SEP, fields)
    return [dataclasses.replace(r, cluster=CLUSTER) for r in rows]


def local_ts(text: str) -> datetime:
    """A timestamp as sacct printed it (local, naive) as an aware datetime."""
    return datetime.fromisoformat(text).astimezone(timezone.utc)


# --- item 2: pending runs whose job id was taken after a controller state loss -------------

def test_captured_state_loss_record_is_recognised_and_a_persons_cancel_is_not():
    for version in ("22.05", "24.11"):
        old, new = captured(version, "sacct_pending_state_loss.txt")
        assert (old.job_id, old.state_raw, old.start, old.pending_tasks) == (
            "2_[0-1]", "CANCELLED", None, [0, 1]), version
        assert new.job_id == "2" and new.submit >= old.end   # the job that took the id
        assert rd.closed_after_state_loss(old) and not rd.closed_after_state_loss(new)
    for version in ("22.05", "24.11", "26.05"):             # scancel of a pending array, a job
        for name in ("sacct_cancelled_pending_array.txt", "sacct_cancelled.txt"):
            for r in captured(version, name):
                assert r.state == "CANCELLED" and not rd.closed_after_state_loss(r), (version, r)


def test_state_loss_while_pending_is_lost_and_retried(ledger, tmp_path):  # noqa: F811
    old, new = captured("22.05", "sacct_pending_state_loss.txt")
    scripts = make_exp(ledger, tmp_path, n=2)
    submit(ledger, scripts, "2", submit_time=local_ts(old.submit))
    fake = FakeBackend()
    fake.rows = [old, new]
    now = local_ts(new.end) + timedelta(seconds=30)
    s = rc.reconcile_pass(ledger, fake, now=now, grace_s=3600)
    assert s.ok and s.lost == 2, s.format(verbose=True)
    first = [a for a in ledger.attempts() if a["attempt_no"] == 1]
    assert {(a["state"], a["failure_class"]) for a in first} == {("LOST", "infrastructure")}
    assert all("controller lost its state" in a["reason"] and a["exit_code"] is None for a in first)
    # retried by the policy (backoff 0): one sbatch for both tasks
    assert len(fake.submitted) == 1 and fake.submitted[0]["args"] == ["--array=0-1%2"]
    assert set(states(ledger).values()) == {"SUBMITTED"}


# --- item 3: cancel right after some tasks ended -------------------------------------------

def test_cancel_stops_only_what_the_queue_holds_and_sacct_says_how_the_rest_ended(ledger, tmp_path):  # noqa: F811
    t0 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=2)
    scripts = make_exp(ledger, tmp_path, n=5)
    submit(ledger, scripts, "100", submit_time=t0)
    fake = FakeBackend()
    # Tasks 0-2 ended before the cancel (no pass has seen them yet); 3 and 4 still run.
    fake.rows = [row("100_0", "COMPLETED", t0), row("100_1", "FAILED", t0, exit_code=3),
                 row("100_2", "NODE_FAIL", t0)]
    fake.queued = [qrow(f"100_{i}", "RUNNING", t0) for i in (3, 4)]
    assert cancel.cancel_experiment(ledger, fake, EXP, reason="cancelled by test") == 2
    assert fake.cancelled == [["100"]]
    assert states(ledger) == {"r000": "SUBMITTED", "r001": "SUBMITTED", "r002": "SUBMITTED",
                              "r003": "CANCELLED", "r004": "CANCELLED"}
    assert ledger.get_experiment(EXP)["state"] == "CANCELLED"
    fake.queued = []
    fake.rows += [row(f"100_{i}", "CANCELLED by 0", t0) for i in (3, 4)]
    s = rc.reconcile_pass(ledger, fake, grace_s=60)
    assert s.ok, s.format(verbose=True)
    assert states(ledger) == {"r000": "COMPLETED", "r001": "FAILED", "r002": "NODE_FAIL",
                              "r003": "CANCELLED", "r004": "CANCELLED"}
    # the cancelled experiment stays cancelled, and the node failure is not retried in it
    assert ledger.get_experiment(EXP)["state"] == "CANCELLED" and fake.submitted == []
    assert ledger.runs(EXP)[3]["reason"] == "cancelled by test"


def test_cancelling_a_finished_experiment_changes_nothing(ledger, tmp_path):  # noqa: F811
    t0 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=2)
    scripts = make_exp(ledger, tmp_path, n=2)
    submit(ledger, scripts, "100", submit_time=t0)
    fake = FakeBackend()
    fake.rows = [row("100_0", "COMPLETED", t0), row("100_1", "FAILED", t0, exit_code=1)]
    rc.reconcile_pass(ledger, fake, grace_s=60)
    assert ledger.get_experiment(EXP)["state"] == "FINISHED_WITH_FAILURES"
    before = snapshot(ledger)
    assert cancel.cancel_experiment(ledger, fake, EXP) == 0
    assert fake.cancelled == [] and snapshot(ledger) == before



def test_a_task_that_ended_between_squeue_and_scancel_keeps_sacct_state(ledger, tmp_path):  # noqa: F811
    """The queue still listed both tasks when cancel asked, but task 0 had ended by the time
    the scancel came: cancel marked both CANCELLED, and reconcile gives task 0 sacct's state."""
    t0 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=2)
    scripts = make_exp(ledger, tmp_path, n=2)
    submit(ledger, scripts, "100", submit_time=t0)
    fake = FakeBackend()
    fake.queued = [qrow(f"100_{i}", "RUNNING", t0) for i in (0, 1)]
    assert cancel.cancel_experiment(ledger, fake, EXP, reason="cancelled by test") == 2
    assert set(states(ledger).values()) == {"CANCELLED"}
    fake.queued = []
    # accounting lags: still RUNNING; a tiny grace period must not make it LOST
    fake.rows = [row("100_0", "RUNNING", t0), row("100_1", "RUNNING", t0)]
    assert rc.reconcile_pass(ledger, fake, grace_s=1).ok
    assert set(states(ledger).values()) == {"CANCELLED"}
    fake.rows = [row("100_0", "COMPLETED", t0), row("100_1", "CANCELLED by 0", t0)]
    s = rc.reconcile_pass(ledger, fake, grace_s=1)
    assert s.ok and s.moved == {"COMPLETED": 1}, s.format(verbose=True)
    first, second = (ledger.attempts(EXP, run_id=r)[0] for r in ("r000", "r001"))
    assert states(ledger) == {"r000": "COMPLETED", "r001": "CANCELLED"}
    assert first["exit_code"] == 0 and "ended before `slurmexp cancel`" in first["reason"]
    assert second["reason"] == "cancelled by test" and second["end_time"]
    assert ledger.get_experiment(EXP)["state"] == "CANCELLED" and fake.submitted == []
    # both confirmed: nothing is watched any more
    fake.calls.clear()
    assert rc.reconcile_pass(ledger, fake).ok and fake.calls == {}


# --- item 4: TIMEOUT after a slurmctld outage for a job whose batch script exited 0 ---------

VERSIONS = ("22.05", "24.11", "26.05")


def test_batch_step_state_and_exit_code_are_read_from_captured_output():
    for version in VERSIONS:
        timeout = captured(version, "sacct_timeout.txt")[0]      # a real time limit
        assert (timeout.state, timeout.batch_state, timeout.batch_exit_code, timeout.batch_signal) \
            == ("TIMEOUT", "CANCELLED", 0, 15), version
        failed = captured(version, "sacct_failed.txt")[0]
        assert (failed.batch_state, failed.batch_exit_code) == ("FAILED", 3), version
        tasks = captured(version, "sacct_completed_array.txt")
        assert tasks and {(t.batch_state, t.batch_exit_code, t.batch_signal) for t in tasks} == \
            {("COMPLETED", 0, 0)}, version
        (pending, *_) = captured(version, "sacct_pending_array.txt")
        assert pending.batch_state is None                     # no step yet


def outage_timeout(version: str) -> list:
    """The captured TIMEOUT job's allocation row with its batch step as a slurmctld outage
    leaves it: the batch step's state and exit code are those of a script that exited 0
    (`COMPLETED 0:0`, as every captured completed job's batch step reads), the rest as captured."""
    folder = CAPTURED / version
    alloc, batch = (folder / "sacct_timeout.txt").read_text().splitlines()[:2]
    cols = batch.split(SEP)
    assert (cols[2], cols[7]) == ("CANCELLED", "0:15")
    cols[2], cols[7] = "COMPLETED", "0:0"
    fields = (folder / "sacct_fields.txt").read_text().strip().split(",")
    (rec,) = sp.parse_sacct(alloc + "\n" + SEP.join(cols) + "\n", SEP, fields)
    return [dataclasses.replace(rec, cluster=CLUSTER, job_id="100_0", array_job_id="100",
                                array_task=0)]


def _timeout_attempt(ledger, tmp_path, rec, exit_code: str | None, signalled: bool = False):  # noqa: F811
    scripts = make_exp(ledger, tmp_path, n=1)
    submit(ledger, scripts, "100", submit_time=local_ts(rec.submit), spec="0")
    run_dir = Path(ledger.runs(EXP)[0]["run_dir"])
    folder = run_dir / "attempts" / "100_0"
    folder.mkdir(parents=True)
    if exit_code is not None:
        (folder / "exit_code").write_text(exit_code + "\n")
    if signalled:
        (folder / "signalled").write_text("TERM 2026-12-02T03:43:17Z\n")
    fake = FakeBackend()
    fake.rows = [rec]
    s = rc.reconcile_pass(ledger, fake, now=local_ts(rec.end) + timedelta(seconds=30), grace_s=60)
    assert s.ok, s.format(verbose=True)
    (a,) = ledger.attempts(EXP)
    return a


def test_timeout_whose_batch_step_and_exit_code_file_say_0_is_completed(ledger, tmp_path):  # noqa: F811
    (rec,) = outage_timeout("22.05")
    a = _timeout_attempt(ledger, tmp_path, rec, "0")
    assert (a["state"], a["exit_code"], a["failure_class"]) == ("COMPLETED", 0, None), a
    assert "batch step is COMPLETED 0:0" in a["reason"] and "exit_code file says 0" in a["reason"]
    assert ledger.runs(EXP)[0]["state"] == "COMPLETED"
    assert ledger.get_experiment(EXP)["state"] == "FINISHED"


def test_outage_timeout_of_every_version_is_read_alike():
    for version in VERSIONS:
        (rec,) = outage_timeout(version)
        assert (rec.state, rec.batch_state, rec.batch_exit_code, rec.batch_signal) == (
            "TIMEOUT", "COMPLETED", 0, 0), version


def test_timeout_stays_timeout_without_both_witnesses(ledger, tmp_path):  # noqa: F811
    (rec,) = outage_timeout("22.05")
    assert _timeout_attempt(ledger, tmp_path / "a", rec, None)["state"] == "TIMEOUT"


def test_timeout_stays_timeout_when_the_exit_code_file_says_otherwise(ledger, tmp_path):  # noqa: F811
    (rec,) = outage_timeout("22.05")
    assert _timeout_attempt(ledger, tmp_path, rec, "143")["state"] == "TIMEOUT"


def test_real_timeout_stays_timeout(ledger, tmp_path):  # noqa: F811
    real = captured("22.05", "sacct_timeout.txt")[0]             # batch step CANCELLED 0:15
    rec = dataclasses.replace(real, job_id="100_0", array_job_id="100", array_task=0)
    a = _timeout_attempt(ledger, tmp_path, rec, "0")
    assert (a["state"], a["failure_class"]) == ("TIMEOUT", "resources")


def test_signalled_attempt_is_not_read_as_completed(ledger, tmp_path):  # noqa: F811
    (rec,) = outage_timeout("22.05")
    assert _timeout_attempt(ledger, tmp_path, rec, "0", signalled=True)["state"] == "TIMEOUT"
