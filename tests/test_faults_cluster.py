"""Faults that used to lose or mislabel runs (issue 9), on the REAL test cluster: a controller
that loses its state while runs are pending, and `slurmexp cancel` racing tasks that had ended.

Experiments go in through the product's launch path, as in test_reconcile_cluster.py (whose
sweep and reconcile helpers these tests use).
"""
from __future__ import annotations

import subprocess
import time

import pytest
from clusterlib import CURRENT
from test_reconcile_cluster import launch_exp, no_duplicates, reconcile_until

from slurmexp.backends.slurm.backend import SlurmBackend
from slurmexp.reconcile import cancel
from slurmexp.states import TERMINAL_STATES

pytestmark = pytest.mark.cluster


@pytest.fixture
def ledger(cluster_ledger):
    return cluster_ledger


@pytest.fixture
def backend(cluster):
    return SlurmBackend(cluster=CURRENT.name)


def _sacct_records(cluster, job: str, since: str) -> list[dict]:
    """Every record of job id `job` (tasks and pending ranges) submitted since `since`."""
    return [r for r in cluster.sacct([job], "jobid,jobidraw,state,submit,start,end,jobname",
                                     duplicates=True, since=since)
            if r["jobid"].split("_")[0] == job]


def _wait(what: str, cond, timeout: float = 60, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


# --- controller state lost while runs are pending (item 2) ----------------------------------

@pytest.mark.destructive(wipes_state=True)
def test_pending_runs_whose_job_id_is_taken_after_a_controller_state_loss_are_lost_and_retried(
        ledger, backend, cluster, tmp_path):
    """The runs are held (pending) when slurmctld's state is wiped; a new job then gets their
    job id, and slurmdbd closes their record as CANCELLED (never started, nobody asked). That is
    an infrastructure loss: LOST, with the controller's state loss as the reason, and retried."""
    cluster.reset()
    exp = launch_exp(ledger, tmp_path, "pendlost", ["true"] * 2, directives=("--hold",))
    job = exp.job_id
    _wait("the held array in the queue",
          lambda: [q for q in backend.squeue_rows([job]) if q.state == "PENDING"])
    first = ledger.attempts(exp.exp_id)
    assert {a["state"] for a in first} <= {"SUBMITTED", "PENDING"}, first
    since = first[0]["submit_time"]
    assert since

    cluster.reset()                       # the controller forgets the pending array
    # New jobs take the ids from the start again (launch's own checks may have used some
    # before the array's): submit until one has the array's id.
    new = [cluster.sbatch(wrap="true")]
    while int(new[-1]) < int(job) and len(new) < 20:
        new.append(cluster.sbatch(wrap="true"))
    assert new[-1] == job, f"the reset should have given job id {job} again, got {new}"

    def closed():
        old = [r for r in _sacct_records(cluster, job, since) if r["jobname"] != "sx-test"]
        return old if old and all(not r["state"].startswith("PENDING") for r in old) else None

    old = _wait("slurmdbd to close the old record", closed)
    print(f"\nold records of job {job} after its id was reused: {old}")
    # What slurmdbd does (the fault, not the product): CANCELLED, never started, no requester.
    assert all(r["state"] == "CANCELLED" and r["start"] in ("None", "Unknown", "") for r in old), old

    # grace_s large: LOST must come from the closed record, not from the runaway-record clock.
    reconcile_until(ledger, backend, [exp.exp_id],
                    lambda led: all(a["state"] in TERMINAL_STATES
                                    for a in led.attempts(exp.exp_id) if a["attempt_no"] == 1),
                    timeout=60, grace_s=3600)
    for a in ledger.attempts(exp.exp_id):
        if a["attempt_no"] != 1:
            continue
        assert (a["state"], a["failure_class"]) == ("LOST", "infrastructure"), a
        assert "controller" in a["reason"] and "state" in a["reason"], a["reason"]
    # retried: a second attempt per run, submitted by the retry policy (held again by the
    # sweep's own --hold: release it)
    attempts = reconcile_until(ledger, backend, [exp.exp_id],
                               lambda led: len(led.attempts(exp.exp_id)) == 4,
                               timeout=60, grace_s=3600) and ledger.attempts(exp.exp_id)
    retry_jobs = sorted({a["job_id"] for a in attempts if a["attempt_no"] == 2})
    assert retry_jobs and job not in retry_jobs, attempts
    subprocess.run(["scontrol", "release", *retry_jobs], check=False, capture_output=True)
    reconcile_until(ledger, backend, [exp.exp_id], timeout=120, grace_s=3600)
    assert ledger.counts_by_state(exp.exp_id) == {"COMPLETED": 2}
    assert all(r["n_attempts"] == 2 for r in ledger.runs(exp.exp_id))
    assert ledger.get_experiment(exp.exp_id)["state"] == "FINISHED"
    no_duplicates(ledger, exp.exp_id)


# --- cancel right after some tasks ended (item 3) -------------------------------------------

def test_cancel_right_after_some_tasks_ended_cancels_only_the_rest(ledger, backend, cluster, tmp_path):
    """Tasks 0 and 1 end at once (COMPLETED, FAILED), 2 and 3 sleep; `slurmexp cancel` comes
    before any reconcile pass has seen the first two end. Only the sleepers are cancelled; the
    next pass records sacct's COMPLETED and FAILED for the others, and the experiment stays
    CANCELLED. Cancelling a FINISHED experiment leaves it FINISHED."""
    exp = launch_exp(ledger, tmp_path, "cancelrace", ["true", "exit 3", "sleep 120", "sleep 120"])
    job = exp.job_id
    keys = [f"{job}_{i}" for i in range(4)]
    since = ledger.attempts(exp.exp_id)[0]["submit_time"]
    assert since
    _wait("tasks 0 and 1 to end and 2 and 3 to run", lambda: (
        {r["jobid"]: r["state"].split()[0] for r in cluster.sacct([job], "jobid,state", since=since)}
        .items() >= {(keys[0], "COMPLETED"), (keys[1], "FAILED")}
        and len([q for q in backend.squeue_rows([job]) if q.state == "RUNNING"]) == 2), timeout=90)
    assert {a["state"] for a in ledger.attempts(exp.exp_id)} == {"SUBMITTED"}   # no pass yet

    assert cancel.cancel_experiment(ledger, backend, exp.exp_id) == 2
    by_key = {a["job_key"]: a for a in ledger.attempts(exp.exp_id)}
    assert [by_key[k]["state"] for k in keys] == ["SUBMITTED", "SUBMITTED", "CANCELLED", "CANCELLED"]
    assert ledger.get_experiment(exp.exp_id)["state"] == "CANCELLED"
    cluster.wait_states([job], {"COMPLETED", "FAILED", "CANCELLED"}, timeout=60, expect_rows=4)

    reconcile_until(ledger, backend, [exp.exp_id], timeout=60)
    by_key = {a["job_key"]: a for a in ledger.attempts(exp.exp_id)}
    assert [by_key[k]["state"] for k in keys] == ["COMPLETED", "FAILED", "CANCELLED", "CANCELLED"]
    assert by_key[keys[1]]["exit_code"] == 3 and by_key[keys[2]]["reason"] == "cancelled by user"
    assert [r["state"] for r in ledger.runs(exp.exp_id)] == ["COMPLETED", "FAILED", "CANCELLED",
                                                             "CANCELLED"]
    assert ledger.get_experiment(exp.exp_id)["state"] == "CANCELLED"
    assert len(ledger.submissions(exp.exp_id)) == 1          # nothing retried

    done = launch_exp(ledger, tmp_path, "cancelfinished", ["true"])
    reconcile_until(ledger, backend, [done.exp_id], timeout=60)
    assert ledger.get_experiment(done.exp_id)["state"] == "FINISHED"
    assert cancel.cancel_experiment(ledger, backend, done.exp_id) == 0
    assert ledger.get_experiment(done.exp_id)["state"] == "FINISHED"
    assert [r["state"] for r in ledger.runs(done.exp_id)] == ["COMPLETED"]
