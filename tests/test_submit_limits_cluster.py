"""Slurm's queue limits on the real cluster: MaxJobCount, a submit limit Slurm applies after
validation, and slurmctld away while launch or retry submits (issue 9 items 6, 7, 13).

Limits are changed only for the test and restored by its fixture: the queue is filled with held
arrays that are cancelled afterwards, and the submit limit is an association limit of root's
`research` association, set back to none at the end (the test cluster is shared; these run
under the cluster lock like every cluster test).
"""
from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
from clusterlib import CURRENT, sh
from test_launch_cluster import cli, wait_done, write_sweep

from slurmexp.backends.slurm.backend import SlurmBackend
from slurmexp.errors import SlurmQueueLimit
from slurmexp.ledger import Ledger

pytestmark = pytest.mark.cluster

SITE = Path(CURRENT.site_toml)


def site_with(tmp_path: Path, max_array_size: int) -> Path:
    """The cluster's site.toml with smaller arrays (the template path made absolute)."""
    text = SITE.read_text()
    text = re.sub(r'(?m)^template = "(.*)"',
                  lambda m: f'template = {json.dumps(str(SITE.parent / m.group(1)))}', text)
    text = re.sub(r"(?m)^max_array_size = \d+", f"max_array_size = {max_array_size}", text)
    path = tmp_path / "site.toml"
    path.write_text(text)
    return path


def _config(name: str) -> int:
    out = sh("scontrol", "show", "config").stdout
    return int(re.search(rf"(?m)^{name}\s*=\s*(\d+)", out).group(1))


def _jobs_held() -> int:
    """Jobs (array tasks) the controller holds now, ended ones it has not purged included."""
    return len(sh("squeue", "-h", "-r", "-t", "all", "-o", "%i").stdout.split())


FILLER = "sx-test-fullq-filler"       # the job name of the held arrays that fill the queue


def _fillers_held() -> list[str]:
    """The filler arrays' tasks the controller still holds (cancelled ones until purged)."""
    return sh("squeue", "-h", "-r", "-t", "all", "-n", FILLER, "-o", "%i").stdout.split()


@pytest.fixture(scope="session")
def queue_handed_back(cluster):
    """At the session's end, waits until the controller has purged the cancelled filler arrays
    (MinJobAge after they ended, 60 s here, and its purge interval): the shared cluster must
    take a 2,500-run sweep again when the session hands it back. Waited for once, at the end,
    not in the test's teardown: the tests after it overlap the wait, and in the whole suite the
    next one wipes the controller's state (conftest orders it so), which purges them at once."""
    yield
    deadline = time.monotonic() + _config("MinJobAge") + 120
    while _fillers_held() and time.monotonic() < deadline:
        time.sleep(5)


@pytest.fixture
def full_queue(cluster, queue_handed_back):
    """The controller filled with held arrays until one more array of MaxArraySize - 1 tasks
    would reach MaxJobCount; cancelled afterwards (by job id). Cancelled jobs still count
    until the controller purges them (MinJobAge): see queue_handed_back."""
    size = _config("MaxArraySize") - 1
    # Jobs that ended less than MinJobAge ago still count (a 2,500-run test just before this
    # one): wait until the controller holds fewer than one array's worth.
    deadline = time.monotonic() + _config("MinJobAge") + 120
    while _jobs_held() >= size and time.monotonic() < deadline:
        time.sleep(5)
    held: list[str] = []
    try:
        for _ in range(_config("MaxJobCount") // size - 1):
            held.append(cluster.sbatch("--hold", f"--array=0-{size - 1}", f"--job-name={FILLER}", wrap="true"))
        yield size
    finally:
        if held:
            sh("scancel", *held, check=False)


# The queue stays full for MinJobAge after it: it runs among the tests that run last, between
# two that wipe the controller's state (conftest.py).
@pytest.mark.destructive(fills_queue=True)
def test_a_full_queue_is_refused_at_once_and_named(tmp_path, cluster, full_queue):
    # Validation counts the user's queued jobs against MaxJobCount (item 6): exit 2.
    sweep = write_sweep(tmp_path, "fullq", f"x = {list(range(full_queue))}", command="true {x}")
    result = cli(tmp_path, "launch", str(sweep), "--site", str(SITE))
    assert result.exit_code == 2, result.output
    assert "MaxJobCount" in result.output and "you have queued" in result.output
    assert "Traceback" not in result.output
    # sbatch itself, past validation: slurmctld answers EAGAIN and sbatch would retry for two
    # minutes; the backend stops it at the first "sleeping and retrying" and calls it what it
    # is (item 7), and no job was created.
    script = tmp_path / "one.sbatch"
    script.write_text(f"#!/bin/bash\n#SBATCH --job-name=sx-test-fullq\n#SBATCH --output=/dev/null\n"
                      f"#SBATCH --array=0-{full_queue - 1}\n#SBATCH --hold\ntrue\n")
    with pytest.raises(SlurmQueueLimit) as err:
        SlurmBackend().submit(script, cwd=tmp_path)
    assert err.value.exit_code == 1 and err.value.limit == "MaxJobCount"
    assert "queue is full" in err.value.message and "instead of retrying" in err.value.message
    assert "could not reach" not in err.value.message
    names = sh("squeue", "-h", "-o", "%j").stdout.split()
    assert "sx-test-fullq" not in names
    # sbatch --test-only on the full queue (validation's last check) answers "allocation
    # failure: Resource temporarily unavailable" at once: a full queue, not a daemon away.
    ok, message = SlurmBackend().test_only(script)
    assert not ok and "queue is full" in message, message


@pytest.fixture
def assoc_submit_limit(cluster):
    """root's research association may have `limit` jobs queued; set back to none after."""
    where = ["where", "user=root", "account=research", f"cluster={CURRENT.name}"]

    def set_limit(value: int) -> None:
        sh("sacctmgr", "-i", "modify", "user", *where, "set", f"MaxSubmitJobs={value}")

    try:
        yield set_limit
    finally:
        set_limit(-1)


def test_a_later_array_refused_exits_5_naming_the_runs_then_retry_submits_them(
        tmp_path, cluster, assoc_submit_limit):
    # 6 runs in 3 arrays of 2. An association submit limit of 3 jobs, which validation does not
    # read: the first array goes in, the second is refused by Slurm.
    site = site_with(tmp_path, 2)
    sweep = write_sweep(tmp_path, "later", "x = [1, 2, 3, 4, 5, 6]", command="true {x}")
    assoc_submit_limit(3)
    result = cli(tmp_path, "launch", str(sweep), "--site", str(site))
    assert result.exit_code == 5, result.output
    exp_id = result.stdout.strip().splitlines()[-1]
    assert "1 of 3 array(s) submitted" in result.stderr
    assert "AssocMaxSubmitJobLimit" in result.stderr, result.stderr
    assert "Not submitted: 4 run(s) in chunk(s) 1, 2" in result.stderr
    assert f"slurmexp retry {exp_id} --unsubmitted" in result.stderr
    assert "Traceback" not in result.output
    ledger = Ledger(tmp_path / "ledger.db")
    assert ledger.counts_by_state(exp_id).get("PLANNED") == 4
    assert ledger.experiment_state(exp_id) == "SUBMITTED"
    planned = [r for r in ledger.runs(exp_id) if r["state"] == "PLANNED"]
    assert len(planned) == 4 and all("refused" in (r["reason"] or "") for r in planned)
    # The queue has room again: retry --unsubmitted sends exactly those 4, never the others.
    assoc_submit_limit(-1)
    again = cli(tmp_path, "retry", exp_id, "--unsubmitted")
    assert again.exit_code == 0, again.output
    assert "2 array job(s) submitted" in again.stdout
    assert again.stderr.count("-> job ") == 2, again.stderr
    ledger = wait_done(tmp_path, exp_id)
    assert ledger.counts_by_state(exp_id) == {"COMPLETED": 6}
    assert len(ledger.attempts(exp_id)) == 6
    assert cli(tmp_path, "retry", exp_id, "--unsubmitted").stdout.strip() == "nothing to retry"


def test_retry_past_max_attempts_says_so_and_names_the_job(tmp_path, cluster):
    sweep = write_sweep(tmp_path, "pastmax", "x = [1, 2]", command="bash -c 'exit 3' {x}")
    sweep.write_text(sweep.read_text() + "[retry]\nmax_attempts = 1\n")
    result = cli(tmp_path, "launch", str(sweep), "--site", str(SITE))
    assert result.exit_code == 0, result.output
    exp_id = result.stdout.strip().splitlines()[-1]
    wait_done(tmp_path, exp_id)
    again = cli(tmp_path, "retry", exp_id)
    assert again.exit_code == 0, again.output
    assert "2 run(s) get attempt 2, past max_attempts = 1" in again.stderr, again.stderr
    job = re.search(r"-> job (\d+) \(2 run\(s\): (\S+), (\S+)\)", again.stderr)
    assert job, again.stderr
    subs = Ledger(tmp_path / "ledger.db").submissions(exp_id)
    assert subs[-1]["job_id"] == job.group(1)


@pytest.mark.destructive
def test_slurmctld_down_launch_and_retry_exit_3_with_the_reason(tmp_path, cluster):
    failing = write_sweep(tmp_path, "downretry", "x = [1]", command="bash -c 'exit 3' {x}")
    result = cli(tmp_path, "launch", str(failing), "--site", str(SITE))
    assert result.exit_code == 0, result.output
    exp_id = result.stdout.strip().splitlines()[-1]
    wait_done(tmp_path, exp_id)
    sweep = write_sweep(tmp_path, "down", "x = [1, 2]", command="true {x}")
    try:
        cluster.script("stop-ctld")
        launched = subprocess.run(
            ["python3", "-m", "slurmexp", "--ledger", str(tmp_path / "ledger.db"), "launch",
             str(sweep), "--site", str(SITE)], capture_output=True, text=True, timeout=600)
        retried = subprocess.run(
            ["python3", "-m", "slurmexp", "--ledger", str(tmp_path / "ledger.db"), "retry",
             exp_id], capture_output=True, text=True, timeout=600)
    finally:
        cluster.restart_ctld()
    print(f"\nlaunch: exit {launched.returncode}: {launched.stderr.strip()}"
          f"\nretry: exit {retried.returncode}: {retried.stderr.strip()}")
    for proc in (launched, retried):
        assert proc.returncode == 3, proc.stderr
        assert "Traceback" not in proc.stderr
        assert "daemon" in proc.stderr or "controller" in proc.stderr, proc.stderr
        assert "check the resources" not in proc.stderr


class _ImpatientSlurm(SlurmBackend):
    """The real backend, but sbatch is given a timeout it cannot meet: the real sbatch is
    killed mid-way, as a controller that does not answer in time would leave it."""

    def submit(self, script, *, extra_args=(), cwd=None, timeout=60):
        return super().submit(script, extra_args=extra_args, cwd=cwd, timeout=0.001)


def test_sbatch_timing_out_exits_6_and_reconcile_finishes_it_once(tmp_path, cluster, monkeypatch):

    from slurmexp.launch import launcher
    from slurmexp.reconcile.one_pass import reconcile_pass

    monkeypatch.setattr(launcher, "scheduler_for", lambda kind, c: _ImpatientSlurm(cluster=c))
    sweep = write_sweep(tmp_path, "impatient", "x = [1, 2]", command="true {x}")
    result = cli(tmp_path, "launch", str(sweep), "--site", str(SITE))
    assert result.exit_code == 6, result.output
    exp_id = result.stdout.strip().splitlines()[-1]
    assert "did not answer" in result.stderr and "slurmexp reconcile" in result.stderr
    ledger = Ledger(tmp_path / "ledger.db")
    assert len(ledger.intents(exp_id)) == 1 and ledger.experiment_state(exp_id) == "SUBMITTING"
    # Whether that sbatch created its array or not, reconcile adopts it or submits the runs.
    time.sleep(6)
    backend = SlurmBackend(cluster=CURRENT.name)
    for _ in range(3):
        reconcile_pass(ledger, backend, grace_s=5)
    ledger = wait_done(tmp_path, exp_id)
    assert ledger.counts_by_state(exp_id) == {"COMPLETED": 2}
    assert len(ledger.attempts(exp_id)) == 2
    names = {r.array_job_id or r.job_id_raw for r in backend.sacct_rows(
        [], since="now-1hours", names=[f"sx.{exp_id}.000"])}
    assert len(names) == 1, names        # one array with the experiment's tag: never two


# --- full disk (issue 9 item 5) --------------------------------------------------------------

@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs of its own, unmounted afterwards (root only: the test cluster runs as root)."""
    mounts = []

    def mount(name: str, size: str = "1m") -> Path:
        path = tmp_path / name
        path.mkdir()
        sh("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
        mounts.append(path)
        return path

    yield mount
    for path in reversed(mounts):
        sh("umount", "-l", str(path), check=False)


def fill(folder: Path) -> Path:
    """Write a filler file until the file system is full; returns it (delete it to free)."""
    filler = folder / "filler"
    # Unbuffered: a buffered file would raise ENOSPC again when `with` closes it.
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    return filler


def test_full_output_disk_exits_7_and_nothing_is_recorded(tmp_path, cluster, small_tmpfs):
    out = small_tmpfs("out", "256k")
    # 300 runs of a 1 kB command: the chunk's .files alone (~300 kB) cannot fit in 256 kB.
    sweep = write_sweep(tmp_path, "fullout", f"x = {list(range(300))}", command="true {x} " + "y" * 1000)
    sweep.write_text(sweep.read_text().replace("[params]", f"output_dir = {json.dumps(str(out))}\n[params]"))
    result = cli(tmp_path, "launch", str(sweep), "--site", str(SITE))
    assert result.exit_code == 7, result.output
    assert "No space left on device" in result.stderr and "nothing was recorded or submitted" in result.stderr
    assert "Traceback" not in result.output
    assert Ledger(tmp_path / "ledger.db").experiments() == []


HOOK = """
import sys
sys.path.insert(0, {repo!r})
from slurmexp.backends.slurm import backend as _b
_orig = _b.SlurmBackend.submit
def _submit_then_fill(self, *a, **k):
    result = _orig(self, *a, **k)
    with open({filler!r}, "wb", buffering=0) as f:   # unbuffered: closing it cannot raise ENOSPC
        try:
            while True:
                f.write(b"\\0" * 65536)
        except OSError:
            pass
    return result
_b.SlurmBackend.submit = _submit_then_fill
"""


def test_ledger_full_after_sbatch_exits_7_and_reconcile_adopts_the_job(tmp_path, cluster, small_tmpfs):
    # The disk fills up the moment sbatch has answered (the real sbatch, a real tmpfs): the
    # ledger cannot record the job, and "database or disk is full" must not lose it.
    home = small_tmpfs("home", "16m")
    filler = home / "filler"
    hook = tmp_path / "hook"
    hook.mkdir()
    repo = str(Path(__file__).resolve().parent.parent)
    (hook / "sitecustomize.py").write_text(HOOK.format(repo=repo, filler=str(filler)))
    sweep = write_sweep(tmp_path, "fullledger", f"x = {list(range(200))}", command="true {x}")
    ledger_path = home / "ledger.db"
    proc = subprocess.run(["python3", "-m", "slurmexp", "--ledger", str(ledger_path), "launch",
                           str(sweep), "--site", str(SITE)], capture_output=True, text=True,
                          timeout=300, env={**__import__("os").environ, "PYTHONPATH": f"{hook}:{repo}"})
    print(f"\nlaunch: exit {proc.returncode}: {proc.stderr.strip()}")
    assert proc.returncode == 7, proc.stderr
    assert "Traceback" not in proc.stderr
    job = re.search(r"sbatch accepted job (\d+)", proc.stderr)
    assert job and "slurmexp reconcile" in proc.stderr, proc.stderr
    filler.unlink()
    ledger = Ledger(ledger_path)
    (exp,) = ledger.experiments()
    (sub,) = ledger.submissions(exp["exp_id"])
    assert sub["state"] == "INTENT"
    from slurmexp.reconcile.one_pass import reconcile_pass
    reconcile_pass(ledger, SlurmBackend(cluster=CURRENT.name), grace_s=600)
    (sub,) = ledger.submissions(exp["exp_id"])
    assert sub["state"] == "ADOPTED" and sub["job_id"] == job.group(1)
    ledger.close()


def test_a_task_that_cannot_write_its_files_is_an_infrastructure_failure_and_retried(
        tmp_path, cluster, small_tmpfs):
    # Issue 9 item 5: the run folder's disk fills up while the task runs (its own setup line
    # fills the 1 MiB tmpfs on the first attempt). The task script cannot write its files:
    # that is the file system's failure (exit 98, infrastructure, retried), not a user failure.
    out = small_tmpfs("runs", "1m")
    filler = out / "filler"
    sweep = write_sweep(tmp_path, "fulltask", "x = [1]", command="true {x}")
    fill = (f'if [ "$SLURMEXP_ATTEMPT" = 1 ]; then head -c 2000000 /dev/zero > {filler} '
            f'2>/dev/null || true; fi')
    sweep.write_text(sweep.read_text().replace("[params]", f"output_dir = {json.dumps(str(out))}\n[params]")
                     + f"[env]\nsetup = [{json.dumps(fill)}]\n[retry]\nmax_attempts = 2\nbackoff_s = 20\n")
    result = cli(tmp_path, "launch", str(sweep), "--site", str(SITE))
    assert result.exit_code == 0, result.output
    exp_id = result.stdout.strip().splitlines()[-1]
    ledger = Ledger(tmp_path / "ledger.db")
    backend = SlurmBackend(cluster=CURRENT.name)

    from slurmexp.reconcile.one_pass import reconcile_pass
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        reconcile_pass(ledger, backend, grace_s=600)
        first = ledger.attempts(exp_id)[0]
        if first["state"] not in ("SUBMITTED", "PENDING", "RUNNING"):
            break
        time.sleep(1)
    print(f"\nfirst attempt: {first['state']} exit {first['exit_code']} "
          f"{first['failure_class']}: {first['reason']}")
    assert first["state"] == "FAILED" and first["exit_code"] == 98, first
    assert first["failure_class"] == "infrastructure", first
    assert "could not write its files" in first["reason"] and "disk full" in first["reason"]
    (run,) = ledger.runs(exp_id)
    assert run["state"] == "PLANNED"                     # a retry is due, not a user failure
    filler.unlink()                                      # space again: the retry completes
    ledger = wait_done(tmp_path, exp_id)
    assert ledger.counts_by_state(exp_id) == {"COMPLETED": 1}
    assert [a["state"] for a in ledger.attempts(exp_id)] == ["FAILED", "COMPLETED"]
    ledger.close()
