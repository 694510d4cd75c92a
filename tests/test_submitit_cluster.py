"""Python functions on the REAL test cluster: the submitit drop-in, `slurmexp.sweep` and
`function = "module:callable"`, each checked in results, the ledger and sacct.

Functions defined here travel pickled by value (tasks cannot import this test module), as a
notebook's do. Waiting processes refresh the ledger every 2 s here (SLURMEXP_WAIT_INTERVAL_S).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
from clusterlib import CURRENT
from submitit.core.utils import FailedJobError

import slurmexp
import slurmexp.submitit as submitit
from slurmexp.backends.base import scheduler_for
from slurmexp.ledger import Ledger
from slurmexp.reconcile.one_pass import reconcile_pass
from slurmexp.states import TERMINAL_STATES

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parent.parent
SITE = CURRENT.site_toml  # the repository's site.toml, or a version cluster's copy
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def square(x):
    return x * x


def boom(x):
    raise ValueError(f"bad input {x}")


def gpu_info(x):
    return {"x": x, "gpus": int(os.environ.get("SLURM_GPUS_ON_NODE", "0"))}


def slow_then_fast(x):
    # the first attempt of the run sleeps (so a node failure can hit it); a retry is quick
    marker = Path(os.environ["SLURMEXP_RUN_DIR"]) / "first.done"
    if not marker.exists():
        marker.touch()
        time.sleep(120)
    return x * 10


def loss_fn(lr, seed):
    return {"loss": lr * 100 + seed}


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURMEXP_WAIT_INTERVAL_S", "2")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "home"


@pytest.fixture(autouse=True)
def _cancel_leftovers(tmp_path):
    yield
    path = tmp_path / "home" / "ledger.db"
    if path.exists():
        ids = [a["job_id"] for a in Ledger(path).attempts(active_only=True) if a["job_id"]]
        if ids:
            subprocess.run(["scancel", *sorted(set(ids))], check=False, capture_output=True)


def executor(home: Path, **params):
    ex = submitit.AutoExecutor(folder=home.parent / "log" / "%j", site=SITE, ledger=home / "ledger.db")
    ex.update_parameters(timeout_min=5, **params)
    return ex


def env_for(home: Path, **extra) -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), SLURMEXP_SITE=str(SITE), SLURMEXP_HOME=str(home),
                SLURMEXP_WAIT_INTERVAL_S="2", **extra)


def cli(home: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slurmexp", "--ledger", str(home / "ledger.db"), *args],
                          capture_output=True, text=True, timeout=300, env=env_for(home), **kw)


def reconcile_done(home: Path, exp_ids: list[str], timeout: float = 240) -> Ledger:
    ledger = Ledger(home / "ledger.db")
    backend = scheduler_for("slurm", CURRENT.name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reconcile_pass(ledger, backend, grace_s=600)
        if all(r["state"] in TERMINAL_STATES for e in exp_ids for r in ledger.runs(e)):
            return ledger
        time.sleep(2)
    raise AssertionError(f"not finished: {[ledger.counts_by_state(e) for e in exp_ids]}")


def test_example_changed_by_its_import_line_alone(tmp_path, cluster):
    home = tmp_path / "home"
    src = (REPO / "examples" / "submitit" / "example.py").read_text()
    assert "import slurmexp.submitit as submitit" in src
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "example.py").write_text(src.replace("import slurmexp.submitit as submitit", "import submitit"))
    (tmp_path / "example.py").write_text(src)
    started = time.monotonic()
    ours = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env=env_for(home),
                          capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - started
    assert ours.returncode == 0, ours.stderr
    theirs = subprocess.run([sys.executable, "example.py"], cwd=plain, env=env_for(home),
                            capture_output=True, text=True, timeout=300)
    assert theirs.returncode == 0, theirs.stderr
    expected = "[11, 22, 33]\n['ada has 3 letters', 'bob has 3 letters', 'cy has 2 letters']\n"
    assert ours.stdout == theirs.stdout == expected
    # A result on disk comes before accounting's complete record (slurmdbd lags, and a final
    # state in a placeholder record waits for it): cron's passes, a few seconds apart, get there.
    deadline = time.monotonic() + 90
    while True:
        assert cli(home, "reconcile").returncode == 0
        exps = json.loads(cli(home, "status", "--format", "json").stdout)
        if all(e["runs_by_state"] == {"COMPLETED": 3} for e in exps) or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert sorted(e["name"] for e in exps) == ["add", "describe"]
    assert all(e["runs_by_state"] == {"COMPLETED": 3} for e in exps), exps
    by_name = {e["name"]: e["exp_id"] for e in exps}
    runs = json.loads(cli(home, "status", by_name["add"], "--format", "json").stdout)
    assert [(r["params"], r["state"]) for r in runs] == [
        ({"a": 1, "b": 10}, "COMPLETED"), ({"a": 2, "b": 20}, "COMPLETED"), ({"a": 3, "b": 30}, "COMPLETED")]
    assert all(r["partition"] == "cpu" and r["job"] for r in runs)
    report = cli(home, "report", by_name["describe"], "--format", "json")
    assert report.returncode == 0, report.stderr
    assert "param.name" in report.stdout and "COMPLETED" in report.stdout
    print(f"\nexample through slurmexp: {elapsed:.1f}s")


def test_gpu_type_is_routed_and_an_unknown_one_refused(home, cluster):
    job = executor(home, gpus_per_node=1, gpu_type="a100").submit(gpu_info, 1)
    assert job.result() == {"x": 1, "gpus": 1}
    ledger = reconcile_done(home, [job.experiment_id])
    (a,) = ledger.attempts(job.experiment_id)
    assert (a["state"], a["node"], a["partition"]) == ("COMPLETED", "g1", "gpu")
    # job ids are reused on this cluster: the row of this job is the one with its submit time
    (row,) = [r for r in cluster.sacct([a["job_id"]], "jobid,state,nodelist,alloctres%80,submit",
                                       since=a["submit_time"])
              if r["jobid"] == a["job_key"] and r["submit"] == a["submit_time"]]
    assert row["nodelist"] == "g1" and "gres/gpu:a100=1" in row["alloctres"]

    before = {e["exp_id"] for e in ledger.experiments()}
    with pytest.raises(slurmexp.ValidationError) as err:
        executor(home, gpus_per_node=1, gpu_type="h100").map_array(gpu_info, [1, 2])
    assert any(p.key == "resources.gpu_type" and "a100" in p.fix for p in err.value.problems)
    assert {e["exp_id"] for e in Ledger(home / "ledger.db").experiments()} == before
    queued = subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True).stdout
    assert "gpu_info" not in queued.replace(job.experiment_id, "")


def test_2500_inputs_are_three_arrays_and_map_back(home, cluster, tmp_path, monkeypatch):
    """2,500 inputs become three arrays (MaxArraySize 1001) and every handle maps back to its
    input: all 2,500 tasks are queued (held, through an sbatch that adds --hold) and checked in
    squeue and the ledger; the tasks at each array's edges and middle and a seeded sample across
    the three are released and their results checked. That every task of such a split runs to
    completion is test_launch_cluster.py::test_2500_runs_are_three_arrays_and_map_back's."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "sbatch").write_text(f'#!/bin/bash\nexec {shutil.which("sbatch")} --hold "$@"\n')
    (bindir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    started = time.monotonic()
    jobs = executor(home, slurm_partition="cpu").map_array(square, range(2500))
    submitted = time.monotonic() - started
    ledger = Ledger(home / "ledger.db")
    exp_id = jobs[0].experiment_id
    subs = ledger.submissions(exp_id)
    ids = [s["job_id"] for s in subs]
    try:
        assert [s["array_spec"] for s in subs] == ["0-1000", "0-1000", "0-497"]
        assert len(set(ids)) == 3
        expected = [f"{ids[i // 1001]}_{i % 1001}" for i in range(2500)]
        assert [j.job_id for j in jobs] == expected
        params = {r["run_id"]: r["params"] for r in ledger.runs(exp_id)}
        assert len(params) == 2500 and all(params[j.run_id] == {"x": i} for i, j in enumerate(jobs))

        def queued() -> dict[str, str]:      # array task -> squeue's reason, one row per task
            out = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(ids), "-o", "%F_%K %r"],
                                 capture_output=True, text=True, check=True).stdout
            return dict(line.split(" ", 1) for line in out.splitlines())

        before = queued()
        assert sorted(before) == sorted(expected) and set(before.values()) == {"JobHeldUser"}
        edges = {o + t for o, n in ((0, 1001), (1001, 1001), (2002, 498)) for t in (0, 1, n // 2, n - 2, n - 1)}
        picked = sorted(edges | set(random.Random(2500).sample(range(2500), 9)))
        subprocess.run(["scontrol", "release", *(expected[i] for i in picked)], check=True)
        assert [jobs[i].result() for i in picked] == [i * i for i in picked]
        elapsed = time.monotonic() - started
        # what was not released stayed held and never ran
        held = {task for task, reason in queued().items() if reason == "JobHeldUser"}
        assert held == set(expected) - {expected[i] for i in picked}
    finally:
        subprocess.run(["scancel", *ids], check=False, capture_output=True)
    print(f"\n2500 inputs: submitted in {submitted:.1f}s, {len(picked)} results in {elapsed:.1f}s")


def test_a_raising_function_ends_failed_with_the_exception(home, cluster):
    job = executor(home).submit(boom, 3)
    exc = job.exception()
    assert isinstance(exc, FailedJobError)
    assert "ValueError: bad input 3" in str(exc)
    with pytest.raises(Exception, match="bad input 3"):
        job.result()
    exp = slurmexp.experiment(job.experiment_id, home / "ledger.db").wait(timeout=120)
    (run,) = exp.ledger.runs(exp.id)
    assert run["state"] == "FAILED" and run["n_attempts"] == 1
    assert "ValueError: bad input 3" in run["reason"] and "exit code 1" in run["reason"]


def test_node_failure_under_a_running_function_is_retried(home, cluster):
    ex = executor(home, reservation="resv1", retry={"backoff_s": 0})
    job = ex.submit(slow_then_fast, 7)
    exp = slurmexp.experiment(job.experiment_id, home / "ledger.db")
    deadline = time.monotonic() + 90
    while exp.ledger.runs(exp.id)[0]["state"] != "RUNNING" or not (job.run_dir / "first.done").exists():
        assert time.monotonic() < deadline, exp.status()
        exp.refresh(force=True)
        time.sleep(1)
    started = time.monotonic()
    try:
        cluster.fail_node(cluster.reserved_node)
        while len(exp.ledger.attempts(exp.id)) < 2:
            assert time.monotonic() < deadline + 120, exp.status()
            exp.refresh(force=True)
            time.sleep(1)
    finally:
        cluster.resume_node(cluster.reserved_node)
    assert job.result() == 70
    exp.wait(timeout=120)
    first, second = exp.ledger.attempts(exp.id)
    assert (first["state"], first["node"], first["failure_class"]) == (
        "NODE_FAIL", cluster.reserved_node, "infrastructure")
    assert second["state"] == "COMPLETED" and second["job_id"] != first["job_id"]
    assert job.job_id == second["job_key"]
    print(f"\nnode failure -> retried -> result in {time.monotonic() - started:.1f}s")


def test_launch_killed_after_sbatch_is_adopted_never_resubmitted(tmp_path, cluster):
    home = tmp_path / "home"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    wrapper = bindir / "sbatch"
    wrapper.write_text(f'#!/bin/bash\nout=$({shutil.which("sbatch")} "$@") || exit $?\necho "$out"\n'
                       'case " $* " in *" --test-only "*) exit 0 ;; esac\nkill -9 $PPID\n')
    wrapper.chmod(0o755)
    (tmp_path / "crashy.py").write_text(
        "import slurmexp.submitit as submitit\n"
        "def triple(x):\n    return 3 * x\n"
        "ex = submitit.AutoExecutor(folder='log/%j')\n"
        "ex.update_parameters(timeout_min=5)\n"
        "ex.map_array(triple, [1, 2, 3])\n")
    env = env_for(home, PATH=f"{bindir}:{os.environ['PATH']}")
    proc = subprocess.run([sys.executable, "crashy.py"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    ledger = Ledger(home / "ledger.db")
    (exp,) = ledger.experiments()
    (sub,) = ledger.submissions(exp["exp_id"])
    assert sub["state"] == "INTENT" and sub["job_id"] is None
    ledger = reconcile_done(home, [exp["exp_id"]])
    (sub,) = ledger.submissions(exp["exp_id"])
    assert sub["state"] == "ADOPTED" and sub["job_id"]
    handle = slurmexp.experiment(exp["exp_id"], home / "ledger.db")
    assert handle.values() == [3, 6, 9] and handle.status() == {"COMPLETED": 3}
    rows = scheduler_for("slurm").accounting([], since="now-1hours", names=[f"sx.{exp['exp_id']}.000"])
    assert rows and {r.array_job_id or r.job_id_raw for r in rows} == {sub["job_id"]}


def test_sweep_grid_reports_metrics_and_reattaches_from_another_process(home, cluster, tmp_path):
    exp = slurmexp.sweep(loss_fn, params={"lr": [0.1, 0.01, 0.001], "seed": [0, 1, 2, 3]},
                         resources={"time": "00:05:00"}, site=SITE, ledger=home / "ledger.db")
    exp.wait(timeout=240)
    table = exp.results()
    assert len(table) == 12 and set(table["state"]) == {"COMPLETED"}
    assert {"param.lr", "param.seed", "metric.loss"} <= set(table.columns)
    for _, r in table.iterrows():
        assert r["metric.loss"] == pytest.approx(r["param.lr"] * 100 + r["param.seed"])
    cols = ["run_id", "state", "param.lr", "param.seed", "metric.loss"]
    mine = table[cols].to_json(orient="records")
    other = subprocess.run(
        [sys.executable, "-c", "import sys, slurmexp\n"
         f"e = slurmexp.experiment({exp.id!r}, {str(home / 'ledger.db')!r})\n"
         f"print(e.results()[{cols!r}].to_json(orient='records'))"],
        capture_output=True, text=True, timeout=120, env=env_for(home))
    assert other.returncode == 0, other.stderr
    assert json.loads(other.stdout) == json.loads(mine)
    # launching the same sweep again reattaches: nothing new is submitted
    again = slurmexp.sweep(loss_fn, params={"lr": [0.1, 0.01, 0.001], "seed": [0, 1, 2, 3]},
                           resources={"time": "00:05:00"}, site=SITE, ledger=home / "ledger.db")
    assert again.id == exp.id and len(exp.ledger.submissions(exp.id)) == 1


def test_function_in_sweep_toml_launches_completes_and_reports(tmp_path, cluster):
    home = tmp_path / "home"
    work = tmp_path / "fn"
    shutil.copytree(REPO / "examples" / "function-sweep", work)
    launched = cli(home, "launch", str(work / "sweep.toml"), "--site", str(SITE))
    assert launched.returncode == 0, launched.stderr
    exp_id = launched.stdout.strip().splitlines()[-1]
    ledger = reconcile_done(home, [exp_id])
    assert ledger.counts_by_state(exp_id) == {"COMPLETED": 6}
    report = cli(home, "report", exp_id, "--format", "json")
    assert report.returncode == 0, report.stderr
    rows = json.loads(report.stdout)["runs"]
    assert len(rows) == 6
    for r in rows:
        assert r["metric.loss"] == pytest.approx(r["param.lr"] / r["param.width"])
