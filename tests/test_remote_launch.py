"""Launch, reconcile and report over SSH against the real sshd in the Slurm 24.11 root
(tests/remotelib.py), with no Slurm command on the local PATH: the sweep's command runs a script
that exists only on this machine, so the run can only succeed if the sources were synced."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from remotelib import TRAIN, launch, reconcile_until_finished, sx

from slurmexp.ledger import Ledger

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("no_local_slurm")]


def test_a_sweep_of_host_only_code_runs_on_the_remote_cluster(remote_node, remote_sweep, tmp_path):
    sweep, site, root = remote_sweep
    # validate's live checks and sbatch --test-only go over SSH too (the script copied there).
    proc = sx(tmp_path, "validate", str(sweep), "--site", str(site), "--format", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["skipped"] == [], proc.stdout
    exp_id = launch(tmp_path, sweep, site)
    ledger = Ledger(tmp_path / "l.db")
    exp = ledger.get_experiment(exp_id, required=True)
    sources = json.loads(exp["provenance_json"])["sources"]
    node_root = remote_node.fs_root / root.lstrip("/")
    # The sources went to root/src/<hash>/ on the node (and nowhere on the host's side of it).
    assert sources["remote_dir"].startswith(f"{root}/src/") and len(sources["hash"]) == 64
    assert (remote_node.fs_root / sources["remote_dir"].lstrip("/") / "train.sh").read_text() == TRAIN
    assert not Path(root).exists()
    # The manifests and scripts are on the cluster under root/experiments/<id>/ (each task
    # writes its run's folder there from its chunk's manifest).
    remote_exp = node_root / "experiments" / exp_id
    assert sorted(p.name for p in (remote_exp / "manifests").iterdir()) == ["chunk-000.files", "chunk-000.txt"]
    assert len((remote_exp / "manifests" / "chunk-000.txt").read_text().splitlines()) == 3
    script = next((remote_exp / "scripts").iterdir()).read_text()
    assert sources["remote_dir"] in script and str(tmp_path) not in script
    # The ledger stays here, with the submission recorded as locally.
    subs = ledger.submissions(exp_id)
    assert [s["state"] for s in subs] == ["SUBMITTED"] and subs[0]["job_id"]

    # logs --follow over SSH, before any pass: waits for the output on the cluster, ends with it.
    first = ledger.runs(exp_id)[0]["run_id"]
    proc = sx(tmp_path, "logs", first, "--follow", timeout=180)
    assert proc.returncode == 0 and "training x=" in proc.stdout, proc.stdout + proc.stderr

    assert reconcile_until_finished(tmp_path, ledger, exp_id) == "FINISHED", sx(tmp_path, "status", exp_id).stdout
    runs = ledger.runs(exp_id)
    assert {r["state"] for r in runs} == {"COMPLETED"}
    for r in runs:
        remote_run = remote_exp / "runs" / r["run_id"]
        assert (remote_run / "metrics.json").is_file()       # written there by the run
        assert (remote_run / "command.sh").is_file()         # by its task, from the manifest
        # ... mirrored here by the pass that saw the run end, and its summary stored with the
        # final state, so the report needs neither the cluster nor the files.
        (attempt,) = ledger.attempts(exp_id, run_id=r["run_id"])
        x = r["params"]["x"]
        assert json.loads(attempt["metrics_json"]) == {"loss": x * 10, "x": x}
    # logs reads the full output on the cluster: only the small files are mirrored here.
    for r in runs:
        x = r["params"]["x"]
        out = sx(tmp_path, "logs", r["run_id"])
        assert out.returncode == 0 and out.stdout.startswith(f"training x={x} on "), out.stdout + out.stderr
        err = sx(tmp_path, "logs", r["run_id"], "--stderr")
        assert err.returncode == 0 and err.stdout == f"a warning for x={x}\n", err.stdout + err.stderr
        assert not list((Path(r["run_dir"]) / "attempts").glob("*/stdout"))   # not mirrored
    # Launching the same sweep again submits nothing, and the unchanged sources are not resent.
    again = sx(tmp_path, "launch", str(sweep), "--site", str(site))
    assert again.returncode == 0 and "already launched" in again.stdout + again.stderr


def test_reconcile_is_one_round_trip_and_report_works_with_sshd_down(remote_node, remote_sweep, tmp_path):
    sweep, site, root = remote_sweep
    text = sweep.read_text().replace('command = "bash train.sh {x} {run_dir}"',
                                     'command = "sleep 12 && bash train.sh {x} {run_dir}"')
    sweep.write_text(text)
    exp_id = launch(tmp_path, sweep, site)
    ledger = Ledger(tmp_path / "l.db")
    # Every pass while the runs are active costs one command on the node: sacct, squeue and
    # the attempts' files together.
    served = remote_node.commands_run()
    proc = sx(tmp_path, "reconcile")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert remote_node.commands_run() == served + 1
    assert {a["state"] for a in ledger.attempts()} & {"PENDING", "RUNNING", "SUBMITTED"}

    # sshd stopped: the pass changes nothing and exits 3 with ssh's reason.
    before = [tuple(sorted(a.items())) for a in ledger.attempts()]
    states = {r["run_id"]: r["state"] for r in ledger.runs(exp_id)}
    remote_node.down()
    try:
        proc = sx(tmp_path, "reconcile")
        assert proc.returncode == 3, proc.stdout + proc.stderr
        assert "unreachable since" in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
        assert [tuple(sorted(a.items())) for a in ledger.attempts()] == before
        assert {r["run_id"]: r["state"] for r in ledger.runs(exp_id)} == states
        health = sx(tmp_path, "health")
        assert health.returncode == 1 and "unreachable" in health.stdout + health.stderr, health
    finally:
        remote_node.restart()

    # Back: the next passes finish the runs, each one round trip.
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        served = remote_node.commands_run()
        proc = sx(tmp_path, "reconcile")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert remote_node.commands_run() == served + 1
        if ledger.get_experiment(exp_id, required=True)["state"].startswith("FINISHED"):
            break
        time.sleep(3)
    assert ledger.get_experiment(exp_id, required=True)["state"] == "FINISHED"
    # The result files are mirrored here: report, show and status need no connection.
    remote_node.down()
    try:
        proc = sx(tmp_path, "report", exp_id, "--format", "json")
        assert proc.returncode == 0, proc.stderr
        runs = json.loads(proc.stdout)["runs"]
        assert sorted(v for r in runs for k, v in r.items() if k.endswith("loss")) == [10, 20, 30], runs
        run_id = ledger.runs(exp_id)[0]["run_id"]
        proc = sx(tmp_path, "show", run_id)
        assert proc.returncode == 0 and "COMPLETED" in proc.stdout, proc.stdout + proc.stderr
        assert "file host" in proc.stdout and "file exit_code  0" in proc.stdout, proc.stdout   # mirrored
        proc = sx(tmp_path, "status", exp_id)
        assert proc.returncode == 0 and proc.stdout.count("COMPLETED") == 3, proc.stdout
    finally:
        remote_node.restart()


def test_a_launch_that_dies_after_the_remote_sbatch_is_adopted_not_resubmitted(
        remote_node, remote_sweep, tmp_path, monkeypatch):
    """sbatch ran on the cluster but its answer never reached the ledger (the launch died, or
    sbatch's answer was lost): the intent stays, and reconcile adopts the tagged job over SSH."""
    from slurmexp.backends.slurm.remote import RemoteScheduler
    from slurmexp.errors import SlurmUnavailable
    from slurmexp.launch.launcher import launch as launch_sweep

    sweep, site, _root = remote_sweep
    real_submit = RemoteScheduler.submit

    def submit_then_lose_the_answer(self, script, **kw):
        real_submit(self, script, **kw)
        raise SlurmUnavailable("sbatch's answer was lost (test)")

    monkeypatch.setattr(RemoteScheduler, "submit", submit_then_lose_the_answer)
    ledger = Ledger(tmp_path / "l.db")
    result = launch_sweep(sweep, site, ledger=ledger)
    monkeypatch.undo()
    assert result.pending_intents == 1 and not result.job_ids
    assert [s["state"] for s in ledger.submissions(result.exp_id)] == ["INTENT"]
    assert reconcile_until_finished(tmp_path, ledger, result.exp_id) == "FINISHED"
    subs = ledger.submissions(result.exp_id)
    assert [s["state"] for s in subs] == ["ADOPTED"], subs
    assert len(ledger.attempts(result.exp_id)) == 3           # one job, never a second sbatch
    assert {r["state"] for r in ledger.runs(result.exp_id)} == {"COMPLETED"}


def test_retry_and_cancel_go_to_the_remote_cluster(remote_node, remote_sweep, tmp_path):
    sweep, site, _root = remote_sweep
    sweep.write_text(sweep.read_text().replace(
        'command = "bash train.sh {x} {run_dir}"',
        'command = "if [ {x} = 2 ]; then echo broken >&2; exit 3; fi; bash train.sh {x} {run_dir}"'))
    exp_id = launch(tmp_path, sweep, site)
    ledger = Ledger(tmp_path / "l.db")
    assert reconcile_until_finished(tmp_path, ledger, exp_id) == "FINISHED_WITH_FAILURES"
    failed = [r for r in ledger.runs(exp_id) if r["state"] != "COMPLETED"]
    assert [r["params"]["x"] for r in failed] == [2] and "broken" in (failed[0]["reason"] or "")
    # retry resubmits the failed task over SSH (the mirror's script path, sent as the cluster's).
    proc = sx(tmp_path, "retry", exp_id)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert reconcile_until_finished(tmp_path, ledger, exp_id) == "FINISHED_WITH_FAILURES"
    again = next(r for r in ledger.runs(exp_id) if r["run_id"] == failed[0]["run_id"])
    assert again["n_attempts"] == 2 and len(ledger.submissions(exp_id)) == 2

    # cancel: scancel over SSH for every job of an experiment still running.
    sweep.write_text(sweep.read_text().replace('name = "remote"', 'name = "remote-cancel"')
                     .replace('command = "if', 'command = "sleep 300; if'))
    exp2 = launch(tmp_path, sweep, site)
    proc = sx(tmp_path, "cancel", exp2)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {r["state"] for r in ledger.runs(exp2)} == {"CANCELLED"}
    # What Slurm says of the jobs (read over SSH by the next passes): cancelled there too.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert sx(tmp_path, "reconcile").returncode == 0
        if {a["state"] for a in ledger.attempts(exp2)} == {"CANCELLED"}:
            break
        time.sleep(3)
    assert {a["state"] for a in ledger.attempts(exp2)} == {"CANCELLED"}, ledger.attempts(exp2)
