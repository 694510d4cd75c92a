"""A launch SIGKILLed around the moment it records the experiment (issue: hardening, item 1).

The kill is real: `slurmexp launch` runs in its own process with a `sitecustomize` on its
path that sends SIGKILL to that process when the named function is entered. Before the fix the
experiment and its runs were committed in one transaction and SUBMITTING in another, so a kill
in between left an experiment nothing would ever submit. Now both are one transaction: a kill
leaves either no experiment (a relaunch launches it) or a SUBMITTING one that reconcile finishes.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from test_reconcile_cluster import CLUSTER, REPO, no_duplicates, reconcile_until, write_sweep

from slurmexp.backends.slurm.backend import SlurmBackend
from slurmexp.reconcile import one_pass as rc

pytestmark = pytest.mark.cluster


@pytest.fixture
def ledger(cluster_ledger):
    return cluster_ledger


@pytest.fixture
def backend(cluster):
    return SlurmBackend(cluster=CLUSTER)

HOOK = """
import os, signal
import {module} as _m
_target = {owner}
_orig = getattr(_target, {name!r})
def _die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)
setattr(_target, {name!r}, _die)
"""

POINTS = {
    # inside the transaction that records the experiment (before the fix: after its commit)
    "settings": ("slurmexp.ledger.experiments", "_m.ExperimentsMixin", "set_experiment_settings"),
    # after that transaction, before the first intent
    "first_submit": ("slurmexp.launch.launcher", "_m", "submit_chunk"),
    # after every job is recorded, before their submit times are stamped (one squeue)
    "stamp": ("slurmexp.launch.launcher", "_m", "stamp_submit_times"),
}


def launch_killed_at(ledger, tmp_path, point: str, n: int = 3):
    sweep, site = write_sweep(tmp_path, f"crash-{point.replace('_', '-')}", ["sleep 1"] * n)
    hook_dir = tmp_path / "hook"
    hook_dir.mkdir()
    module, owner, name = POINTS[point]
    # The hook is installed once slurmexp's modules are importable (sitecustomize runs first).
    (hook_dir / "sitecustomize.py").write_text(
        f"import sys\nsys.path.insert(0, {str(REPO)!r})\n" + HOOK.format(module=module, owner=owner, name=name))
    env = dict(os.environ, PYTHONPATH=f"{hook_dir}:{REPO}")
    argv = [sys.executable, "-m", "slurmexp", "--ledger", str(ledger.path), "launch", str(sweep),
            "--site", str(site)]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, (proc.returncode, proc.stderr)
    return sweep, site, argv


def test_killed_inside_the_record_leaves_nothing_and_a_relaunch_runs_it(ledger, backend, tmp_path):
    sweep, site, argv = launch_killed_at(ledger, tmp_path, "settings")
    # The experiment, its runs and its settings are one transaction: the kill undid all of it.
    assert ledger.experiments() == []

    env = dict(os.environ, PYTHONPATH=str(REPO))
    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    (exp,) = ledger.experiments()
    assert exp["state"] == "SUBMITTED" and len(ledger.submissions(exp["exp_id"])) == 1
    reconcile_until(ledger, backend, [exp["exp_id"]], timeout=120)
    assert {r["state"] for r in ledger.runs(exp["exp_id"])} == {"COMPLETED"}
    no_duplicates(ledger, exp["exp_id"])


def test_killed_before_the_first_sbatch_is_finished_by_reconcile(ledger, backend, tmp_path):
    sweep, site, argv = launch_killed_at(ledger, tmp_path, "first_submit")
    (exp,) = ledger.experiments()
    exp_id = exp["exp_id"]
    # Recorded whole: SUBMITTING (so reconcile takes it), every run PLANNED, the retry policy kept.
    assert exp["state"] == "SUBMITTING"
    assert {r["state"] for r in ledger.runs(exp_id)} == {"PLANNED"}
    assert ledger.experiment_settings(exp_id).groups and ledger.submissions(exp_id) == []
    # A relaunch does not submit it a second time; it says so and names the way on.
    env = dict(os.environ, PYTHONPATH=str(REPO))
    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "already launched" in again.stderr, again.stderr
    assert "slurmexp reconcile" in again.stderr
    assert ledger.submissions(exp_id) == []
    # Reconcile submits the runs once the launch is provably over (grace 0 for that pass), once.
    first = rc.reconcile_pass(ledger, backend, grace_s=0)
    assert first.ok and first.retries_submitted == 3, first.format(verbose=True)
    reconcile_until(ledger, backend, [exp_id], timeout=150)
    assert {r["state"] for r in ledger.runs(exp_id)} == {"COMPLETED"}
    assert len(ledger.submissions(exp_id)) == 1
    no_duplicates(ledger, exp_id)


def test_killed_before_stamping_submit_times_reconcile_fills_the_submission(ledger, backend, tmp_path):
    # Issue 9 item 13: the attempts learned their submit time from sacct, the submission kept NULL.
    sweep, site, argv = launch_killed_at(ledger, tmp_path, "stamp")
    (exp,) = ledger.experiments()
    exp_id = exp["exp_id"]
    (sub,) = ledger.submissions(exp_id)
    assert sub["state"] == "SUBMITTED" and sub["job_id"] and sub["submit_time"] is None
    reconcile_until(ledger, backend, [exp_id], timeout=150)
    (sub,) = ledger.submissions(exp_id)
    times = {a["submit_time"] for a in ledger.attempts(exp_id)}
    assert len(times) == 1 and None not in times, times
    assert sub["submit_time"] == times.pop()
    no_duplicates(ledger, exp_id)
