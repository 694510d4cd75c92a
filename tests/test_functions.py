"""Python-function sweeps without a cluster: calls as runs, the sweep.toml they stand for, the
task runner, the drop-in's parameters, and launches against a fake scheduler.

What Slurm does with them (placement, arrays over MaxArraySize, failures, retries) is tested
on the real cluster in test_submitit_cluster.py.
"""
from __future__ import annotations

import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import submitit as plain_submitit

import slurmexp
import slurmexp.submitit as sx_submitit
from slurmexp.backends import base
from slurmexp.backends.facts import SubmitResult
from slurmexp.errors import SpecError, ValidationError
from slurmexp.functions import calls, launch, runner, waiting
from slurmexp.ledger import Ledger
from slurmexp.submitit.executor import resources_from
from slurmexp.sweep.spec import parse_sweep

REPO = Path(__file__).resolve().parent.parent
SITE = REPO / "site.toml"


class FakeScheduler:
    """sbatch that answers with a job id; no live facts (each part skipped, as Slurm skips a
    part whose command failed) and --test-only accepts."""

    cluster = "minicluster"

    def __init__(self):
        self.submitted: list[dict] = []
        self.next_id = 700
        self.sacct_calls = 0

    def cluster_facts(self, *a, **k):
        from slurmexp.backends.facts import ClusterFacts
        return ClusterFacts(cluster=self.cluster, user="u", skipped=["fake: no live facts"])

    def test_only(self, script, extra_args=()):
        return True, "fake: --test-only accepted"

    def submit(self, script, *, extra_args=(), cwd=None, timeout=60):
        text = Path(script).read_text()
        spec = re.search(r"--array=(\S+)", text).group(1)
        job = str(self.next_id)
        self.next_id += 1
        self.submitted.append({"job": job, "script": str(script), "array": spec,
                               "name": re.search(r"--job-name=(\S+)", text).group(1)})
        return SubmitResult(job, self.cluster)

    def submit_times(self, job_ids, **kw):
        return {}

    def accounting(self, job_ids, **kw):
        self.sacct_calls += 1
        return []

    def queue(self, *a, **kw):
        return []


def use_scheduler(monkeypatch, fake) -> None:
    """The factory (`backends.base.scheduler_for`) builds `fake` for every kind and cluster."""
    monkeypatch.setattr(base, "scheduler_for", lambda kind, cluster=None, transport=None: fake)


def add(a, b=0):
    return a + b


def metric_fn(lr, seed):
    return {"loss": lr * (seed + 1)}


# --- calls -> runs -----------------------------------------------------------------------


def test_call_params_bind_names_and_keep_non_json_stable():
    assert calls.call_params(add, (1,), {"b": 2}) == {"a": 1, "b": 2}
    assert calls.call_params(add, ((1, 2),), {}) == {"a": [1, 2]}
    obj = object()
    p = calls.call_params(add, (obj,), {})
    assert p["a"].startswith("<builtins.object ") and "0x" not in p["a"]
    assert calls.call_params(len, ([1],), {}) in ({"obj": [1]}, {"args": [[1]]})
    assert calls.callable_name(add) == f"{__name__}:add"
    assert calls.short_name(lambda x: x) == "lambda"


def test_run_ids_are_stable_and_repeated_calls_distinct():
    params = [{"a": 1}, {"a": 1}, {"a": 2}]
    ids = calls.run_ids_for("m:f", params)
    assert len(set(ids)) == 3 and ids == calls.run_ids_for("m:f", params)
    # extending an experiment with the same calls again makes new runs, never a clash
    more = calls.run_ids_for("m:f", params, set(ids))
    assert not set(more) & set(ids)


# --- the sweep.toml a Python sweep stands for ---------------------------------------------


def test_sweep_toml_round_trips_through_the_schema(tmp_path):
    data = {"name": "py", "function": "train:main", "params": {"lr": [0.1, 0.01], "tag": ["a\"b", "ü"]},
            "zip": [{"x": [1, 2], "y": [True, False]}], "resources": {"time": "00:05:00", "gpus": 1},
            "retry": {"max_attempts": 2}}
    text = launch.sweep_toml(data)
    sweep = parse_sweep(text, tmp_path / "s.toml")
    assert sweep.function == "train:main" and sweep.command is None
    assert sweep.params == {"lr": [0.1, 0.01], "tag": ["a\"b", "ü"]}
    assert sweep.resources.gpus == 1 and sweep.retry.max_attempts == 2


def test_function_sweep_schema(tmp_path):
    ok = parse_sweep('name = "f"\nfunction = "pkg.mod:main"\n[params]\nlr = [1, 2]\n', tmp_path / "a.toml")
    assert ok.placeholder_names() == []
    with pytest.raises(SpecError) as both:
        parse_sweep('name = "f"\nfunction = "m:f"\ncommand = "echo"\n', tmp_path / "b.toml")
    assert [p.key for p in both.value.problems] == ["function"]
    with pytest.raises(SpecError) as neither:
        parse_sweep('name = "f"\n', tmp_path / "c.toml")
    assert [(p.key, p.check) for p in neither.value.problems] == [("command", "missing_key")]
    with pytest.raises(SpecError) as bad:
        parse_sweep('name = "f"\nfunction = "not a ref"\n', tmp_path / "d.toml")
    assert bad.value.problems[0].key == "function"


def test_sweep_errors_are_the_sweep_files(tmp_path):
    fake = FakeScheduler()
    with pytest.raises(ValidationError) as err:
        slurmexp.sweep(metric_fn, params={"lr": [0.1]}, runs=[{"lr": 0.1}],
                       resources={"time": "forever", "gpu": 1}, site=SITE,
                       ledger=tmp_path / "l.db", workdir=tmp_path, slurm=fake)
    keys = {p.key for p in err.value.problems}
    assert {"resources.time", "resources.gpu"} <= keys
    assert not fake.submitted


# --- the runner ---------------------------------------------------------------------------


def _call_dir(tmp_path: Path, fn, *args) -> Path:
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    import cloudpickle

    (run_dir / runner.CALL_FILE).write_bytes(cloudpickle.dumps(
        {"function": fn, "args": args, "kwargs": {}}))
    return run_dir


def test_runner_writes_result_metrics_and_submitit_pickle(tmp_path, monkeypatch):
    run_dir = _call_dir(tmp_path, metric_fn, 0.5, 1)
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "42")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert runner.run(run_dir, submitit_folder=str(tmp_path / "log" / "%j")) == 0
    assert pickle.loads((run_dir / "result.pkl").read_bytes()) == ("success", {"loss": 1.0})
    assert '"loss": 1.0' in (run_dir / "metrics.json").read_text()
    # plain submitit finds the result where it always looks
    for folder in ("%j", "%A/%a", "plain"):
        job = plain_submitit.SlurmJob(tmp_path / "log" / folder, "42_3")
        assert runner.submitit_result_path(str(tmp_path / "log" / folder), "42_3") == job.paths.result_pickle
    job = plain_submitit.SlurmJob(tmp_path / "log" / "%j", "42_3")
    assert pickle.loads(job.paths.result_pickle.read_bytes()) == ("success", {"loss": 1.0})


def test_runner_exception_is_a_failure_with_its_last_line_last(tmp_path):
    script = tmp_path / "boom.py"
    script.write_text("def boom(x):\n    raise ValueError(f'bad input {x}')\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import boom
        run_dir = _call_dir(tmp_path, boom.boom, 7)
    finally:
        sys.path.remove(str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", runner.MODULE, str(run_dir)], capture_output=True,
                          text=True, env={"PYTHONPATH": f"{REPO}:{tmp_path}", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == "ValueError: bad input 7"
    outcome, trace = pickle.loads((run_dir / "result.pkl").read_bytes())
    assert outcome == "error" and "ValueError: bad input 7" in trace


def test_metrics_only_from_mappings_of_numbers():
    assert runner.metrics_of({"loss": 1, "acc": 0.5}) == {"loss": 1, "acc": 0.5}
    assert runner.metrics_of({"loss": "low"}) is None
    assert runner.metrics_of({"ok": True}) is None
    assert runner.metrics_of([1, 2]) is None
    assert runner.metrics_of({}) is None


def test_runner_command_doubles_braces_and_keeps_the_placeholder():
    cmd = runner.runner_command("/usr/bin/python3", submitit_folder="/x/{a}/%j")
    assert cmd.endswith(" {run_dir}") and "{{a}}" in cmd and "-m slurmexp.functions.runner" in cmd


# --- the drop-in's parameters ----------------------------------------------------------------


def test_submitit_parameters_become_sweep_resources():
    res, setup, problems = resources_from(
        {"time": 90, "mem": "4GB", "cpus_per_task": 2, "gpus_per_node": 1, "partition": "gpu",
         "setup": ["module load x"], "qos": "high", "array_parallelism": 256, "job_name": "j"},
        {"gpu_type": "a100", "reservation": "resv1"})
    assert res == {"time": "0-01:30:00", "mem": "4GB", "cpus": 2, "gpus": 1, "partition": "gpu",
                   "qos": "high", "gpu_type": "a100", "reservation": "resv1"}
    assert setup == ["module load x"] and not problems
    res, _, _ = resources_from({"gres": "gpu:v100:2"}, {})
    assert res == {"gpus": 2, "gpu_type": "v100"}
    _, _, problems = resources_from({"nodelist": "c1", "ntasks_per_node": 4}, {})
    assert {p.key for p in problems} == {"slurm_nodelist", "slurm_ntasks_per_node"}


def test_drop_in_keeps_submitits_names_and_types(tmp_path):
    ex = sx_submitit.AutoExecutor(folder=tmp_path / "log", cluster="slurm", experiment="e1",
                                  site=SITE, ledger=tmp_path / "l.db")
    assert isinstance(ex, plain_submitit.AutoExecutor)
    assert isinstance(ex._executor, plain_submitit.SlurmExecutor)
    ex.update_parameters(timeout_min=3, slurm_partition="cpu", gpu_type="a100", qos="normal",
                         slurm_array_parallelism=4)
    assert ex._executor.parameters["partition"] == "cpu" and ex._executor.parameters["qos"] == "normal"
    assert ex._executor.slurmexp["gpu_type"] == "a100"
    with pytest.raises(NameError):
        ex.update_parameters(slurm_nosuch=1)
    assert sx_submitit.helpers is plain_submitit.helpers
    assert sx_submitit.JobEnvironment is plain_submitit.JobEnvironment
    assert sx_submitit.LocalExecutor is plain_submitit.LocalExecutor


# --- launches against a fake scheduler --------------------------------------------------------


def _executor(tmp_path, **kw):
    ex = sx_submitit.AutoExecutor(folder=tmp_path / "log" / "%j", cluster="slurm", site=SITE,
                                  ledger=tmp_path / "l.db", **kw)
    ex.update_parameters(timeout_min=5)
    return ex


def test_map_array_over_max_array_size_is_three_arrays(tmp_path, monkeypatch):
    fake = FakeScheduler()
    use_scheduler(monkeypatch, fake)
    monkeypatch.chdir(tmp_path)
    jobs = _executor(tmp_path).map_array(add, range(2500))
    assert [s["array"] for s in fake.submitted] == ["0-1000", "0-1000", "0-497"]
    assert len({s["name"] for s in fake.submitted}) == 3
    assert jobs[0].job_id == "700_0" and jobs[1001].job_id == "701_0" and jobs[-1].job_id == "702_497"
    ledger = Ledger(tmp_path / "l.db")
    exp_id = jobs[0].experiment_id
    runs = ledger.runs(exp_id)
    assert len(runs) == 2500 and {r["state"] for r in runs} == {"SUBMITTED"}
    by_id = {r["run_id"]: r for r in runs}
    for i in (0, 1000, 1001, 2499):
        job = jobs[i]
        assert by_id[job.run_id]["params"] == {"a": i}
        assert job.submission().args == (i,)
        # plain submitit's job finds the call where it always looks
        plain = plain_submitit.SlurmJob(tmp_path / "log" / "%j", job.job_id)
        assert plain.submission().args == (i,)


def test_named_experiment_is_extended_not_replaced(tmp_path, monkeypatch):
    fake = FakeScheduler()
    use_scheduler(monkeypatch, fake)
    monkeypatch.chdir(tmp_path)
    ex = _executor(tmp_path, experiment="mine")
    first = ex.map_array(add, [1, 2])
    with ex.batch():
        more = [ex.submit(add, 1), ex.submit(add, 5, b=1)]
    ledger = Ledger(tmp_path / "l.db")
    runs = ledger.runs("mine")
    assert [r["params"] for r in runs] == [{"a": 1}, {"a": 2}, {"a": 1}, {"a": 5, "b": 1}]
    assert [r["chunk"] for r in runs] == [0, 0, 1, 1]
    assert len({j.run_id for j in first + more}) == 4
    assert [g.chunks for g in ledger.experiment_settings("mine").groups] == [(0,), (1,)]
    assert ledger.get_experiment("mine")["n_runs"] == 4


def test_validation_error_queues_nothing(tmp_path, monkeypatch):
    fake = FakeScheduler()
    use_scheduler(monkeypatch, fake)
    monkeypatch.chdir(tmp_path)
    ex = _executor(tmp_path)
    ex.update_parameters(gpus_per_node=1, gpu_type="h100", slurm_qos="platinum")
    with pytest.raises(slurmexp.ValidationError) as err:
        ex.map_array(add, [1, 2])
    keys = {p.key for p in err.value.problems}
    assert "resources.gpu_type" in keys and "resources.qos" in keys
    assert not fake.submitted and Ledger(tmp_path / "l.db").experiments() == []


def test_jobs_pickle_and_read_state_from_the_ledger(tmp_path, monkeypatch):
    fake = FakeScheduler()
    use_scheduler(monkeypatch, fake)
    monkeypatch.chdir(tmp_path)
    job = _executor(tmp_path).submit(add, 1, 2)
    assert isinstance(job, plain_submitit.Job) and job.state == "PENDING"
    again = pickle.loads(pickle.dumps(job))
    assert again.job_id == job.job_id and again.run_id == job.run_id
    # the function's result arrives: done, result readable
    run_dir = job.run_dir
    (run_dir / "result.pkl").write_bytes(pickle.dumps(("success", 3)))
    assert job.done() and job.result() == 3


def test_waiting_processes_share_one_rate_limited_pass(tmp_path, monkeypatch):
    fake = FakeScheduler()
    use_scheduler(monkeypatch, fake)
    monkeypatch.chdir(tmp_path)
    jobs = _executor(tmp_path).map_array(add, [1, 2, 3])
    ledger = waiting.ledger_at(tmp_path / "l.db")
    assert waiting.refresh(ledger, "minicluster", min_interval_s=60)     # no pass yet: runs one
    n = fake.sacct_calls
    assert n == 1
    for job in jobs:                                                     # recent pass: none
        assert not job.done()
    assert fake.sacct_calls == n
    with waiting._gate(ledger) as got:                                   # another waiter holds it
        assert got
        assert not waiting.refresh(ledger, "minicluster", min_interval_s=0)
    assert fake.sacct_calls == n
    assert waiting.refresh(ledger, "minicluster", min_interval_s=0)
    assert fake.sacct_calls == n + 1


def test_sweep_launches_once_and_reattaches(tmp_path, monkeypatch):
    fake = FakeScheduler()
    use_scheduler(monkeypatch, fake)
    kw = dict(params={"lr": [0.1, 0.01, 0.001], "seed": [0, 1, 2, 3]}, site=SITE,
              ledger=tmp_path / "l.db", workdir=tmp_path)
    exp = slurmexp.sweep(metric_fn, **kw)
    assert len(fake.submitted) == 1 and fake.submitted[0]["array"] == "0-11"
    assert exp.status() == {"SUBMITTED": 12}
    again = slurmexp.sweep(metric_fn, **kw)
    assert again.id == exp.id and len(fake.submitted) == 1
    assert slurmexp.experiment(exp.id, tmp_path / "l.db").status() == {"SUBMITTED": 12}
    sweep_copy = Path(Ledger(tmp_path / "l.db").get_experiment(exp.id)["sweep_copy_path"]).read_text()
    # tests/ is not on a task's path (workdir is tmp_path): the function travels pickled
    assert "--pickle" in sweep_copy and '"allow_unused" = ["lr", "seed"]' in sweep_copy


def test_function_by_name_only_where_a_task_can_import_it(tmp_path):
    assert launch.importable_ref(metric_fn, REPO / "tests") == "test_functions:metric_fn"
    assert launch.importable_ref(metric_fn, tmp_path) is None
    assert launch.importable_ref(lambda: 1, REPO / "tests") is None
    assert launch.importable_ref(subprocess.run, tmp_path) == "subprocess:run"
    fn = pickle.loads(launch.pickle_by_value(metric_fn))
    assert fn(1.0, 1) == {"loss": 2.0}


@pytest.mark.parametrize("first", ["", "import slurmexp.sweep.plan; from slurmexp.sweep import spec; "])
def test_slurmexp_sweep_is_callable_in_every_import_order(first):
    # importing the sweep stage's package binds it on `slurmexp` over the lazy name
    code = (f"import slurmexp; {first}from slurmexp.functions.api import sweep; "
            "assert callable(slurmexp.sweep); import slurmexp.sweep.plan as p; assert p.make_plan")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env={"PYTHONPATH": str(REPO)})


class _Saving:
    """A submitit Checkpointable-like callable: checkpoint() returns the call to go on with."""

    def __call__(self, n):
        return n

    def checkpoint(self, n):
        return plain_submitit.helpers.DelayedSubmission(self, n)


def test_checkpointing_runner_records_the_signal_itself(tmp_path, monkeypatch):
    # A preemption's SIGTERM reaches the task script and the runner at once; a runner that
    # saves and exits first must leave the attempt marked as signalled without the script's trap.
    import signal

    attempt = tmp_path / "attempt"
    attempt.mkdir()
    monkeypatch.setenv("SLURMEXP_ATTEMPT_DIR", str(attempt))
    run_dir = _call_dir(tmp_path, _Saving(), 3)
    handler = runner._Checkpointer(run_dir, _Saving(), (3,), {}, None, None)
    with pytest.raises(SystemExit) as stopped:
        handler.handle(signal.SIGTERM, None)
    assert stopped.value.code == runner.EXIT_CHECKPOINTED
    from slurmexp import layout

    assert layout.signals_received(attempt) == ["TERM"]
    assert (run_dir / runner.CALL_FILE).exists()
