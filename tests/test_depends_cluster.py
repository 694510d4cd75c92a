"""Issue 15 item 6 on the real cluster: `[depends] after_ok`. (a) B after A: B's tasks start only
once A's have ended (sacct Start/End), and (b) A fails: Slurm holds B with
DependencyNeverSatisfied, and a reconcile pass makes B's runs DEPENDENCY_FAILED with the reason
and cancels its jobs, so nothing stays pending."""
from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from clusterlib import CURRENT, sh

from slurmexp.backends.slurm.backend import SlurmBackend
from slurmexp.cli import main
from slurmexp.reconcile.one_pass import reconcile_pass
from slurmexp.states import DEPENDENCY, DEPENDENCY_FAILED

pytestmark = pytest.mark.cluster


def write_sweep(tmp_path: Path, name: str, command: str, extra: str = "") -> Path:
    sweep = tmp_path / f"{name}.toml"
    sweep.write_text(f'name = "{name}"\ncommand = "{command}"\n[params]\nx = [1, 2]\n'
                     '[resources]\npartition = "debug"\ntime = "00:02:00"\nmem = "100M"\n'
                     '[retry]\nmax_attempts = 1\n' + extra)
    return sweep


def cli(ledger, *args, code=0):
    result = CliRunner().invoke(main, ["--ledger", str(ledger.path), *args], catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


def wait_finished(ledger, exp_ids, timeout: float = 180) -> dict[str, str]:
    backend = SlurmBackend(cluster=CURRENT.name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        summary = reconcile_pass(ledger, backend)
        assert summary.ok, summary.error
        states = {e: ledger.get_experiment(e)["state"] for e in exp_ids}
        if all(s in ("FINISHED", "FINISHED_WITH_FAILURES") for s in states.values()):
            return states
        time.sleep(2)
    raise AssertionError(f"not finished: {[ledger.counts_by_state(e) for e in exp_ids]}")


def sacct_times(job_id: str, since: str) -> list[tuple[str, str, str, str]]:
    out = sh("sacct", "-n", "-X", "-P", "-S", since, "-j", job_id, "-o", "JobID,State,Start,End").stdout
    return [tuple(line.split("|")) for line in out.splitlines() if line.strip()]


def test_b_after_ok_a_starts_only_after_a_completed(tmp_path, cluster, cluster_ledger):
    ledger, site = cluster_ledger, str(CURRENT.site_toml)
    since = datetime.fromtimestamp(time.time() - 2).strftime("%Y-%m-%dT%H:%M:%S")
    a = cli(ledger, "launch", str(write_sweep(tmp_path, "prep", "sleep 4; echo {x}")), "--site", site
            ).stdout.split()[-1]
    sweep_b = write_sweep(tmp_path, "train", "echo {x}", '[depends]\nafter_ok = "prep"\n')
    explained = cli(ledger, "explain", str(sweep_b), "--site", site).stdout
    [a_sub] = ledger.submissions(a)
    assert f"this experiment waits for {a} ('prep'): 1 job(s) ({a_sub['job_id']})" in explained
    b = cli(ledger, "launch", str(sweep_b), "--site", site).stdout.split()[-1]
    [b_sub] = ledger.submissions(b)
    # What Slurm holds: B's array after A's job.
    shown = sh("scontrol", "show", "job", str(b_sub["job_id"])).stdout
    assert f"Dependency=afterok:{a_sub['job_id']}" in shown, shown
    assert ledger.experiment_settings(b).depends[0].job_ids == (str(a_sub["job_id"]),)
    assert wait_finished(ledger, [a, b]) == {a: "FINISHED", b: "FINISHED"}
    a_rows = sacct_times(str(a_sub["job_id"]), since)
    b_rows = sacct_times(str(b_sub["job_id"]), since)
    assert len(a_rows) == 2 and len(b_rows) == 2, (a_rows, b_rows)
    assert {r[1] for r in a_rows + b_rows} == {"COMPLETED"}
    a_end = max(r[3] for r in a_rows)
    assert all(r[2] >= a_end for r in b_rows), (a_rows, b_rows)

    # A has FINISHED with every run COMPLETED: a later launch needs no dependency.
    c = cli(ledger, "launch", str(sweep_b), "--site", site, "--new").stdout.split()[-1]
    [c_sub] = ledger.submissions(c)
    assert "Dependency=(null)" in sh("scontrol", "show", "job", str(c_sub["job_id"])).stdout
    assert ledger.experiment_settings(c).depends[0].job_ids == ()


def test_a_failed_dependency_becomes_dependency_failed_and_is_cancelled(tmp_path, cluster, cluster_ledger):
    ledger, site = cluster_ledger, str(CURRENT.site_toml)
    since = datetime.fromtimestamp(time.time() - 2).strftime("%Y-%m-%dT%H:%M:%S")
    a = cli(ledger, "launch", str(write_sweep(tmp_path, "prep", "sleep 2; exit {x}")), "--site", site
            ).stdout.split()[-1]
    b = cli(ledger, "launch", str(write_sweep(tmp_path, "train", "echo {x}", '[depends]\nafter_ok = "prep"\n')),
            "--site", site).stdout.split()[-1]
    [b_sub] = ledger.submissions(b)
    assert wait_finished(ledger, [a, b]) == {a: "FINISHED_WITH_FAILURES", b: "FINISHED_WITH_FAILURES"}
    runs = ledger.runs(b)
    assert {r["state"] for r in runs} == {DEPENDENCY_FAILED}, runs
    assert all(f"a job of experiment {a} did not complete (afterok): dependency can never be met"
               in r["reason"] for r in runs), [r["reason"] for r in runs]
    assert {x["failure_class"] for x in ledger.attempts(b)} == {DEPENDENCY}
    # Nothing left pending: Slurm has B's tasks cancelled, never started.
    time.sleep(1)
    assert not sh("squeue", "-h", "-j", str(b_sub["job_id"]), check=False).stdout.strip()
    rows = sacct_times(str(b_sub["job_id"]), since)
    assert rows and {r[1].split()[0] for r in rows} == {"CANCELLED"}, rows
    status = cli(ledger, "status", b).stdout
    assert DEPENDENCY_FAILED in status
    # A later launch after the failed A is refused with why (exit 2).
    res = cli(ledger, "launch", str(tmp_path / "train.toml"), "--site", site, "--new", code=2)
    assert "can never complete" in res.output
