"""[checkpoint] on the REAL test cluster: a run preempted or timed out mid-way goes on from its
checkpoint as its next attempt, and a submitit `Checkpointable` resumes from what its
`checkpoint()` returned.

The command is a small bash script written by the test: it counts steps in
$SLURMEXP_CHECKPOINT_DIR/step (one a second, saved after each), says on stdout which attempt
($SLURMEXP_ATTEMPT) started from which step, and on the checkpoint signal exits 3 (it has
saved already). The assertions read the ledger's attempts and the counter: every step is done
exactly once across the attempts, and each attempt starts where the one before stopped.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
from clusterlib import CURRENT
from test_reconcile_cluster import no_duplicates, reconcile_until, wait_running

import slurmexp
import slurmexp.submitit as submitit
from slurmexp.backends.slurm.backend import SlurmBackend
from slurmexp.launch.launcher import launch

pytestmark = pytest.mark.cluster

CLUSTER = CURRENT.name
SITE = CURRENT.site_toml
cloudpickle.register_pickle_by_value(sys.modules[__name__])   # tasks cannot import this module

COUNTER = r'''#!/bin/bash
steps=$1
f="$SLURMEXP_CHECKPOINT_DIR/step"
n=$(cat "$f" 2>/dev/null || echo 0)
echo "attempt $SLURMEXP_ATTEMPT from $n"
trap 'echo "signal at $n"; exit 3' USR1
while (( n < steps )); do
    sleep 1 & wait $!
    n=$((n + 1))
    echo "$n" > "$f.tmp" && mv "$f.tmp" "$f"
done
echo "done at $n"
'''


@pytest.fixture
def ledger(cluster_ledger):
    return cluster_ledger


@pytest.fixture
def backend(cluster):
    return SlurmBackend(cluster=CLUSTER)


def counting_sweep(base: Path, name: str, steps: int, *, partition: str, time_min: int,
                   before: str, qos: str | None = None, retry: dict | None = None,
                   directives: tuple[str, ...] = ()) -> Path:
    folder = base / name
    folder.mkdir(parents=True)
    (folder / "count.sh").write_text(COUNTER)
    lines = [f"name = {json.dumps(name)}", 'command = "bash count.sh {steps}"',
             f"[params]\nsteps = [{steps}]"]
    if directives:
        (folder / "extra.sh.j2").write_text(
            '{% extends "slurm.sh.j2" %}\n{% block directives %}\n{{ super() -}}\n'
            + "".join(f"#SBATCH {d}\n" for d in directives) + "{% endblock %}\n")
        lines.insert(2, 'template = "extra.sh.j2"')
    lines += ["[resources]", f"partition = {json.dumps(partition)}", "cpus = 1", 'mem = "100M"',
              f'time = "{time_min}"']
    if qos:
        lines.append(f"qos = {json.dumps(qos)}")
    lines += ["[retry]"] + [f"{k} = {json.dumps(v)}" for k, v in
                            {"max_attempts": 4, "backoff_s": 0, **(retry or {})}.items()]
    lines += ["[checkpoint]", 'signal = "USR1"', f"before = {json.dumps(before)}", "requeue = true"]
    (folder / "sweep.toml").write_text("\n".join(lines) + "\n")
    return folder / "sweep.toml"


def attempt_folders(run_dir: Path, attempts: list[dict]) -> list[Path]:
    """Each ledger attempt's folder (retries are new jobs: their job key is the folder)."""
    return [run_dir / "attempts" / a["job_key"] for a in attempts]


def starts_and_stops(folders: list[Path]) -> list[tuple[int, int, int]]:
    """(SLURMEXP_ATTEMPT, first step, last step) per attempt folder, from the command's stdout."""
    out = []
    for d in folders:
        text = (d / "stdout").read_text()
        attempt, first = map(int, re.search(r"attempt (\d+) from (\d+)", text).groups())
        ends = re.findall(r"(?:signal|done) at (\d+)", text)
        out.append((attempt, first, int(ends[-1]) if ends else -1))
    return out


def test_preempted_run_continues_from_its_checkpoint(ledger, backend, cluster, tmp_path):
    """Low QOS on c2, preempted by a high-QOS job after a few steps: PREEMPTED, the task script
    recorded the SIGTERM, and the run goes on at once (backoff_s = 600 is not waited for) from
    the step it had reached, as attempt 2."""
    steps = 25
    sweep = counting_sweep(tmp_path, "ck-preempt", steps, partition="cpu", time_min=10,
                           before="60s", qos="low", retry={"backoff_s": 600},
                           directives=("--nodelist=c2", "--exclusive"))
    result = launch(sweep, SITE, backend="slurm", ledger=ledger)
    assert result.submitted, result
    exp_id, job = result.exp_id, result.job_ids[0]
    wait_running(backend, job, 1)
    (run,) = ledger.runs(exp_id)
    step_file = Path(run["run_dir"]) / "checkpoint" / "step"
    deadline = time.monotonic() + 60
    while not (step_file.exists() and int(step_file.read_text() or 0) >= 5):
        assert time.monotonic() < deadline, "the counter did not reach 5"
        time.sleep(0.5)
    high = cluster.preempt("c2", seconds=2)
    try:
        reconcile_until(ledger, backend, [exp_id], timeout=150)
    finally:
        subprocess.run(["scancel", high], check=False)
    (run,) = ledger.runs(exp_id)
    first, second = ledger.attempts(exp_id)
    assert run["state"] == "COMPLETED"
    assert (first["state"], first["failure_class"]) == ("PREEMPTED", "checkpointed"), first
    assert "received SIGTERM" in first["reason"]
    assert second["state"] == "COMPLETED" and second["job_id"] != first["job_id"]
    folders = attempt_folders(Path(run["run_dir"]), [first, second])
    assert (folders[0] / "signalled").read_text().split()[0] == "TERM"
    (a1, from1, _), (a2, from2, end2) = starts_and_stops(folders)
    assert (a1, from1) == (1, 0)
    assert a2 == 2 and 5 <= from2 < steps and end2 == steps      # went on from where it was
    assert int(step_file.read_text()) == steps
    no_duplicates(ledger, exp_id)


def test_timed_out_run_continues_from_its_checkpoint_without_escalation(ledger, backend, tmp_path):
    """A 2-minute run of 100 one-second steps with before = "30s": Slurm signals it ahead of its
    limit (up to a minute early), it saves and exits, and attempt 2 (a new job, the same time
    limit although escalate = true) finishes the count. No step is done twice."""
    steps = 100
    sweep = counting_sweep(tmp_path, "ck-timeout", steps, partition=CURRENT.debug_partition,
                           time_min=2, before="30s", retry={"escalate": True})
    result = launch(sweep, SITE, backend="slurm", ledger=ledger)
    assert result.submitted, result
    exp_id = result.exp_id
    reconcile_until(ledger, backend, [exp_id], timeout=420, every=3)
    (run,) = ledger.runs(exp_id)
    attempts = ledger.attempts(exp_id)
    assert run["state"] == "COMPLETED", (run, attempts)
    assert len(attempts) >= 2 and attempts[-1]["state"] == "COMPLETED"
    for a in attempts[:-1]:
        assert a["failure_class"] == "checkpointed" and "received SIGUSR1" in a["reason"], a
        assert a["state"] in ("FAILED", "TIMEOUT"), a
    folders = attempt_folders(Path(run["run_dir"]), attempts)
    spans = starts_and_stops(folders)
    assert [s[0] for s in spans] == list(range(1, len(attempts) + 1))
    assert spans[0][1] == 0 and spans[-1][2] == steps
    for before, after in zip(spans, spans[1:]):
        assert after[1] == before[2] > before[1], spans         # resumed where it stopped
    assert int((Path(run["run_dir"]) / "checkpoint" / "step").read_text()) == steps
    limits = CURRENT.sacct([a["job_id"].split("_")[0] for a in attempts], "jobid,timelimit")
    assert {r["timelimit"] for r in limits} == {"00:02:00"}, limits     # not escalated
    no_duplicates(ledger, exp_id)


class Counter(submitit.helpers.Checkpointable):
    """Counts to `steps`, one a second; submitit's default checkpoint() pickles it as it is,
    so a resumed call starts from `self.done`. `starts` records (SLURMEXP_ATTEMPT, step) of
    every start: the result proves where each attempt began."""

    def __init__(self) -> None:
        self.done = 0
        self.starts: list[list[int]] = []

    def __call__(self, steps: int) -> dict:
        self.starts.append([int(os.environ["SLURMEXP_ATTEMPT"]), self.done])
        progress = Path(os.environ["SLURMEXP_RUN_DIR"]) / "progress"
        while self.done < steps:
            time.sleep(1)
            self.done += 1
            progress.write_text(str(self.done))
        return {"done": self.done, "starts": self.starts}


def test_submitit_checkpointable_preempted_resumes_from_its_checkpoint(tmp_path, cluster, monkeypatch):
    """The drop-in's Checkpointable on low QOS, preempted after a few steps: the runner calls
    checkpoint() on the SIGTERM, the returned call replaces the run's, and attempt 2 runs it:
    the result shows it started at the step the first attempt had reached."""
    monkeypatch.setenv("SLURMEXP_WAIT_INTERVAL_S", "2")
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    ex = submitit.AutoExecutor(folder=tmp_path / "log" / "%j", site=SITE, ledger=home / "ledger.db",
                               retry={"backoff_s": 600})
    ex.update_parameters(timeout_min=10, qos="low", slurm_partition="cpu")
    steps = 25
    job = ex.submit(Counter(), steps)
    exp = slurmexp.experiment(job.experiment_id, home / "ledger.db")
    progress = job.run_dir / "progress"
    deadline = time.monotonic() + 90
    while not (progress.exists() and int(progress.read_text() or 0) >= 4):
        assert time.monotonic() < deadline, exp.status()
        time.sleep(0.5)
    array = job.job_id.split("_")[0]
    ((_, _, _, node),) = CURRENT.squeue([array])
    backend = SlurmBackend(cluster=CLUSTER)
    high = cluster.preempt(node, seconds=2)
    try:
        reconcile_until(exp.ledger, backend, [exp.id], timeout=150, grace_s=600)
    finally:
        subprocess.run(["scancel", high], check=False)
    first, second = exp.ledger.attempts(exp.id)
    assert (first["state"], first["failure_class"]) == ("PREEMPTED", "checkpointed"), first
    assert second["state"] == "COMPLETED"
    result = job.result()
    assert result["done"] == steps
    (a1, from1), (a2, from2) = result["starts"]
    assert (a1, from1) == (1, 0) and a2 == 2 and 4 <= from2 < steps, result
    assert exp.ledger.runs(exp.id)[0]["state"] == "COMPLETED"
