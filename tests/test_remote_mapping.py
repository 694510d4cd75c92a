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
    assert _common_folder(["./e/x", "./e/y"]) == "./e/" and _common_folder(["e/x1", "e/x2"]) == "e/"


def test_the_files_a_pass_fetches_are_where_layout_puts_them(tmp_path):
    # wanted_files writes layout's rule with strings: each attempt's folder (its restart
    # number counted), the run's metrics and Slurm's .err log, on the cluster and here.
    from types import SimpleNamespace

    from slurmexp import layout
    from slurmexp.ledger.rows import ActiveAttempt
    from slurmexp.reconcile.remote_reads import ATTEMPT_FILES, wanted_files

    exp = tmp_path / "runs-here" / "e-1"
    remote = RemoteSettings(host="login", root="/scratch/a/sx", exp_dir="/scratch/a/sx/experiments/e-1")
    sched = RemoteScheduler(SimpleNamespace(transport=SimpleNamespace(root=PurePosixPath("/scratch/a/sx"))), remote)
    sched.add_experiment(exp, remote)
    active = [ActiveAttempt(attempt_id=i, exp_id="e-1", run_id=f"r{i}", attempt_no=1, state="RUNNING", sub_id=3,
                            job_key=f"7_{i}", run_dir=str(exp / "runs" / f"r{i}"), exp_dir=str(exp)) for i in (1, 2)]
    active.append(ActiveAttempt(attempt_id=9, exp_id="e-1", run_id="r0", attempt_no=1, state="RUNNING",
                                job_key="7_0", run_dir=str(tmp_path / "elsewhere" / "r0")))   # not mapped
    ledger = SimpleNamespace(restarts_of=lambda rows: {1: 0, 2: 2, 9: 0})
    files = wanted_files(ledger, sched, active)
    expected = {}
    for a, restart in ((active[0], 0), (active[1], 2)):
        run = layout.RunPaths(a.run_dir)
        locals_ = [run.find_attempt(a.job_key, restart) / n for n in ATTEMPT_FILES]
        locals_ += [run.run_dir / layout.METRICS_FILE, layout.ExperimentPaths(exp).log(a.job_key, "err")]
        for local in locals_:
            expected[str(sched.to_remote(local).relative_to("/scratch/a/sx"))] = str(local)
    assert files == expected
    assert files["experiments/e-1/runs/r2/attempts/7_2.r2/exit_code"] == f"{exp}/runs/r2/attempts/7_2.r2/exit_code"
    assert files["experiments/e-1/logs/7_1.err"] == f"{exp}/logs/7_1.err"
    assert len(files) == 2 * (len(ATTEMPT_FILES) + 2)
