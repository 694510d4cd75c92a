"""Issue 15 item 6 without a cluster: `[depends] after_ok` resolved in the ledger (launch.depends),
the sbatch argv it gives every array, and a dependency that can never be met becoming
DEPENDENCY_FAILED in a reconcile pass (reconcile.dependency) against a fake backend. The real
Slurm behaviour is in tests/test_depends_cluster.py."""
from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from slurmexp.backends.slurm.backend import SlurmBackend
from slurmexp.cli import main
from slurmexp.errors import SpecError, ValidationError
from slurmexp.launch import depends, launcher
from slurmexp.launch.validate import validate
from slurmexp.ledger import Ledger
from slurmexp.reconcile import one_pass as rc
from slurmexp.reconcile import retry
from slurmexp.settings import DependsSettings
from slurmexp.states import DEPENDENCY, DEPENDENCY_FAILED, DEPENDENCY_NEVER, classify
from slurmexp.sweep.spec import load_sweep, parse_sweep

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def site(tmp_path) -> Path:
    path = tmp_path / "site.toml"
    path.write_text((REPO / "site.toml").read_text().replace('"templates/', f'"{REPO}/templates/'))
    return path


@pytest.fixture
def ledger(tmp_path):
    led = Ledger(tmp_path / "ledger.db")
    yield led
    led.close()


def upstream(ledger, tmp_path, exp_id="prep-0000aaaa", name="prep", jobs=("100",), n=2,
             done: str | None = None, state="SUBMITTED"):
    """An experiment in the ledger with `n` runs per job, submitted as `jobs`; `done` ends
    every attempt in that state."""
    runs = [dict(run_id=f"{exp_id}-r{i}", idx=i, params={"i": i}, run_dir=str(tmp_path / exp_id / str(i)),
                 chunk=i // n, task_index=i % n) for i in range(n * len(jobs))]
    ledger.create_experiment(exp_id, name, "fp-" + exp_id, None, "slurm", tmp_path / exp_id, None,
                             None, None, None, None, {}, runs)
    script = tmp_path / f"{exp_id}.sbatch"
    script.write_text("#!/bin/bash\ntrue\n")
    for c, job in enumerate(jobs):
        sub = ledger.record_intent(exp_id, c, f"0-{n - 1}", n, script, "sha", None)
        ledger.record_submitted(sub, job, "2026-01-01T00:00:00")
    if done:
        for a in ledger.attempts(exp_id):
            ledger.update_attempt(a["attempt_id"], state=done)
    ledger.set_experiment_state(exp_id, state)
    return exp_id


def sweep_file(tmp_path, after_ok='"prep"') -> Path:
    path = tmp_path / "b" / "sweep.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(f'name = "b"\ncommand = "echo {{x}}"\n[params]\nx = [1, 2, 3]\n'
                    f'[resources]\ntime = "00:05:00"\nmem = "100M"\n[depends]\nafter_ok = {after_ok}\n')
    return path


# --- the key ------------------------------------------------------------------------------

def test_after_ok_is_one_reference_or_a_list(tmp_path):
    base = 'name = "b"\ncommand = "echo"\n[depends]\n'
    assert parse_sweep(base + 'after_ok = "prep"\n', tmp_path / "s.toml").depends.after_ok == ["prep"]
    assert parse_sweep(base + 'after_ok = ["a", "b", "a"]\n', tmp_path / "s.toml").depends.after_ok == ["a", "b"]
    for bad, said in [('after_ok = 3', "is not an experiment reference"), ("after_ok = []", "empty list"),
                      ('after_ok = ["a", 1]', "is not an experiment reference"),
                      ('afterok = "a"', "unknown key")]:
        with pytest.raises(SpecError) as err:
            parse_sweep(base + bad + "\n", tmp_path / "s.toml")
        text = "\n".join(p.format() for p in err.value.problems)
        assert said in text and "depends" in text


def test_depends_is_not_part_of_the_fingerprint(tmp_path):
    plain = parse_sweep('name = "b"\ncommand = "echo"\n', tmp_path / "s.toml")
    dep = parse_sweep('name = "b"\ncommand = "echo"\n[depends]\nafter_ok = "x"\n', tmp_path / "s.toml")
    assert plain.canonical() == dep.canonical()


# --- resolution ---------------------------------------------------------------------------

def test_a_running_experiment_is_waited_for_on_all_its_jobs(tmp_path, ledger):
    upstream(ledger, tmp_path, jobs=("100", "101"))
    deps = depends.resolve(load_sweep(sweep_file(tmp_path)), ledger)
    assert deps == (DependsSettings("prep", "prep-0000aaaa", ("100", "101")),)
    assert depends.sbatch_args(deps) == ("--dependency=afterok:100:101",)
    assert "waits for prep-0000aaaa ('prep'): 2 job(s) (100, 101)" in depends.describe(deps)


def test_a_name_means_its_newest_experiment_and_a_prefix_works(tmp_path, ledger):
    upstream(ledger, tmp_path, exp_id="prep-0000aaaa", jobs=("100",))
    upstream(ledger, tmp_path, exp_id="prep-0000aaaa-2", jobs=("200",))
    deps = depends.resolve(load_sweep(sweep_file(tmp_path)), ledger)
    assert deps[0].exp_id == "prep-0000aaaa-2" and deps[0].job_ids == ("200",)
    deps = depends.resolve(load_sweep(sweep_file(tmp_path, '["prep-0000aaaa-", "prep-0000aaaa"]')), ledger)
    assert [d.job_ids for d in deps] == [("200",), ("100",)]
    assert depends.sbatch_args(deps) == ("--dependency=afterok:200:100",)


def test_unknown_and_ambiguous_references_are_refused_naming_file_key_and_candidates(tmp_path, ledger):
    upstream(ledger, tmp_path, exp_id="prep-0000aaaa")
    upstream(ledger, tmp_path, exp_id="prep-0000bbbb", name="other")
    path = sweep_file(tmp_path, '"nosuch"')
    with pytest.raises(ValidationError) as err:
        depends.resolve(load_sweep(path), ledger)
    assert err.value.exit_code == 2
    p = err.value.problems[0]
    assert (p.file, p.key) == (str(path), "depends.after_ok")
    assert "nosuch" in p.message and "slurmexp status" in p.fix
    with pytest.raises(ValidationError) as err:
        depends.resolve(load_sweep(sweep_file(tmp_path, '"prep-0000"')), ledger)
    p = err.value.problems[0]
    assert "ambiguous" in p.message and "prep-0000aaaa" in p.fix and "prep-0000bbbb" in p.fix


def test_a_finished_experiment_needs_no_dependency(tmp_path, ledger):
    upstream(ledger, tmp_path, done="COMPLETED", state="FINISHED")
    deps = depends.resolve(load_sweep(sweep_file(tmp_path)), ledger)
    assert deps[0].job_ids == () and depends.sbatch_args(deps) == ()
    assert "nothing to wait for" in depends.describe(deps)


@pytest.mark.parametrize("done, state", [("FAILED", "FINISHED_WITH_FAILURES"), ("FAILED", "SUBMITTED"),
                                         (None, "CANCELLED")])
def test_a_failed_experiment_is_refused_with_why(tmp_path, ledger, done, state):
    upstream(ledger, tmp_path, done=done, state=state)
    with pytest.raises(ValidationError) as err:
        depends.resolve(load_sweep(sweep_file(tmp_path)), ledger)
    p = err.value.problems[0]
    assert err.value.exit_code == 2 and p.key == "depends.after_ok"
    assert "can never complete" in p.message and state in p.message
    assert "slurmexp retry prep-0000aaaa" in p.fix


def test_an_experiment_not_yet_submitted_is_refused(tmp_path, ledger):
    upstream(ledger, tmp_path, jobs=(), state="SUBMITTING")
    ledger.add_runs("prep-0000aaaa", [dict(run_id="late", idx=9, params={}, run_dir=str(tmp_path / "late"))])
    with pytest.raises(ValidationError) as err:
        depends.resolve(load_sweep(sweep_file(tmp_path)), ledger)
    assert "not submitted yet" in err.value.problems[0].message


# --- launch: every array carries the dependency --------------------------------------------

class Recording:
    """A scheduler that answers sbatch like Slurm and records the argv the real backend builds."""

    cluster = None

    def __init__(self):
        self.backend = SlurmBackend()
        self.argv: list[list[str]] = []
        self.backend._run = self._run

    def _run(self, argv, **kw):
        self.argv.append(argv)
        return SimpleNamespace(stdout=f"{700 + len(self.argv)}\n", stderr="", returncode=0)

    def submit(self, script, *, extra_args=(), cwd=None):
        return self.backend.submit(script, extra_args=extra_args, cwd=cwd)

    def submit_times(self, job_ids):
        return {}


def _static_check(prep, backend=None, **kw):
    return validate(prep.sweep, prep.site, prep.plan)


def test_launch_submits_every_array_after_ok_and_records_it(tmp_path, site, ledger, monkeypatch):
    upstream(ledger, tmp_path, jobs=("100", "101"))
    monkeypatch.setattr(launcher, "check", _static_check)
    slurm = Recording()
    result = launcher.launch(sweep_file(tmp_path), site, ledger=ledger, slurm=slurm)
    sbatch = [a for a in slurm.argv if a[0] == "sbatch"]
    assert sbatch and all("--dependency=afterok:100:101" in a for a in sbatch)
    settings = ledger.experiment_settings(result.exp_id)
    assert settings.depends == (DependsSettings("prep", "prep-0000aaaa", ("100", "101")),)


def test_launch_after_a_finished_experiment_has_no_dependency(tmp_path, site, ledger, monkeypatch):
    upstream(ledger, tmp_path, done="COMPLETED", state="FINISHED")
    monkeypatch.setattr(launcher, "check", _static_check)
    slurm = Recording()
    launcher.launch(sweep_file(tmp_path), site, ledger=ledger, slurm=slurm)
    sbatch = [a for a in slurm.argv if a[0] == "sbatch"]
    assert sbatch and not any(x.startswith("--dependency") for a in sbatch for x in a)


def test_cli_refuses_a_failed_dependency_with_exit_2(tmp_path, site, monkeypatch):
    monkeypatch.setenv("SLURMEXP_HOME", str(tmp_path / "home"))
    led = Ledger(tmp_path / "home" / "ledger.db")
    upstream(led, tmp_path, done="FAILED", state="FINISHED_WITH_FAILURES")
    led.close()
    res = CliRunner().invoke(main, ["launch", str(sweep_file(tmp_path)), "--site", str(site)])
    assert res.exit_code == 2, res.output
    assert "depends.after_ok" in res.output and "can never complete" in res.output
    assert "Traceback" not in res.output


def test_explain_shows_the_chain(tmp_path, site, monkeypatch):
    monkeypatch.setenv("SLURMEXP_HOME", str(tmp_path / "home"))
    led = Ledger(tmp_path / "home" / "ledger.db")
    upstream(led, tmp_path, jobs=("100", "101", "102"))
    led.close()
    res = CliRunner().invoke(main, ["explain", str(sweep_file(tmp_path)), "--site", str(site)])
    assert res.exit_code == 0, res.output
    assert "this experiment waits for prep-0000aaaa ('prep'): 3 job(s)" in res.output


def test_the_local_backend_cannot_wait(tmp_path, site, ledger):
    upstream(ledger, tmp_path)
    with pytest.raises(ValidationError) as err:
        launcher.launch(sweep_file(tmp_path), site, backend="local", ledger=ledger)
    assert "cannot wait" in err.value.problems[0].message


# --- reconcile: DependencyNeverSatisfied -> DEPENDENCY_FAILED ---------------------------------

def test_never_satisfied_becomes_dependency_failed_and_is_cancelled(tmp_path, site, ledger, monkeypatch):
    from tests.test_reconcile import FakeBackend, row

    class Fake(FakeBackend):       # launch's arrays carry --array in their script
        def submit(self, script, *, extra_args=(), **kw):
            spec = re.search(r"--array=(\S+)", Path(script).read_text()).group(1)
            return super().submit(script, extra_args=[*extra_args, f"--array={spec}"], **kw)

    upstream(ledger, tmp_path, jobs=("100",))
    monkeypatch.setattr(launcher, "check", _static_check)
    fake = Fake()
    result = launcher.launch(sweep_file(tmp_path), site, ledger=ledger, slurm=fake)
    assert "--dependency=afterok:100" in fake.submitted[0]["args"]
    job = fake.submitted[0]["job"]
    for q in fake.queued:
        q.reason = "Dependency"
    # Accounting keeps the reason of the submission: what the controller says now counts.
    fake.rows = [row(f"{job}_[0-2]", "PENDING", fake.submitted[0]["submit"], name=fake.queued[0].name,
                     exit_code=None, node=None, reason="Dependency", comment=f"slurmexp:{result.exp_id}",
                     cluster=ledger.get_experiment(result.exp_id)["cluster"])]
    rc.reconcile_pass(ledger, backend=fake, grace_s=3600)
    assert {r["state"] for r in ledger.runs(result.exp_id)} == {"PENDING"} and not fake.cancelled
    for q in fake.queued:
        q.reason = DEPENDENCY_NEVER
    rc.reconcile_pass(ledger, backend=fake, grace_s=3600)
    runs = ledger.runs(result.exp_id)
    assert {r["state"] for r in runs} == {DEPENDENCY_FAILED}
    assert all("experiment prep-0000aaaa" in r["reason"] and "can never be met" in r["reason"] for r in runs)
    assert {a["failure_class"] for a in ledger.attempts(result.exp_id)} == {DEPENDENCY}
    assert fake.cancelled == [[job]]          # one scancel for the whole array
    assert ledger.get_experiment(result.exp_id)["state"] == "FINISHED_WITH_FAILURES"
    # Final: not retried, and the next pass leaves it alone.
    rc.reconcile_pass(ledger, backend=fake, grace_s=3600)
    assert {r["state"] for r in ledger.runs(result.exp_id)} == {DEPENDENCY_FAILED}
    assert len(fake.submitted) == 1 and fake.cancelled == [[job]]

    # A retry goes out without a dependency: refused while the upstream has not completed...
    with pytest.raises(ValidationError) as err:
        retry.retry_experiment(ledger, fake, result.exp_id)
    assert err.value.exit_code == 2 and "prep-0000aaaa is SUBMITTED" in err.value.problems[0].message
    assert len(fake.submitted) == 1
    # ... and resubmits them once it has FINISHED with every run COMPLETED.
    for a in ledger.attempts("prep-0000aaaa"):
        ledger.update_attempt(a["attempt_id"], state="COMPLETED")
    ledger.set_experiment_state("prep-0000aaaa", "FINISHED")
    assert retry.retry_experiment(ledger, fake, result.exp_id)
    assert not any(x.startswith("--dependency") for x in fake.submitted[1]["args"])
    assert {r["state"] for r in ledger.runs(result.exp_id)} == {"SUBMITTED"}


def test_dependency_failed_is_a_final_class_never_retried():
    from slurmexp.reconcile.policy import RetryPolicy, decide_retry

    assert classify(DEPENDENCY_FAILED) == DEPENDENCY
    assert not decide_retry(RetryPolicy(max_attempts=5), DEPENDENCY_FAILED, DEPENDENCY, 1, [DEPENDENCY_FAILED],
                            None, datetime.now()).retry
