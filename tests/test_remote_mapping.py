"""The pure parts of the launch handoff over SSH: what an experiment records of its [remote]
site, how local paths become the cluster's, and the mirror of fetched result files."""
from __future__ import annotations

from pathlib import Path, PurePosixPath

from slurmexp.backends.slurm.remote import RemoteScheduler, remote_exp_dir, remote_settings_of
from slurmexp.reconcile.remote_reads import mirror
from slurmexp.settings import ExperimentSettings, RemoteSettings

REMOTE = RemoteSettings(host="login", user="alice", port=2222, ssh_options=("ProxyJump=b",),
                        root="/scratch/a/sx", exp_dir="/scratch/a/sx/experiments/e-1",
                        src_dir="/scratch/a/sx/src/abc", src_hash="abc" * 20,
                        local_workdir="/home/a/proj")


def test_remote_settings_survive_the_ledger_round_trip():
    s = ExperimentSettings(remote=REMOTE)
    back = ExperimentSettings.from_json(s.to_json())
    assert back == s and back.remote.ssh_options == ("ProxyJump=b",)
    assert remote_settings_of({"settings_json": s.to_json()}) == REMOTE
    assert remote_settings_of({"settings_json": ExperimentSettings().to_json()}) is None
    assert ExperimentSettings.from_json('{"version": 2, "groups": []}').remote is None


def test_local_paths_are_submitted_by_their_cluster_side():
    sched = RemoteScheduler(object(), REMOTE)
    # The experiment folder sits inside the workdir: the longer prefix wins.
    sched.add_experiment("/home/a/proj/slurmexp-runs/e-1", REMOTE)
    assert sched.to_remote("/home/a/proj/slurmexp-runs/e-1/scripts/chunk-000.sbatch") == \
        PurePosixPath("/scratch/a/sx/experiments/e-1/scripts/chunk-000.sbatch")
    assert sched.to_remote(Path("/home/a/proj")) == PurePosixPath("/scratch/a/sx/src/abc")
    assert sched.to_remote("/home/a/proj/train.py") == PurePosixPath("/scratch/a/sx/src/abc/train.py")
    # A sibling whose name only starts the same is not under the folder.
    assert sched.to_remote("/home/a/project2/x") == PurePosixPath("/home/a/project2/x")
    assert remote_exp_dir("/r", "e-1") == PurePosixPath("/r/experiments/e-1")


def test_mirror_writes_what_was_fetched_and_only_what_changed(tmp_path):
    a, b = tmp_path / "r1" / "attempts" / "7_0" / "exit_code", tmp_path / "r1" / "metrics.json"
    files = {"x/exit_code": a, "x/metrics.json": b, "x/absent": tmp_path / "absent"}
    assert mirror(files, {"x/exit_code": "0\n", "x/metrics.json": '{"loss": 1}', "x/absent": None}) == 2
    assert a.read_text() == "0\n" and not (tmp_path / "absent").exists()
    assert mirror(files, {"x/exit_code": "0\n", "x/metrics.json": '{"loss": 2}'}) == 1
    assert b.read_text() == '{"loss": 2}'


def test_a_pass_names_its_files_from_their_common_folder():
    from slurmexp.transport.snapshot import _common_folder

    assert _common_folder(["experiments/e/runs/r1/attempts/7_0/host", "experiments/e/logs/7_0.err"]) == "experiments/e/"
    assert _common_folder(["experiments/e/runs/r1/metrics.json"]) == "experiments/e/runs/r1/"
    assert _common_folder(["experiments/a/x", "experiments/ab/y"]) == "experiments/"
    assert _common_folder(["x", "experiments/y"]) == "" and _common_folder([]) == ""
    # A folder commonpath would normalise is not a prefix as written: no base then.
    assert _common_folder(["./e/x", "./e/y"]) == ""
