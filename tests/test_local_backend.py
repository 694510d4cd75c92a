"""The local backend runs the rendered sbatch script itself, task by task, like Slurm would."""
from __future__ import annotations

import json
import shlex
import sys
import threading
import time
from pathlib import Path

import pytest

from slurmexp.backends.local import run_local
from slurmexp.launch.experiment_files import (
    write_manifest,
    write_script,
)
from slurmexp.launch.render import (
    ScriptContext,
    render_script,
)
from slurmexp.sweep.plan import ArrayChunk, Resources, Run

EXP_ID = "local-0123abcd"

# The "research program" of these tests: records its argv, params and when it ran.
PROGRAM = r'''
import json, os, sys, time
out = {"argv": sys.argv[1:], "start": time.time(),
       "env": {k: os.environ.get(k) for k in ("SLURMEXP_EXPERIMENT", "SLURMEXP_RUN_ID",
               "SLURMEXP_RUN_DIR", "SLURMEXP_ATTEMPT_ID", "SLURM_ARRAY_TASK_ID", "EXTRA",
               "SLURM_CPUS_PER_TASK", "FROM_SWEEP")},
       "cwd": os.getcwd()}
with open(os.path.join(os.environ["SLURMEXP_RUN_DIR"], "params.json")) as fh:
    out["params"] = json.load(fh)
time.sleep(float(os.environ.get("SLEEP", "0.4")))
out["end"] = time.time()
with open(os.path.join(os.environ["SLURMEXP_RUN_DIR"], "result.json"), "w") as fh:
    json.dump(out, fh)
print("stdout of", os.environ["SLURMEXP_RUN_ID"])
print("stderr of", os.environ["SLURMEXP_RUN_ID"], file=sys.stderr)
code = int(out["params"].get("exit", 0))
sys.exit(code)
'''


def make_experiment(tmp_path: Path, params: list[dict], args=lambda p: [],
                    env_setup=(), env_vars=None, cpus: int = 2):
    program = tmp_path / "program.py"
    program.write_text(PROGRAM)
    workdir = tmp_path / "work"
    workdir.mkdir(exist_ok=True)
    exp = tmp_path / "exp"
    runs = [Run(run_id=f"r{i:010x}", index=i, params=p) for i, p in enumerate(params)]
    chunk = ArrayChunk(chunk=0, group=0, resources=Resources("cpu", 10, cpus=cpus), runs=runs,
                       offset=0)
    # What the planner does: every value shell-quoted into one command line.
    manifest = write_manifest(exp, chunk, {r.run_id: shlex.join([sys.executable, str(program), *args(r.params)])
                                           for r in runs})
    ctx = ScriptContext(experiment_id=EXP_ID, chunk=chunk, exp_dir=exp, workdir=workdir,
                        manifest_path=manifest, runs_dir=exp / "runs",
                        job_name=f"sx.{EXP_ID}.0", comment=f"slurmexp:{EXP_ID}",
                        env_setup=list(env_setup), env_vars=dict(env_vars or {}),
                        cluster="local")
    script = write_script(exp, 0, render_script(ctx))
    return exp, script, runs, workdir


def test_six_tasks_two_at_a_time_with_one_failure(tmp_path):
    params = [{"i": i, "exit": 3 if i == 4 else 0} for i in range(6)]
    exp, script, runs, workdir = make_experiment(
        tmp_path, params, args=lambda p: ["--i", str(p["i"])], env_vars={"FROM_SWEEP": "yes"},
        cpus=3)
    events = []
    main_thread = threading.get_ident()

    def on_event(i, event, info):
        assert threading.get_ident() == main_thread
        events.append((i, event, info))

    results = run_local(script, 6, 2, env_extra={"EXTRA": "x y"}, on_event=on_event,
                        array_job_id="local-test-1")

    assert [r.task_index for r in results] == list(range(6))
    assert [r.exit_code for r in results] == [0, 0, 0, 0, 3, 0]
    assert [r.state for r in results] == ["COMPLETED"] * 4 + ["FAILED", "COMPLETED"]
    assert all(r.elapsed_s >= 0.4 for r in results)

    # Events: RUNNING then one end event per task, with exit code and elapsed time.
    for i in range(6):
        mine = [(e, info) for j, e, info in events if j == i]
        assert [e for e, _ in mine] == ["RUNNING", "FAILED" if i == 4 else "COMPLETED"]
        assert mine[1][1]["exit_code"] == (3 if i == 4 else 0)
        assert mine[1][1]["elapsed_s"] >= 0.4

    intervals = []
    for i, run in enumerate(runs):
        run_dir = exp / "runs" / run.run_id
        attempt = run_dir / "attempts" / f"local-test-1_{i}"
        assert (attempt / "exit_code").read_text().strip() == ("3" if i == 4 else "0")
        assert (attempt / "host").read_text().strip()
        assert (attempt / "started").read_text().strip().endswith("Z")
        assert (attempt / "ended").is_file()
        assert not (attempt / "wrapper_failed").exists()
        assert (attempt / "stdout").read_text() == f"stdout of {run.run_id}\n"
        assert (attempt / "stderr").read_text() == f"stderr of {run.run_id}\n"
        got = json.loads((run_dir / "result.json").read_text())
        assert got["params"] == params[i]
        assert got["argv"] == ["--i", str(i)]
        assert got["cwd"] == str(workdir)
        assert got["env"] == {
            "SLURMEXP_EXPERIMENT": EXP_ID, "SLURMEXP_RUN_ID": run.run_id,
            "SLURMEXP_RUN_DIR": str(run_dir), "SLURMEXP_ATTEMPT_ID": f"local-test-1_{i}",
            "SLURM_ARRAY_TASK_ID": str(i), "EXTRA": "x y", "SLURM_CPUS_PER_TASK": "3",
            "FROM_SWEEP": "yes",
        }
        intervals.append((got["start"], got["end"]))
        # The wrapper's own output lands in logs/, named like Slurm's %A_%a.
        wrapper_out = (exp / "logs" / f"local-test-1_{i}.out").read_text()
        assert f"run {run.run_id} attempt local-test-1_{i}" in wrapper_out

    # No more than two ran at once, and two did run at once.
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals],
                    key=lambda p: (p[0], p[1]))
    level = peak = 0
    for _, delta in points:
        level += delta
        peak = max(peak, level)
    assert peak == 2


def test_hostile_parameter_values_reach_the_program_literally(tmp_path):
    hostile = ['"; touch MARKER; echo "', "$(id)", "line1\nline2", "`touch MARKER`",
               "it's", "*", "$HOME", "a b  c", ""]
    params = [{"values": hostile}]
    exp, script, runs, workdir = make_experiment(tmp_path, params, args=lambda p: p["values"])
    [result] = run_local(script, 1, 1, env_extra={"SLEEP": "0"})
    assert result.exit_code == 0, result.stderr_path.read_text()
    got = json.loads((exp / "runs" / runs[0].run_id / "result.json").read_text())
    assert got["argv"] == hostile
    assert got["params"] == params[0]
    assert not list(tmp_path.rglob("MARKER")) and not Path("MARKER").exists()


def test_failing_setup_is_recorded_and_the_command_does_not_run(tmp_path):
    exp, script, runs, _ = make_experiment(tmp_path, [{"i": 0}],
                                           env_setup=["echo setting up", "exit 5"])
    [result] = run_local(script, 1, 1, array_job_id="local-setup")
    assert (result.state, result.exit_code) == ("FAILED", 5)
    attempt = exp / "runs" / runs[0].run_id / "attempts" / "local-setup_0"
    assert (attempt / "wrapper_failed").read_text().split() == ["5", "setup"]
    assert not (attempt / "exit_code").exists()
    assert not (exp / "runs" / runs[0].run_id / "result.json").exists()


def test_selected_tasks_only_and_bad_arguments(tmp_path):
    exp, script, runs, _ = make_experiment(tmp_path, [{"i": i} for i in range(4)])
    results = run_local(script, 4, 4, tasks=[3, 1], env_extra={"SLEEP": "0"})
    assert [r.task_index for r in results] == [1, 3]
    assert (exp / "runs" / runs[3].run_id / "result.json").exists()
    assert not (exp / "runs" / runs[0].run_id / "result.json").exists()
    with pytest.raises(ValueError):
        run_local(script, 4, 0)
    with pytest.raises(ValueError):
        run_local(script, 4, 1, tasks=[4])


def test_a_task_beyond_the_manifest_fails_with_97(tmp_path):
    exp, script, runs, _ = make_experiment(tmp_path, [{"i": 0}])
    results = run_local(script, 2, 2, env_extra={"SLEEP": "0"}, array_job_id="local-x")
    assert [r.exit_code for r in results] == [0, 97]
    assert "line 2" in (exp / "logs" / "local-x_1.err").read_text()


def test_an_error_in_on_event_cancels_running_tasks(tmp_path):
    exp, script, runs, _ = make_experiment(tmp_path, [{"i": i} for i in range(3)])
    seen = []

    def on_event(i, event, info):
        seen.append((i, event))
        if event == "RUNNING" and i == 1:
            # Let both commands start, so the wrappers are past setup when the signal comes.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not all(
                    (exp / "runs" / runs[k].run_id / "attempts" / f"local-cancel_{k}" /
                     "started").exists() for k in (0, 1)):
                time.sleep(0.05)
            raise RuntimeError("ledger is gone")

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="ledger is gone"):
        run_local(script, 3, 2, env_extra={"SLEEP": "60"}, on_event=on_event,
                  array_job_id="local-cancel")
    assert time.monotonic() - started < 30
    assert sorted(seen) == [(0, "CANCELLED"), (0, "RUNNING"), (1, "CANCELLED"), (1, "RUNNING")]
    assert (2, "RUNNING") not in seen
    for i in (0, 1):
        attempt = exp / "runs" / runs[i].run_id / "attempts" / f"local-cancel_{i}"
        assert (attempt / "wrapper_failed").read_text().split() == ["143", "command"]
        assert not (attempt / "exit_code").exists()


# --- a local launch: what it says, records and is ------------------------------------------

REPO_SITE = Path(__file__).resolve().parent.parent / "site.toml"


def _local_sweep(tmp_path: Path, resources: str) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text('name = "loc"\ncommand = "sleep 0.3; echo {x}"\n[params]\nx = [1, 2, 3]\n'
                    f'[resources]\narray_parallelism = 1\n{resources}')
    return path


def test_a_local_launch_warns_once_about_the_keys_it_ignores(tmp_path):
    import warnings

    from slurmexp.errors import SlurmexpWarning
    from slurmexp.launch.launcher import launch
    from slurmexp.ledger import Ledger

    sweep = _local_sweep(tmp_path, 'gpus = 1\nqos = "normal"\npartition = "gpu"\ncpus = 1\n'
                                   'mem = "100M"\n')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        launch(sweep, REPO_SITE, backend="local", ledger=Ledger(tmp_path / "l.db"))
    mine = [str(w.message) for w in caught if issubclass(w.category, SlurmexpWarning)]
    assert len(mine) == 1 and "\n" not in mine[0], mine
    assert "ignores [resources] gpus, partition, qos" in mine[0] and str(sweep) in mine[0]
    assert "cpus" not in mine[0] and "mem" not in mine[0]
    # nothing to say about a sweep that asks for nothing a scheduler would give
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        launch(_local_sweep(tmp_path, "gpus = 0\n"), REPO_SITE, backend="local",
               ledger=Ledger(tmp_path / "l.db"))
    assert not [w for w in caught if issubclass(w.category, SlurmexpWarning)]


def test_the_cli_prints_the_warning_as_one_line_on_stderr(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from slurmexp.cli import main

    monkeypatch.setenv("SLURMEXP_HOME", str(tmp_path / "home"))
    sweep = _local_sweep(tmp_path, 'gpus = 1\nqos = "normal"\n')
    r = CliRunner().invoke(main, ["launch", str(sweep), "--site", str(REPO_SITE), "--backend", "local"])
    assert r.exit_code == 0, r.output
    lines = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(lines) == 1 and "gpus, qos" in lines[0], r.stderr


def test_a_local_experiment_records_no_cluster_and_no_queue_wait(tmp_path):
    from slurmexp.launch.launcher import launch
    from slurmexp.ledger import Ledger
    from slurmexp.report.build import build_report

    ledger = Ledger(tmp_path / "l.db")
    exp_id = launch(_local_sweep(tmp_path, ""), REPO_SITE, backend="local", ledger=ledger).exp_id
    exp = ledger.get_experiment(exp_id)
    assert exp["backend"] == "local" and exp["cluster"] is None
    report = build_report(ledger, [exp_id])
    # one at a time: runs 2 and 3 waited ~0.3 s each for a free slot here, not in a queue
    assert report.runs["wait_s"].isna().all()
    assert report.experiments[0]["wait_s_median"] is None


def test_the_backend_is_part_of_the_experiments_identity(tmp_path):
    import hashlib
    import json

    from slurmexp.launch.launcher import launch, prepare
    from slurmexp.ledger import Ledger

    sweep = _local_sweep(tmp_path, "")
    on_slurm, here = prepare(sweep, REPO_SITE), prepare(sweep, REPO_SITE, "local")
    assert on_slurm.base_id != here.base_id
    # a Slurm experiment keeps the id it had before the backend was part of the identity
    old = hashlib.sha256(json.dumps({"sweep": on_slurm.sweep.canonical(), "site": on_slurm.site.hash()},
                                    sort_keys=True, default=str).encode()).hexdigest()
    assert on_slurm.base_id == f"loc-{old[:8]}"
    # the sweep as a launch on Slurm recorded it: a local launch is a new experiment
    ledger = Ledger(tmp_path / "l.db")
    ledger.create_experiment(on_slurm.base_id, "loc", on_slurm.fingerprint, "minicluster", "slurm",
                             None, sweep, None, REPO_SITE, None, None, None, [])
    first = launch(sweep, REPO_SITE, backend="local", ledger=ledger)
    assert first.submitted and first.exp_id == here.base_id
    again = launch(sweep, REPO_SITE, backend="local", ledger=ledger)
    assert not again.submitted and "already launched" in again.message
