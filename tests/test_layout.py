"""The experiment's layout on disk: one owner (slurmexp.layout), the templates get their names
from it, and a requeued attempt is found in the folder its task script really wrote."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

from test_reconcile import CLUSTER, EXP, FakeBackend, row

from slurmexp import layout, tags
from slurmexp.launch.experiment_files import write_manifest, write_script
from slurmexp.launch.render import ScriptContext, render_script
from slurmexp.ledger import Ledger
from slurmexp.reconcile import attempt_files, one_pass
from slurmexp.report.show import show_run
from slurmexp.sweep.plan import ArrayChunk, Resources, Run
from slurmexp.timeutil import sacct_time

# --- names and paths ------------------------------------------------------------------------


def test_experiment_paths():
    p = layout.ExperimentPaths("/data/exp-1")
    assert p.exp_dir == Path("/data/exp-1") and p == layout.ExperimentPaths(Path("/data/exp-1"))
    assert p.script(3) == Path("/data/exp-1/scripts/chunk-003.sbatch")
    assert p.manifest(12) == Path("/data/exp-1/manifests/chunk-012.txt")
    assert p.log("77_3") == Path("/data/exp-1/logs/77_3.out")
    assert p.log("77_3", "err") == Path("/data/exp-1/logs/77_3.err")
    assert (p.sweep_copy.name, p.site_copy.name, p.provenance_dir.name) == (
        "sweep.toml", "site.toml", "provenance")
    run = p.run("r1")
    assert run.run_dir == Path("/data/exp-1/runs/r1") == p.run_dir("r1")
    assert (run.params.name, run.command.name, run.metrics.name, run.metrics_history.name) == (
        "params.json", "command.sh", "metrics.json", "metrics.jsonl")
    assert run.attempt("77_3") == run.run_dir / "attempts" / "77_3"
    assert run.attempt("77_3", 2) == run.run_dir / "attempts" / "77_3.r2"
    assert layout.script_name(1000) == "chunk-1000.sbatch"
    assert layout.ExperimentPaths.under("/data", "exp-1") == p


def test_names_the_script_uses_are_safe_to_insert_as_they_are():
    for key, value in layout.script_names().items():
        if key == "safe_name":
            continue
        assert re.fullmatch(r"[A-Za-z0-9._%-]+", value), (key, value)
    assert layout.is_safe_name("r00ab.c-d_e") and not layout.is_safe_name("../x")
    assert not layout.is_safe_name(".hidden") and not layout.is_safe_name(None)


def test_restart_numbers_count_within_a_submission_and_job_key():
    attempts = [
        dict(attempt_id=1, sub_id=1, job_key="100_0"),
        dict(attempt_id=4, sub_id=1, job_key="100_0"),     # Slurm's requeue: restart 1
        dict(attempt_id=2, sub_id=1, job_key="100_1"),
        dict(attempt_id=7, sub_id=1, job_key="100_0"),     # and again: restart 2
        dict(attempt_id=9, sub_id=3, job_key="100_0"),     # job id reused by another sbatch
    ]
    assert layout.restart_numbers(attempts) == {1: 0, 4: 1, 2: 0, 7: 2, 9: 0}


# --- templates ----------------------------------------------------------------------------


def _ctx(exp_dir: Path, workdir: Path, n: int = 1) -> ScriptContext:
    chunk = ArrayChunk(chunk=0, group=0, resources=Resources(partition="cpu", time_min=10),
                       runs=[Run(run_id=f"r{i:03d}", index=i, params={"i": i}) for i in range(n)],
                       offset=0)
    paths = layout.ExperimentPaths(exp_dir)
    return ScriptContext(experiment_id=EXP, chunk=chunk, exp_dir=exp_dir, workdir=workdir,
                         manifest_path=paths.manifest(0), runs_dir=paths.runs_dir,
                         job_name=tags.job_name(EXP, 0), comment=tags.job_comment(EXP),
                         cluster=CLUSTER)


def test_templates_take_every_name_from_layout(tmp_path, monkeypatch):
    names = layout.script_names()
    renamed = {k: (v if k == "safe_name" else "X" + v.replace("%", "")) for k, v in names.items()}
    monkeypatch.setattr(layout, "script_names", lambda: renamed)
    from slurmexp.sweep.spec import CheckpointSpec

    text = render_script(_ctx(tmp_path / "exp", tmp_path))
    ctx = _ctx(tmp_path / "exp", tmp_path)
    ctx.checkpoint = CheckpointSpec()          # the [checkpoint] wrapper's names too
    text += render_script(ctx)
    for key, value in names.items():
        if key in ("safe_name", "restart_suffix"):
            continue
        assert renamed[key] in text, key
        assert f"/{value}" not in text, (key, value)      # no path spells it itself
    assert '${SLURMEXP_ATTEMPT_ID}X.r${SLURM_RESTART_COUNT}' in text


# --- requeued attempts --------------------------------------------------------------------


def _run_task(script: Path, restart: int | None, cwd: Path) -> str:
    """Run task 0 of job 100 as Slurm would after `restart` requeues; the attempt id it used."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM", "SLURMEXP_"))}
    env.update(SLURM_ARRAY_JOB_ID="100", SLURM_ARRAY_TASK_ID="0")
    if restart is not None:
        env["SLURM_RESTART_COUNT"] = str(restart)
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, cwd=cwd)
    assert proc.returncode == 3, proc.stderr
    return re.search(r"attempt (\S+) on ", proc.stdout).group(1)


def test_requeued_attempts_resolve_to_the_folders_the_task_script_wrote(tmp_path):
    exp_dir = tmp_path / "exp"
    ctx = _ctx(exp_dir, tmp_path)
    run = ctx.chunk.runs[0]
    write_manifest(exp_dir, ctx.chunk, {run.run_id: 'echo "out $SLURMEXP_ATTEMPT_ID"; '
                                        'echo "boom in $SLURMEXP_ATTEMPT_ID" >&2; exit 3'})
    script = write_script(exp_dir, 0, render_script(ctx))
    # Slurm ran the task three times under one job id: first, then after two requeues.
    written = [_run_task(script, restart, tmp_path) for restart in (None, 1, 2)]
    assert written == ["100_0", "100_0.r1", "100_0.r2"]
    run_paths = layout.ExperimentPaths(exp_dir).run(run.run_id)
    folders = [run_paths.attempts_dir / name for name in written]
    assert all((f / layout.EXIT_CODE).read_text().strip() == "3" for f in folders)

    t0 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=5)
    with Ledger(tmp_path / "home" / "ledger.db") as led:
        led.create_experiment(EXP, "sweep", "fp", CLUSTER, "slurm", exp_dir, None, None, None,
                              None, None, {}, [dict(run_id=run.run_id, idx=0, params={},
                                                    run_dir=str(run_paths.run_dir), chunk=0,
                                                    task_index=0)])
        led.set_experiment_settings(EXP, {"retry": {"max_attempts": 1}})
        sub = led.record_intent(EXP, 0, "0", 1, script, "sha", CLUSTER)
        led.record_submitted(sub, "100", sacct_time(t0))
        # sacct -D: the same job three times, two preemptions, then the failure.
        fake = FakeBackend()
        times = [t0, t0 + timedelta(seconds=40), t0 + timedelta(seconds=80)]
        fake.rows = [row("100_0", "PREEMPTED", times[0], raw="101", end=times[1]),
                     row("100_0", "PREEMPTED", times[1], raw="101", end=times[2]),
                     row("100_0", "FAILED", times[2], raw="101", exit_code=3,
                         end=times[2] + timedelta(seconds=5))]
        summary = one_pass.reconcile_pass(led, fake, now=times[2] + timedelta(seconds=30),
                                          grace_s=10)
        assert summary.requeued == 2, summary
        attempts = led.attempts(EXP, run.run_id)
        assert [(a["attempt_no"], a["state"], a["job_key"]) for a in attempts] == [
            (1, "PREEMPTED", "100_0"), (2, "PREEMPTED", "100_0"), (3, "FAILED", "100_0")]
        # reconcile read the failed attempt's stderr from its own folder (.r2), not another's
        assert "boom in 100_0.r2" in attempts[2]["reason"], attempts[2]["reason"]
        # reconcile and show resolve every attempt to the folder the task script wrote
        for a, folder in zip(attempts, folders):
            assert attempt_files._attempt_dir(led, SimpleNamespace(**{**a, "run_dir": str(run_paths.run_dir)})) == folder
        shown = show_run(led, run.run_id)["attempts"]
        assert [Path(a["attempt_dir"]) for a in shown] == folders
        assert [a["files"]["exit_code"] for a in shown] == ["3", "3", "3"]
        assert shown[2]["stderr"] == str(folders[2] / layout.STDERR)

        # A fourth requeue that has not started yet: both name its own, future folder.
        new = led.record_requeue(attempts[2]["attempt_id"], sacct_time(t0 + timedelta(seconds=120)))
        future = run_paths.attempt("100_0", 3)
        assert not future.exists()
        assert attempt_files._attempt_dir(led, SimpleNamespace(**{**new, "run_dir": str(run_paths.run_dir)})) == future
        assert Path(show_run(led, run.run_id)["attempts"][3]["attempt_dir"]) == future


def test_layout_imports_nothing_slow():
    code = ("import sys, slurmexp.layout; "
            "extra = sorted(m for m in sys.modules if m.startswith('slurmexp.') "
            "and m != 'slurmexp.layout') + [m for m in ('dataclasses', 'inspect') "
            "if m in sys.modules]; assert not extra, extra")
    subprocess.run([sys.executable, "-c", code], check=True)


PARAM_VALUES = [0, -3, 10 ** 30, 0.1, 1e-300, float("nan"), float("inf"), True, False, None, "",
                "plain", "a, b", "x\ny", '",\n  "', "é ü 日本", "\udcff", [1, "a"], (2, 3),
                {"k": [1]}, {"nested": {"x": None}}, set(), __import__("datetime").date(2020, 1, 2)]


def test_params_file_text_is_json_dumps_indent_2():
    """params.json's fast path (the C encoder, flat parameters) writes what json.dumps(indent=2)
    writes, for every kind of value a parameter can hold, alone and mixed."""
    import itertools
    import json
    import random

    from slurmexp.launch.experiment_files import params_file_text

    def want(params):
        return json.dumps(params, sort_keys=True, indent=2, ensure_ascii=False, default=str) + "\n"

    cases = [{}] + [{"v": v} for v in PARAM_VALUES]
    cases += [{"b": a, "a": b} for a, b in itertools.product(PARAM_VALUES[:12], repeat=2)]
    rng = random.Random(7)
    cases += [{f"k{i}": rng.choice(PARAM_VALUES) for i in range(rng.randint(1, 6))}
              for _ in range(300)]
    for params in cases:
        assert params_file_text(params) == want(params), params
