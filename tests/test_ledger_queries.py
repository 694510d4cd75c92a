"""The ledger's queries for reconcile, status and reports, and the typed rows they return."""
from __future__ import annotations

import dataclasses

import pytest

from slurmexp.ledger import Ledger
from slurmexp.ledger.rows import ActiveAttempt, Attempt, PlannedRun, RunStatus, Submission

EXP = "demo-abcdef12"


@pytest.fixture
def ledger(tmp_path):
    led = Ledger(tmp_path / "ledger.db")
    yield led
    led.close()


def make_exp(led: Ledger, exp_id: str = EXP, backend: str = "slurm", n: int = 4) -> None:
    runs = [dict(run_id=f"r{i}", idx=i, params={"i": i}, run_dir=f"/exp/{exp_id}/r{i}",
                 chunk=i // 2, task_index=i % 2) for i in range(n)]
    led.create_experiment(exp_id, "demo", "fp-" + exp_id, "mini", backend, f"/exp/{exp_id}",
                          None, None, None, None, None, {}, runs)


def submit(led: Ledger, chunk: int, job: str, spec: str = "0-1", exp_id: str = EXP,
           submit_time: str | None = None) -> tuple[int, list[int]]:
    sub = led.record_intent(exp_id, chunk, spec, 2, f"/exp/chunk-{chunk}.sbatch", "sha", "mini")
    return sub, led.record_submitted(sub, job, submit_time)


def test_active_attempts_are_typed_rows_with_their_context(ledger):
    make_exp(ledger)
    make_exp(ledger, "loc-00000001", backend="local")
    sub, ids = submit(ledger, 1, "77")
    submit(ledger, 0, "5", exp_id="loc-00000001")
    ledger.update_attempt(ids[1], state="COMPLETED")
    active = ledger.active_attempts(backend="slurm")
    assert [type(a) for a in active] == [ActiveAttempt]
    a = active[0]
    assert (a.attempt_id, a.exp_id, a.run_id, a.job_key, a.state) == (ids[0], EXP, "r2", "77_0",
                                                                      "SUBMITTED")
    assert (a.run_dir, a.exp_dir, a.script_path, a.sub_chunk, a.run_n_attempts) == (
        f"/exp/{EXP}/r2", f"/exp/{EXP}", "/exp/chunk-1.sbatch", 1, 1)
    assert a.created == ledger.submissions(EXP)[0]["created"]
    assert a.job_name == f"sx.{EXP}.001" and a.is_newest
    assert a["job_key"] == "77_0"                       # read-only mapping access
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.state = "RUNNING"
    with pytest.raises((AttributeError, TypeError)):
        a.note = "rows cannot gain keys"
    assert len(ledger.active_attempts()) == 3           # every backend
    assert len(ledger.active_attempts(backend=["slurm", "local"])) == 3


def test_unlisted_since_is_written_and_read_through_the_ledger(ledger):
    make_exp(ledger)
    _, ids = submit(ledger, 0, "77")
    ledger.update_attempt(ids[0], state="RUNNING", unlisted_since="2024-01-01T10:00:00.000+00:00")
    a = next(x for x in ledger.active_attempts() if x.attempt_id == ids[0])
    assert a.unlisted_since == "2024-01-01T10:00:00.000+00:00"
    ledger.update_attempt(ids[0], unlisted_since=None)
    assert ledger.attempts(EXP)[0]["unlisted_since"] is None


def test_successor_keeps_the_context_of_the_requeued_attempt(ledger):
    make_exp(ledger)
    _, ids = submit(ledger, 0, "77", submit_time="2024-01-01T10:00:00")
    prev = ledger.active_attempts()[0]
    new = prev.successor(ledger.record_requeue(ids[0], "2024-01-01T10:05:00"))
    assert (new.attempt_no, new.submit_time, new.state) == (2, "2024-01-01T10:05:00", "SUBMITTED")
    assert (new.run_dir, new.exp_dir, new.created, new.job_name) == (
        prev.run_dir, prev.exp_dir, prev.created, prev.job_name)
    assert new.is_newest and new.attempt_id != prev.attempt_id


def test_intents_and_recorded_submissions(ledger):
    make_exp(ledger)
    make_exp(ledger, "other-00000002")
    done, _ = submit(ledger, 0, "77", submit_time="2024-01-01T10:00:00")
    open_ = ledger.record_intent(EXP, 1, "0-1", 2, "/exp/chunk-1.sbatch", "sha", "mini")
    other = ledger.record_intent("other-00000002", 0, "0", 1, "/x", "sha", "mini")
    assert [(s.sub_id, s.state) for s in ledger.intents()] == [(open_, "INTENT"), (other, "INTENT")]
    assert [s.sub_id for s in ledger.intents(EXP)] == [open_]
    assert all(type(s) is Submission for s in ledger.intents())
    rec = ledger.recorded_submissions(EXP)
    assert [(s.sub_id, s.job_id, s.submit_time) for s in rec] == [(done, "77",
                                                                   "2024-01-01T10:00:00")]
    first = ledger.first_chunk_submission(EXP, 0)
    assert (first.sub_id, first.script_path, first.array_spec) == (done, "/exp/chunk-0.sbatch",
                                                                   "0-1")
    assert ledger.first_chunk_submission(EXP, 9) is None


def test_set_submission_submit_time_stamps_the_submission_and_its_attempts(ledger):
    make_exp(ledger)
    sub, ids = submit(ledger, 0, "77")
    assert ledger.set_submission_submit_time(sub, "2024-01-01T10:00:00") == 2
    assert {a["submit_time"] for a in ledger.attempts(sub_id=sub)} == {"2024-01-01T10:00:00"}
    assert ledger.submissions(EXP)[0]["submit_time"] == "2024-01-01T10:00:00"
    assert ledger.set_submission_submit_time(sub, "2024-01-01T11:00:00") == 0   # only missing ones
    assert ledger.submissions(EXP)[0]["submit_time"] == "2024-01-01T10:00:00"


def test_planned_and_resubmittable_runs(ledger):
    make_exp(ledger)
    make_exp(ledger, "loc-00000001", backend="local")
    _, ids = submit(ledger, 0, "77")
    ledger.update_attempt(ids[0], state="NODE_FAIL")
    ledger.set_run_state(EXP, ["r0"], "PLANNED", "retry")
    # r0 had an attempt: a retry; r2, r3 never did and the experiment is not SUBMITTING.
    res = ledger.resubmittable_runs(backend="slurm")
    assert [(type(r), r.run_id, r.n_attempts, r.exp_state) for r in res] == [
        (PlannedRun, "r0", 1, "PLANNED")]
    assert res[0].last_intent == ledger.submissions(EXP)[0]["created"]
    ledger.set_experiment_state(EXP, "SUBMITTING")
    assert [r.run_id for r in ledger.resubmittable_runs(backend="slurm")] == ["r0", "r2", "r3"]
    ledger.set_experiment_state(EXP, "CANCELLED")
    assert ledger.resubmittable_runs(backend="slurm") == []
    assert [r.run_id for r in ledger.planned_runs(EXP)] == ["r0", "r2", "r3"]
    assert [r.run_id for r in ledger.resubmittable_runs(backend="local")] == []


def test_run_history_queries(ledger):
    make_exp(ledger)
    _, ids = submit(ledger, 0, "77", submit_time="2024-01-01T10:00:00")
    ledger.update_attempt(ids[0], state="PREEMPTED")
    new = ledger.record_requeue(ids[0], "2024-01-01T10:05:00")
    assert ledger.attempt_states(EXP, "r0") == ["PREEMPTED", "SUBMITTED"]
    hist = ledger.run_attempts(EXP, "r0")
    assert [type(a) for a in hist] == [Attempt, Attempt]
    assert [(a.attempt_no, a.state) for a in hist] == [(1, "PREEMPTED"), (2, "SUBMITTED")]
    assert ledger.run_n_attempts(EXP, "r0") == 2 and ledger.run_n_attempts(EXP, "nope") is None
    assert ledger.restarts_before(hist[1].sub_id, "77_0", new["attempt_id"]) == 1
    assert ledger.restarts_before(hist[0].sub_id, "77_0", ids[0]) == 0
    # Many at once (a pass over SSH): the same numbers from one read.
    assert ledger.restarts_of(hist) == {a.attempt_id: ledger.restarts_before(a.sub_id, a.job_key, a.attempt_id)
                                        for a in hist} == {ids[0]: 0, new["attempt_id"]: 1}
    assert ledger.attempt_state(ids[0]) == "PREEMPTED" and ledger.attempt_state(999) is None


def test_run_statuses_and_counts(ledger):
    make_exp(ledger)
    make_exp(ledger, "other-00000002", n=1)
    _, ids = submit(ledger, 0, "77", submit_time="2024-01-01T10:00:00")
    ledger.update_attempt(ids[0], state="RUNNING", node="c1")
    rows = ledger.run_statuses(EXP)
    assert [type(r) for r in rows] == [RunStatus] * 4
    assert rows[0].to_dict() == {
        "run_id": "r0", "idx": 0, "params": {"i": 0}, "state": "RUNNING", "reason": None,
        "attempts": 1, "run_dir": f"/exp/{EXP}/r0", "job": "77_0", "cluster": "mini",
        "submit_time": "2024-01-01T10:00:00", "start_time": None, "end_time": None,
        "node": "c1", "partition": None, "exit_code": None}
    assert (rows[3].state, rows[3].job, rows[3].attempts) == ("PLANNED", None, 0)
    assert ledger.run_counts_by_experiment() == {
        EXP: {"RUNNING": 1, "SUBMITTED": 1, "PLANNED": 2}, "other-00000002": {"PLANNED": 1}}


def test_experiment_queries(ledger):
    make_exp(ledger)
    make_exp(ledger, "loc-00000001", backend="local")
    assert ledger.experiment_ids() == [EXP, "loc-00000001"]
    assert [e["exp_id"] for e in ledger.experiments(backend="local")] == ["loc-00000001"]
    assert [e["exp_id"] for e in ledger.experiments(backend=("slurm", "local"))] == [
        EXP, "loc-00000001"]
    assert ledger.experiment_state(EXP) == "PLANNED"
    with pytest.raises(Exception, match="no experiment"):
        ledger.experiment_state("nope")


def test_find_runs_by_exact_prefix(ledger):
    make_exp(ledger)
    make_exp(ledger, "other-00000002", n=1)
    assert [(r["exp_id"], r["run_id"]) for r in ledger.find_runs("r0")] == [
        (EXP, "r0"), ("other-00000002", "r0")]
    assert [r["run_id"] for r in ledger.find_runs("r", "demo")] == ["r0", "r1", "r2", "r3"]
    assert ledger.find_runs("R0") == [] and ledger.find_runs("r_") == []
    assert ledger.find_runs("r1")[0]["params"] == {"i": 1}


def test_tables_for_reports(ledger):
    pytest.importorskip("pandas")
    make_exp(ledger)
    make_exp(ledger, "other-00000002", n=1)
    submit(ledger, 0, "77")
    runs = ledger.runs_table([EXP])
    assert list(runs["run_id"]) == ["r0", "r1", "r2", "r3"] and "params_json" in runs
    assert len(ledger.runs_table()) == 5
    att = ledger.attempts_table()
    assert list(att["job_key"]) == ["77_0", "77_1"] and "sacct_json" not in att
