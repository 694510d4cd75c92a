"""`slurmexp retry` and `slurmexp cancel` through the CLI (CliRunner) on the real test cluster.

Everything goes through commands a user types: launch, reconcile, status, retry, cancel. The
outcome is checked in what they print, their exit codes, the ledger and Slurm's accounting.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from slurmexp.backends.slurm.backend import SlurmBackend
from slurmexp.cli import main
from slurmexp.ledger import Ledger
from slurmexp.states import TERMINAL_STATES

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parent.parent
SITE = str(REPO / "site.toml")

TRAIN = """\
import sys, time
if sys.argv[1] == "fail":
    print("ValueError: bad value", file=sys.stderr)
    sys.exit(3)
if sys.argv[1].startswith("sleep"):
    time.sleep(int(sys.argv[1][5:]))
"""


def write_sweep(tmp_path: Path, name: str, values: list[str]) -> Path:
    (tmp_path / "train.py").write_text(TRAIN)
    path = tmp_path / f"{name}.toml"
    path.write_text(f'name = "{name}"\ncommand = "{sys.executable} train.py {{x}}"\n'
                    f"[params]\nx = {json.dumps(values)}\n"
                    '[resources]\ntime = "00:05:00"\nmem = "100M"\n')
    return path


def cli(tmp_path: Path, *args: str):
    return CliRunner().invoke(main, ["--ledger", str(tmp_path / "ledger.db"), *args],
                              catch_exceptions=False)


def launch(tmp_path: Path, sweep: Path) -> str:
    result = cli(tmp_path, "launch", str(sweep), "--site", SITE)
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[-1]


def status(tmp_path: Path, exp_id: str) -> dict[str, dict]:
    result = cli(tmp_path, "status", exp_id, "--format", "json")
    assert result.exit_code == 0, result.output
    return {r["params"]["x"]: r for r in json.loads(result.stdout)}


def reconcile_until(tmp_path: Path, exp_id: str, done, timeout: float = 180) -> dict[str, dict]:
    """`slurmexp reconcile` every 2 s until `done(status)`; every pass must succeed."""
    deadline = time.monotonic() + timeout
    while True:
        result = cli(tmp_path, "reconcile", "--grace", "600", "--format", "json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["ok"], result.stdout
        runs = status(tmp_path, exp_id)
        if done(runs):
            return runs
        assert time.monotonic() < deadline, runs
        time.sleep(2)


def all_final(runs: dict[str, dict]) -> bool:
    return all(r["state"] in TERMINAL_STATES for r in runs.values())


@pytest.fixture(autouse=True)
def _cancel_leftovers(tmp_path):
    yield
    path = tmp_path / "ledger.db"
    if path.exists():
        ids = [a["job_id"] for a in Ledger(path).attempts(active_only=True) if a["job_id"]]
        if ids:
            subprocess.run(["scancel", *sorted(set(ids))], check=False, capture_output=True)


def test_retry_resubmits_only_the_failed_run_as_a_new_attempt(tmp_path, cluster):
    exp_id = launch(tmp_path, write_sweep(tmp_path, "cliretry", ["ok", "fail"]))
    runs = reconcile_until(tmp_path, exp_id, all_final)
    assert {x: r["state"] for x, r in runs.items()} == {"ok": "COMPLETED", "fail": "FAILED"}
    assert runs["fail"]["attempts"] == 1 and "exit code 3" in runs["fail"]["reason"]
    ledger = Ledger(tmp_path / "ledger.db")
    assert ledger.get_experiment(exp_id)["state"] == "FINISHED_WITH_FAILURES"

    # Nothing LOST here: a --lost retry has nothing to do and submits nothing.
    result = cli(tmp_path, "retry", exp_id, "--lost")
    assert (result.exit_code, result.stdout) == (0, "nothing to retry\n"), result.output
    assert len(ledger.submissions(exp_id)) == 1

    result = cli(tmp_path, "retry", exp_id)
    assert (result.exit_code, result.stdout) == (0, "1 array job(s) submitted\n"), result.output
    first, again = ledger.submissions(exp_id)
    fail_run = next(r for r in ledger.runs(exp_id) if r["params"]["x"] == "fail")
    ok_run = next(r for r in ledger.runs(exp_id) if r["params"]["x"] == "ok")
    # Only the failed task went back, in the same array position, as a new job.
    assert again["state"] == "SUBMITTED" and again["job_id"] != first["job_id"]
    assert again["array_spec"] == str(fail_run["task_index"]) and again["n_tasks"] == 1
    assert fail_run["n_attempts"] == 2 and fail_run["state"] not in TERMINAL_STATES
    assert ok_run["n_attempts"] == 1 and ok_run["state"] == "COMPLETED"
    exp = ledger.get_experiment(exp_id)
    assert exp["state"] == "SUBMITTED" and exp["reason"] == "manual retry of 1 run(s)"
    new = ledger.attempts(exp_id, run_id=fail_run["run_id"])[-1]
    assert new["attempt_no"] == 2 and new["job_key"] == f"{again['job_id']}_{fail_run['task_index']}"
    assert new["submit_time"]                      # stamped right after sbatch

    runs = reconcile_until(tmp_path, exp_id, all_final)
    assert runs["fail"]["state"] == "FAILED" and runs["fail"]["attempts"] == 2
    assert runs["ok"]["attempts"] == 1
    attempts = ledger.attempts(exp_id, run_id=fail_run["run_id"])
    assert [(a["state"], a["exit_code"]) for a in attempts] == [("FAILED", 3), ("FAILED", 3)]
    assert attempts[1]["job_id"] == again["job_id"]
    assert ledger.get_experiment(exp_id)["state"] == "FINISHED_WITH_FAILURES"
    # Slurm ran exactly two jobs for this experiment: the launch's and the retry's.
    rows = SlurmBackend().sacct_rows([], since="now-1hours", names=[f"sx.{exp_id}.000"])
    assert {r.array_job_id or r.job_id_raw for r in rows} == {first["job_id"], again["job_id"]}


def test_cancel_stops_every_job_and_marks_every_run(tmp_path, cluster):
    exp_id = launch(tmp_path, write_sweep(tmp_path, "clicancel", ["sleep300", "sleep301", "sleep302"]))
    ledger = Ledger(tmp_path / "ledger.db")
    (sub,) = ledger.submissions(exp_id)
    assert sub["job_id"] and sub["submit_time"]
    reconcile_until(tmp_path, exp_id, lambda runs: all(r["state"] == "RUNNING" for r in runs.values()),
                    timeout=90)

    result = cli(tmp_path, "cancel", exp_id, "--reason", "stopped by the test")
    assert (result.exit_code, result.stdout) == (0, "3 run(s) cancelled\n"), result.output
    runs = status(tmp_path, exp_id)
    assert {r["state"] for r in runs.values()} == {"CANCELLED"}
    assert {r["reason"] for r in runs.values()} == {"stopped by the test"}
    assert all(a["state"] == "CANCELLED" and a["failure_class"] == "user"
               for a in ledger.attempts(exp_id)) and len(ledger.attempts(exp_id)) == 3
    exp = ledger.get_experiment(exp_id)
    assert (exp["state"], exp["reason"]) == ("CANCELLED", "stopped by the test")

    # Slurm cancelled them too: sacct says CANCELLED for each task of the one array.
    deadline = time.monotonic() + 60
    while True:
        # from the job's own submit time: ids are reused after a reset of the test cluster
        rows = [r for r in SlurmBackend().sacct_rows([sub["job_id"]], since=sub["submit_time"])
                if r.array_job_id == sub["job_id"]]
        queued = SlurmBackend().squeue_rows(name_prefix=f"sx.{exp_id}.")
        if len(rows) == 3 and all(r.state == "CANCELLED" for r in rows) and not queued:
            break
        assert time.monotonic() < deadline, (rows, queued)
        time.sleep(1)

    # A reconcile pass afterwards neither revives nor retries anything; cancelling again is a no-op.
    result = cli(tmp_path, "reconcile", "--format", "json")
    assert result.exit_code == 0, result.output
    assert {r["state"] for r in status(tmp_path, exp_id).values()} == {"CANCELLED"}
    assert len(ledger.submissions(exp_id)) == 1
    assert ledger.get_experiment(exp_id)["state"] == "CANCELLED"
    result = cli(tmp_path, "cancel", exp_id)
    assert (result.exit_code, result.stdout) == (0, "0 run(s) cancelled\n"), result.output
