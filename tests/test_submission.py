"""The one submission path (launch/submission.py) and the typed settings launch writes.

The scheduler here is a stand-in that answers like sbatch does (a job id, a refusal, or no
answer); it proves the ledger writes around the call, never Slurm behaviour (that is in the
cluster tests, which launch through the same function).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from slurmexp.backends.facts import SubmitResult
from slurmexp.cli import main
from slurmexp.errors import SlurmCommandError, SlurmUnavailable
from slurmexp.launch import submission as sm
from slurmexp.ledger import Ledger

REPO = Path(__file__).resolve().parent.parent
EXP = "sub-0123abcd"


class Answering:
    def __init__(self, answer):
        self.answer = answer
        self.calls = []
        self.times = {}

    def submit(self, script, *, extra_args=(), cwd=None):
        self.calls.append((Path(script), list(extra_args), cwd))
        if isinstance(self.answer, Exception):
            raise self.answer
        return SubmitResult(self.answer, "c")

    def submit_times(self, job_ids):
        return {j: self.times[j] for j in job_ids if j in self.times}


@pytest.fixture
def ledger(tmp_path):
    led = Ledger(tmp_path / "ledger.db")
    runs = [dict(run_id=f"r{i}", idx=i, params={"i": i}, run_dir=str(tmp_path / f"r{i}"), chunk=0,
                 task_index=i) for i in range(3)]
    led.create_experiment(EXP, "sub", "fp", "c", "slurm", tmp_path, None, None, None, None, None, {}, runs)
    yield led
    led.close()


def request(tmp_path, spec="0-2", extra=()):
    script = tmp_path / "chunk-000.sbatch"
    script.write_text("#!/bin/bash\ntrue\n")
    return sm.ChunkRequest(EXP, 0, spec, 3, script, "c", tuple(extra), tmp_path)


def test_submitted_records_job_attempts_and_runs(ledger, tmp_path):
    sched = Answering("77")
    out = sm.submit_chunk(ledger, sched, request(tmp_path, extra=["--array=0-2"]))
    assert (out.status, out.job_id) == (sm.SUBMITTED, "77")
    assert sched.calls[0][1] == ["--array=0-2"] and sched.calls[0][2] == tmp_path
    [sub] = ledger.submissions(EXP)
    assert (sub["state"], sub["job_id"], sub["sub_id"]) == ("SUBMITTED", "77", out.sub_id)
    assert len(sub["script_sha256"]) == 64
    assert sorted(a["job_key"] for a in ledger.attempts(EXP)) == ["77_0", "77_1", "77_2"]
    assert {r["state"] for r in ledger.runs(EXP)} == {"SUBMITTED"}


def test_refused_is_recorded_and_runs_stay_planned(ledger, tmp_path):
    out = sm.submit_chunk(ledger, Answering(SlurmCommandError("Invalid qos specification")),
                          request(tmp_path))
    assert out.status == sm.REFUSED and "Invalid qos" in out.message
    assert [s["state"] for s in ledger.submissions(EXP)] == ["FAILED"]
    assert {(r["state"], r["reason"]) for r in ledger.runs(EXP)} == {("PLANNED", "Invalid qos specification")}
    assert ledger.attempts(EXP) == []


def test_unanswered_leaves_the_intent_for_reconcile(ledger, tmp_path):
    out = sm.submit_chunk(ledger, Answering(SlurmUnavailable("sbatch timed out")), request(tmp_path))
    assert out.status == sm.UNANSWERED and out.error.exit_code == 3
    assert [s["state"] for s in ledger.submissions(EXP)] == ["INTENT"]
    assert {r["state"] for r in ledger.runs(EXP)} == {"PLANNED"} and ledger.attempts(EXP) == []


def test_submit_times_touch_only_the_new_submission(ledger, tmp_path):
    # An older submission of the same job id (ids are reused) whose time was never learnt.
    old = sm.submit_chunk(ledger, Answering("77"), request(tmp_path, spec="0"))
    ledger.set_run_state(EXP, ["r0"], "PLANNED")
    sched = Answering("77")
    sched.times = {"77": "2026-12-02T10:00:00"}
    new = sm.submit_chunk(ledger, sched, request(tmp_path, spec="0-2"))
    assert sm.stamp_submit_times(ledger, sched, [new]) == 3
    by_sub = {}
    for a in ledger.attempts(EXP):
        by_sub.setdefault(a["sub_id"], set()).add(a["submit_time"])
    assert by_sub == {old.sub_id: {None}, new.sub_id: {"2026-12-02T10:00:00"}}
    subs = {s["sub_id"]: s["submit_time"] for s in ledger.submissions(EXP)}
    assert subs == {old.sub_id: None, new.sub_id: "2026-12-02T10:00:00"}


def test_submit_times_unanswered_costs_nothing(ledger, tmp_path):
    out = sm.submit_chunk(ledger, Answering("78"), request(tmp_path))

    class Down(Answering):
        def submit_times(self, job_ids):
            raise SlurmUnavailable("squeue: slurmctld down")

    assert sm.stamp_submit_times(ledger, Down("x"), [out]) == 0
    assert {a["submit_time"] for a in ledger.attempts(EXP)} == {None}


def test_launch_stores_settings_for_every_chunk_of_a_group(tmp_path):
    """Launch writes the typed settings; a sweep cut into several arrays keeps one group that
    names every chunk (before, only chunk 0's resources were stored)."""
    site = tmp_path / "site.toml"
    text = (REPO / "site.toml").read_text().replace("max_array_size = 1001", "max_array_size = 2")
    site.write_text(text.replace('"templates/', f'"{REPO}/templates/'))
    assert "max_array_size = 2" in site.read_text()
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(f'name = "split"\ncommand = "{sys.executable} -c pass {{x}}"\n[params]\nx = [1, 2, 3, 4, 5]\n'
                     '[resources]\ntime = "00:05:00"\nmem = "100M"\narray_parallelism = 2\n'
                     '[retry]\nmax_attempts = 4\nescalate = true\n')
    result = CliRunner().invoke(main, ["--ledger", str(tmp_path / "l.db"), "launch", str(sweep), "--site",
                                       str(site), "--backend", "local"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    exp_id = result.stdout.strip().splitlines()[-1]
    led = Ledger(tmp_path / "l.db")
    s = led.experiment_settings(exp_id)
    assert (s.retry.max_attempts, s.retry.escalate) == (4, True)
    [group] = s.groups
    assert group.chunks == (0, 1, 2)
    assert (group.time_min, group.mem_mb, group.throttle) == (5, 100, 2)
    assert group.max_time_min is not None and group.max_mem_mb is not None
    assert {r["state"] for r in led.runs(exp_id)} == {"COMPLETED"}
    led.close()


def test_the_loser_of_concurrent_launches_says_already_launched(tmp_path, monkeypatch):
    """Two launches of one sweep race: the one whose insert loses gets the normal answer
    (nothing submitted, exit 0), not a raw UNIQUE-constraint error."""
    from slurmexp.launch import launcher

    sweep = tmp_path / "sweep.toml"
    sweep.write_text(f'name = "race"\ncommand = "{sys.executable} -c pass {{x}}"\n[params]\nx = [1, 2]\n')
    site = tmp_path / "site.toml"
    site.write_text((REPO / "site.toml").read_text().replace('"templates/', f'"{REPO}/templates/'))
    led = Ledger(tmp_path / "l.db")
    first = launcher.launch(sweep, site, backend="local", ledger=led)
    assert first.submitted
    # The second launch checked before the first had recorded anything:
    real = led.get_experiment
    calls = []
    monkeypatch.setattr(led, "get_experiment", lambda exp_id, required=False: (
        calls.append(exp_id) or None) if len(calls) == 0 else real(exp_id, required))
    second = launcher.launch(sweep, site, backend="local", ledger=led)
    assert not second.submitted and "already launched" in second.message
    assert second.exp_id == first.exp_id and len(led.experiments()) == 1
    assert len(led.attempts(first.exp_id)) == 2
    led.close()
