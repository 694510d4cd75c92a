"""Issue 15 items 1 and 8 on the real cluster: a completed 2-run sweep extended by one value with
`launch --skip-completed` submits one array task and reports 3 runs; a `[notify]` command runs
once, after the sweep has finished, from real reconcile passes."""
from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from clusterlib import CURRENT, sh

from slurmexp.backends.slurm.backend import SlurmBackend
from slurmexp.cli import main
from slurmexp.reconcile.one_pass import reconcile_pass

pytestmark = pytest.mark.cluster

TRAIN = """\
import sys, time
import slurmexp
time.sleep(1)
slurmexp.log_metrics(score=float(sys.argv[1]) * 10)
"""


def write_sweep(tmp_path: Path, values: list[int], extra: str = "") -> Path:
    (tmp_path / "train.py").write_text(TRAIN)
    sweep = tmp_path / "ext.toml"
    sweep.write_text('name = "ext"\n'
                     f'command = "{sys.executable} train.py {{x}}"\n'
                     f'[params]\nx = {values}\n'
                     '[resources]\npartition = "debug"\ntime = "00:02:00"\nmem = "100M"\n' + extra)
    return sweep


def cli(ledger, *args):
    result = CliRunner().invoke(main, ["--ledger", str(ledger.path), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def wait_finished(ledger, exp_id: str, timeout: float = 180) -> str:
    backend = SlurmBackend(cluster=CURRENT.name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        summary = reconcile_pass(ledger, backend)
        assert summary.ok, summary.error
        state = ledger.get_experiment(exp_id)["state"]
        if state in ("FINISHED", "FINISHED_WITH_FAILURES"):
            return state
        time.sleep(2)
    raise AssertionError(f"{exp_id} did not finish: {ledger.counts_by_state(exp_id)}")


def test_extending_a_completed_sweep_submits_only_the_new_run(tmp_path, cluster, cluster_ledger):
    ledger = cluster_ledger
    site = str(CURRENT.site_toml)
    first = cli(ledger, "launch", str(write_sweep(tmp_path, [1, 2])), "--site", site).stdout.split()[-1]
    assert wait_finished(ledger, first) == "FINISHED"

    launched = datetime.fromtimestamp(time.time() - 2).strftime("%Y-%m-%dT%H:%M:%S")
    res = cli(ledger, "launch", str(write_sweep(tmp_path, [1, 2, 3])), "--site", site, "--skip-completed")
    ext = res.stdout.split()[-1]
    assert ext != first
    assert f"reused 2 of 3 run(s) that completed with the same command and resources in {first}" in res.stderr
    [sub] = ledger.submissions(ext)
    assert sub["n_tasks"] == 1 and sub["array_spec"] == "0"
    # What Slurm has: one array job with one task. Job ids are reused on this cluster (tests
    # reset the controller), so accounting is read from this launch on only.
    out = sh("squeue", "-h", "-r", "-j", str(sub["job_id"]), "-o", "%i", check=False).stdout.split()
    acct = sh("sacct", "-n", "-X", "-P", "-S", launched, "-j", str(sub["job_id"]), "-o", "JobID").stdout.split()
    assert len(set(out) | set(acct)) == 1, (out, acct)
    assert wait_finished(ledger, ext) == "FINISHED"
    assert len(ledger.attempts(ext)) == 1

    report = json.loads(cli(ledger, "report", ext, "--format", "json").stdout)
    runs = report["runs"]
    assert len(runs) == 3 and {r["state"] for r in runs} == {"COMPLETED"}
    assert sorted(r["metric.score"] for r in runs) == [10.0, 20.0, 30.0]
    assert sorted(r["reused_from"] or "" for r in runs) == ["", first, first]

    # Every run done before (2 by the first experiment, 3 by the second): nothing is submitted,
    # live checks and all, and the experiment is FINISHED at once.
    res = cli(ledger, "launch", str(write_sweep(tmp_path, [2, 3])), "--site", site, "--skip-completed")
    last = res.stdout.split()[-1]
    assert ledger.get_experiment(last)["state"] == "FINISHED" and not ledger.submissions(last)
    assert {r["run_id"]: r["reused_from"] for r in ledger.runs(last)} == {
        r["run_id"]: first if r["reused_from"] else ext for r in ledger.runs(ext)
        if json.loads(r["params_json"])["x"] in (2, 3)}


def test_notify_runs_once_after_the_sweep_finished(tmp_path, cluster, cluster_ledger):
    ledger = cluster_ledger
    out = tmp_path / "notified.txt"
    sweep = write_sweep(tmp_path, [1, 2], extra=(
        '[notify]\ncommand = "echo $SLURMEXP_EXPERIMENT $SLURMEXP_STATE $SLURMEXP_COUNTS >> '
        f'{out}"\ntimeout = "20s"\n'))
    exp = cli(ledger, "launch", str(sweep), "--site", str(CURRENT.site_toml)).stdout.split()[-1]
    backend = SlurmBackend(cluster=CURRENT.name)
    first = reconcile_pass(ledger, backend)
    assert first.ok and not out.exists()            # the runs are in the queue
    assert wait_finished(ledger, exp) == "FINISHED"
    for _ in range(2):
        assert not reconcile_pass(ledger, backend).warnings
    assert out.read_text().splitlines() == [f"{exp} FINISHED COMPLETED=2"]
    state, outcome = ledger.notification(exp)
    assert state == "done" and outcome["exit_code"] == 0
