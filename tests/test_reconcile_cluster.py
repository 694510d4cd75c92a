"""reconcile against the REAL test cluster: node failures, preemption, orphans, daemons going
away, concurrent passes, and the failure classes, each checked in the ledger and in sacct.

Experiments go in through the product's own launch path (`slurmexp.launch.launcher.launch`, or
the `slurmexp` command where a launch is killed): a sweep file per experiment, validated,
rendered, recorded (intent before sbatch) and submitted as launch does it. What a test needs
from sbatch beyond the sweep's resources (a node list, --requeue, --exclusive) comes in through
a sweep template layer, the way a user adds directives; a partition limit through a site file.
Retries use backoff_s=0 and short grace periods so the module stays within a few minutes.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from clusterlib import CURRENT

from slurmexp.backends.slurm import backend as slurm_backend
from slurmexp.backends.slurm.backend import SlurmBackend
from slurmexp.launch.launcher import launch
from slurmexp.ledger import Ledger
from slurmexp.reconcile import cancel
from slurmexp.reconcile import context as pc
from slurmexp.reconcile import health as health_mod
from slurmexp.reconcile import one_pass as rc
from slurmexp.states import TERMINAL_STATES
from slurmexp.timeutil import parse_ts
from slurmexp.units import format_time

pytestmark = pytest.mark.cluster

CLUSTER = CURRENT.name
REPO = Path(__file__).resolve().parent.parent
SITE = CURRENT.site_toml
# The first attempt of a run sleeps long (so a fault can hit it); any later attempt is quick.
FIRST_LONG = ('if [ -e "$SLURMEXP_RUN_DIR/first.done" ]; then sleep 1; '
              'else touch "$SLURMEXP_RUN_DIR/first.done"; sleep {secs}; fi')


@dataclass
class Exp:
    exp_id: str
    script: Path
    exp_dir: Path
    n: int
    array_spec: str
    job_id: str | None       # None: the launch died before recording it


def write_sweep(base: Path, name: str, commands: list[str], *, time_min: int = 5,
                mem_mb: int = 100, qos: str | None = None, retry: dict | None = None,
                partition_max_time_min: int | None = None,
                directives: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """A sweep (and the site file it launches with) whose run i runs commands[i] with bash -c.

    `directives`: extra #SBATCH lines, through the sweep's own template layer.
    `partition_max_time_min`: the cpu partition's MaxTime as the site file states it (the limit
    escalation stops at), in a copy of the repository's site.toml.
    """
    folder = base / name
    folder.mkdir(parents=True)
    site = SITE
    if partition_max_time_min is not None:
        text = SITE.read_text()
        template = (SITE.parent / "templates" / "site-minicluster.sh.j2").resolve()
        assert 'template = "templates/site-minicluster.sh.j2"' in text
        assert '[partitions.cpu]\nnodes = ["c1", "c2", "c3"]\nmax_time = "1-00:00:00"' in text
        text = text.replace('template = "templates/site-minicluster.sh.j2"',
                            f"template = {json.dumps(str(template))}")
        text = text.replace('[partitions.cpu]\nnodes = ["c1", "c2", "c3"]\nmax_time = "1-00:00:00"',
                            '[partitions.cpu]\nnodes = ["c1", "c2", "c3"]\n'
                            f'max_time = "{format_time(partition_max_time_min)}"')
        site = folder / "site.toml"
        site.write_text(text)
    lines = [f"name = {json.dumps(name)}", 'command = "bash -c {cmd}"', 'allow_unused = ["i"]']
    if directives:
        (folder / "extra.sh.j2").write_text(
            '{% extends "slurm.sh.j2" %}\n{% block directives %}\n{{ super() -}}\n'
            + "".join(f"#SBATCH {d}\n" for d in directives) + "{% endblock %}\n")
        lines.append('template = "extra.sh.j2"')
    lines += ["[[zip]]", f"i = {list(range(len(commands)))}",
              f"cmd = [{', '.join(json.dumps(c) for c in commands)}]",
              "[resources]", 'partition = "cpu"', "cpus = 1", f'mem = "{mem_mb}M"',
              f'time = "{format_time(time_min)}"']
    if qos:
        lines.append(f"qos = {json.dumps(qos)}")
    settings = {"max_attempts": 3, "escalate": False, "escalate_factor": 2.0, "backoff_s": 0,
                **(retry or {})}
    lines.append("[retry]")
    lines += [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    sweep = folder / "sweep.toml"
    sweep.write_text("\n".join(lines) + "\n")
    return sweep, site


def _exp(ledger: Ledger, exp_id: str, n: int) -> Exp:
    (sub,) = ledger.submissions(exp_id)
    return Exp(exp_id, Path(sub["script_path"]), Path(ledger.get_experiment(exp_id)["exp_dir"]),
               n, sub["array_spec"], sub["job_id"])


def launch_exp(ledger: Ledger, base: Path, name: str, commands: list[str], **kw) -> Exp:
    """Launch a sweep as `slurmexp launch` does (validated, recorded, submitted)."""
    sweep, site = write_sweep(base, name, commands, **kw)
    result = launch(sweep, site, backend="slurm", ledger=ledger)
    assert result.submitted and len(result.job_ids) == 1 and not result.pending_intents, result
    exp = _exp(ledger, result.exp_id, len(commands))
    assert exp.job_id == result.job_ids[0]
    assert ledger.get_experiment(exp.exp_id)["state"] == "SUBMITTED"
    return exp


def launch_killed_after_sbatch(ledger: Ledger, base: Path, name: str, commands: list[str]) -> tuple[Exp, str]:
    """`slurmexp launch` SIGKILLed right after sbatch created the job, before the ledger has its id.

    A wrapper `sbatch` first in PATH runs the real one, then kills its parent (the launch
    process): a real crash at the worst moment, no hook in the product. Returns the experiment
    and the job id sbatch printed.
    """
    sweep, site = write_sweep(base, name, commands)
    bindir = base / "bin"
    bindir.mkdir()
    out_file = base / "sbatch.out"
    wrapper = bindir / "sbatch"
    wrapper.write_text(f'#!/bin/bash\nout=$({shutil.which("sbatch")} "$@") || exit $?\necho "$out"\n'
                       'case " $* " in *" --test-only "*) exit 0 ;; esac\n'
                       f'echo "$out" > {out_file}\nkill -9 $PPID\n')
    wrapper.chmod(0o755)
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "slurmexp", "--ledger", str(ledger.path), "launch",
                           str(sweep), "--site", str(site)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -9, proc.stderr
    (exp,) = [e for e in ledger.experiments() if e["name"] == name]
    job = out_file.read_text().strip().split(";")[0]
    return _exp(ledger, exp["exp_id"], len(commands)), job


def reconcile_until(ledger: Ledger, backend, exp_ids: list[str], cond=None, *, timeout=180,
                    grace_s=120, every=1.0, allow_errors=False) -> list[pc.PassSummary]:
    """Reconcile passes until `cond(ledger)` (default: every run of exp_ids is terminal)."""
    cond = cond or (lambda led: all(r["state"] in TERMINAL_STATES
                                    for e in exp_ids for r in led.runs(e)))
    deadline = time.monotonic() + timeout
    out = []
    while True:
        s = rc.reconcile_pass(ledger, backend, grace_s=grace_s)
        out.append(s)
        if not allow_errors:
            assert s.ok, s.format(verbose=True)
        if cond(ledger):
            return out
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out: {[ledger.counts_by_state(e) for e in exp_ids]}\n"
                f"{s.format(verbose=True)}")
        time.sleep(every)


def sacct_field(cluster, job_key: str, fields: str, since: str | None = None) -> list[dict]:
    return [r for r in cluster.sacct([job_key.split("_")[0]], fields, duplicates=True, since=since)
            if r["jobid"] == job_key]


def wait_running(backend, job_id: str, n: int, timeout: float = 90) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = [q for q in backend.squeue_rows([job_id]) if q.state == "RUNNING"]
        if len(rows) >= n:
            return rows
        time.sleep(0.5)
    raise AssertionError(f"job {job_id}: {n} task(s) not running: {backend.squeue_rows([job_id])}")


def no_duplicates(ledger: Ledger, exp_id: str) -> None:
    keys = [(a["cluster"], a["job_key"], a["submit_time"]) for a in ledger.attempts(exp_id)]
    assert len(keys) == len(set(keys)), keys
    for r in ledger.runs(exp_id):
        nos = [a["attempt_no"] for a in ledger.attempts(exp_id, run_id=r["run_id"])]
        assert nos == list(range(1, len(nos) + 1)) and r["n_attempts"] == len(nos), (r, nos)


@pytest.fixture
def ledger(cluster_ledger):
    return cluster_ledger


@pytest.fixture
def backend(cluster):
    return SlurmBackend(cluster=CLUSTER)


# --- failures and retries -------------------------------------------------------------------

def test_node_failure_is_retried_and_completes(ledger, backend, cluster, tmp_path):
    # backoff 5 s: sacct shows the two NODE_FAIL rows a moment apart, but both ended at the
    # same time, so both retries fall due together and go back in one sbatch.
    exp = launch_exp(ledger, tmp_path, "nodefail", [FIRST_LONG.format(secs=120)] * 2,
                     retry={"backoff_s": 5}, directives=("--nodelist=c1",))
    job = exp.job_id
    wait_running(backend, job, 2)
    # RUNNING in Slurm is not yet running the command (under load the task script takes a
    # while): fail the node only once both commands have started their long first attempt.
    deadline = time.monotonic() + 60
    while not all((Path(r["run_dir"]) / "first.done").exists() for r in ledger.runs(exp.exp_id)):
        assert time.monotonic() < deadline, "the commands did not start"
        time.sleep(0.5)
    started = time.monotonic()
    try:
        cluster.fail_node("c1")
        reconcile_until(ledger, backend, [exp.exp_id], lambda led: len(led.attempts(exp.exp_id)) == 4,
                        timeout=90)
    finally:
        cluster.resume_node("c1")
    summaries = reconcile_until(ledger, backend, [exp.exp_id], timeout=120)
    elapsed = time.monotonic() - started
    for r in ledger.runs(exp.exp_id):
        assert r["state"] == "COMPLETED" and r["n_attempts"] == 2, r
        first, second = ledger.attempts(exp.exp_id, run_id=r["run_id"])
        assert (first["state"], first["node"], first["failure_class"]) == (
            "NODE_FAIL", "c1", "infrastructure")
        assert first["reason"] == "NODE_FAIL on c1" and first["job_id"] == job
        assert second["state"] == "COMPLETED" and second["job_id"] != job
        assert second["task_index"] == first["task_index"] and second["submit_time"]
        start = parse_ts(second["submit_time"])
        assert (start - parse_ts(first["end_time"])).total_seconds() >= 5     # the backoff
    # both failed tasks went back in ONE sbatch, with only their indices
    retry_subs = ledger.submissions(exp.exp_id)[1:]
    assert len(retry_subs) == 1 and retry_subs[0]["array_spec"] == "0-1"
    assert ledger.get_experiment(exp.exp_id)["state"] == "FINISHED"
    no_duplicates(ledger, exp.exp_id)
    print(f"\nnode failure -> retried -> COMPLETED in {elapsed:.1f}s, {len(summaries)} passes")


def test_preempted_without_requeue_is_resubmitted(ledger, backend, cluster, tmp_path):
    exp = launch_exp(ledger, tmp_path, "preempt", [FIRST_LONG.format(secs=120)], qos="low",
                     directives=("--nodelist=c2", "--exclusive"))
    job = exp.job_id
    wait_running(backend, job, 1)
    high = cluster.preempt("c2", seconds=2)
    try:
        reconcile_until(ledger, backend, [exp.exp_id], timeout=120)
    finally:
        subprocess.run(["scancel", high], check=False)
    (r,) = ledger.runs(exp.exp_id)
    first, second = ledger.attempts(exp.exp_id)
    assert r["state"] == "COMPLETED"
    assert (first["state"], first["failure_class"], first["node"]) == ("PREEMPTED", "infrastructure", "c2")
    assert first["reason"].startswith("PREEMPTED on c2") and first["qos"] == "low"
    assert second["state"] == "COMPLETED" and second["job_id"] != job
    assert len(ledger.submissions(exp.exp_id)) == 2
    no_duplicates(ledger, exp.exp_id)


def test_preempted_with_requeue_is_a_new_attempt_of_the_same_job(ledger, backend, cluster, tmp_path):
    # backoff_s = 0: slurmexp's own retry of the PREEMPTED attempt would be due at once, and
    # once went out before Slurm's requeue showed (26.05: job 52 beside the requeued 50_0). It
    # must wait for the controller to let the job go (DESIGN.md, "Slurm's requeue and
    # slurmexp's retry"), so there is exactly one submission whatever the timing.
    exp = launch_exp(ledger, tmp_path, "requeue", [FIRST_LONG.format(secs=120)], qos="low",
                     retry={"backoff_s": 0}, directives=("--requeue", "--nodelist=c2", "--exclusive"))
    job = exp.job_id
    wait_running(backend, job, 1)
    high = cluster.preempt("c2", seconds=2)
    try:
        reconcile_until(ledger, backend, [exp.exp_id],
                        lambda led: len(led.attempts(exp.exp_id)) == 2, timeout=60)
        # Slurm holds a requeued job back for ~2 minutes (BeginTime); let it go now.
        subprocess.run(["scontrol", "update", f"JobId={job}_0", "StartTime=now"], check=False,
                       capture_output=True)
        reconcile_until(ledger, backend, [exp.exp_id], timeout=120)
    finally:
        subprocess.run(["scancel", high], check=False)
    first, second = ledger.attempts(exp.exp_id)
    assert (first["state"], first["job_key"]) == ("PREEMPTED", f"{job}_0")
    assert (second["state"], second["job_key"], second["attempt_no"]) == ("COMPLETED", f"{job}_0", 2)
    assert second["submit_time"] > first["submit_time"] and second["sub_id"] == first["sub_id"]
    assert len(ledger.submissions(exp.exp_id)) == 1           # Slurm's requeue, not ours
    run_dir = Path(ledger.runs(exp.exp_id)[0]["run_dir"])
    assert (run_dir / "attempts" / f"{job}_0.r1" / "exit_code").read_text().strip() == "0"
    no_duplicates(ledger, exp.exp_id)


def test_failed_exit_3_is_final_with_stderr_tail(ledger, backend, tmp_path):
    exp = launch_exp(ledger, tmp_path, "fails", ["echo 'ValueError: bad lr' >&2; exit 3", "true"])
    reconcile_until(ledger, backend, [exp.exp_id], timeout=90)
    bad, good = ledger.runs(exp.exp_id)
    assert good["state"] == "COMPLETED"
    assert bad["state"] == "FAILED" and bad["n_attempts"] == 1
    (a,) = ledger.attempts(exp.exp_id, run_id=bad["run_id"])
    assert a["exit_code"] == 3 and a["failure_class"] == "user"
    assert a["reason"] == "exit code 3; stderr tail: ValueError: bad lr"
    assert len(ledger.submissions(exp.exp_id)) == 1
    assert ledger.get_experiment(exp.exp_id)["state"] == "FINISHED_WITH_FAILURES"


def test_timeout_final_escalated_and_capped(ledger, backend, cluster, tmp_path):
    """Three one-minute jobs that sleep 2 minutes: TIMEOUT (final), escalated, at the cap."""
    started = time.monotonic()
    plain = launch_exp(ledger, tmp_path, "to-plain", ["sleep 150"], time_min=1)
    esc = launch_exp(ledger, tmp_path, "to-esc", ["sleep 150"], time_min=1, retry={"escalate": True})
    # The site says the partition allows one minute: escalation has nowhere to go.
    capped = launch_exp(ledger, tmp_path, "to-cap", ["sleep 150"], time_min=1,
                        retry={"escalate": True}, partition_max_time_min=1)

    def timed_out(led):
        return all(led.attempts(e.exp_id)[0]["state"] == "TIMEOUT" for e in (plain, esc, capped))

    reconcile_until(ledger, backend, [], timed_out, timeout=200, every=3)
    reconcile_until(ledger, backend, [], lambda led: len(led.attempts(esc.exp_id)) == 2, timeout=30)
    took = time.monotonic() - started
    (p,) = ledger.runs(plain.exp_id)
    assert p["state"] == "TIMEOUT" and p["reason"].startswith("TIMEOUT after 00:01")
    assert ledger.attempts(plain.exp_id)[0]["failure_class"] == "resources"
    (c,) = ledger.runs(capped.exp_id)
    assert c["state"] == "TIMEOUT" and "already at the partition limit" in c["reason"]
    assert len(ledger.submissions(capped.exp_id)) == 1
    first, retry = ledger.attempts(esc.exp_id)
    assert first["state"] == "TIMEOUT" and retry["state"] not in TERMINAL_STATES
    # sacct from each job's own submit time: the test cluster's job ids are reused after a reset
    # (another test's), and an older job of the same id must not answer for this one.
    assert first["submit_time"] and retry["submit_time"]
    deadline = time.monotonic() + 30
    while True:     # a complete record of the retry job ("J_0", or "J_[0]" while pending)
        rows = [r for r in cluster.sacct([retry["job_id"]], "jobid,timelimit,state",
                                         since=retry["submit_time"])
                if r["jobid"].split("_")[0] == retry["job_id"] and r["timelimit"]]
        if rows or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert rows and rows[-1]["timelimit"] == "00:02:00", rows
    orig = sacct_field(cluster, first["job_key"], "jobid,timelimit,state", since=first["submit_time"])
    assert orig and orig[-1]["timelimit"] == "00:01:00"
    # cancel: one scancel, the run and its attempt CANCELLED with the reason
    assert cancel.cancel_experiment(ledger, backend, esc.exp_id, reason="cancelled by test") == 1
    (e,) = ledger.runs(esc.exp_id)
    assert e["state"] == "CANCELLED" and e["reason"] == "cancelled by test"
    # The retry may be cancelled while still pending: then sacct names it "J_[0]", not "J_0".
    job, task = retry["job_key"].split("_")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = [r for r in cluster.sacct([job], "jobid,state", duplicates=True, since=retry["submit_time"])
                if r["jobid"] in (retry["job_key"], f"{job}_[{task}]")]
        if rows and rows[-1]["state"].startswith("CANCELLED"):
            break
        time.sleep(1)
    assert rows[-1]["state"].startswith("CANCELLED"), rows
    print(f"\nTIMEOUT of --time=1 jobs seen after {took:.0f}s")


def test_memory_over_the_request_is_accounted_not_enforced_here(ledger, backend, tmp_path):
    """The test cluster has no memory enforcement (TaskPlugin=task/none, no OverMemoryKill), so
    OUT_OF_MEMORY cannot be provoked here; test_reconcile.py covers it with synthetic records.
    What this cluster does do is account: a task holding 300 MiB under --mem=50M completes, and
    reconcile records the request and the real peak from sacct, which is what `slurmexp report`
    computes memory efficiency from. Should the cluster start enforcing memory, the first
    assertion says so, and this test should become a real OUT_OF_MEMORY test."""
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                            check=True).stdout
    settings = dict(line.split("=", 1) for line in config.splitlines() if "=" in line)
    settings = {k.strip(): v.strip() for k, v in settings.items()}
    enforcing = ("cgroup" in settings.get("TaskPlugin", "")
                 or "OverMemoryKill" in settings.get("JobAcctGatherParams", ""))
    assert not enforcing, (f"the test cluster now enforces memory ({settings.get('TaskPlugin')}, "
                           f"{settings.get('JobAcctGatherParams')}): test OUT_OF_MEMORY here")
    hold = f"{sys.executable} -c \"b = bytearray(300 * 2**20); import time; time.sleep(12)\""
    exp = launch_exp(ledger, tmp_path, "overmem", [hold], mem_mb=50)
    reconcile_until(ledger, backend, [exp.exp_id], timeout=120)
    (a,) = ledger.attempts(exp.exp_id)
    assert (a["state"], a["exit_code"], a["failure_class"]) == ("COMPLETED", 0, None), a
    assert a["req_mem"] == "50M", a
    assert a["max_rss"] is not None and a["max_rss"] >= 250, a      # MiB, sampled every 5 s
    assert ledger.get_experiment(exp.exp_id)["state"] == "FINISHED"


# --- orphans and concurrency ----------------------------------------------------------------

def test_job_recorded_nowhere_is_adopted_once(ledger, backend, tmp_path):
    exp, job = launch_killed_after_sbatch(ledger, tmp_path, "orphan", ["sleep 2"] * 3)
    assert exp.job_id is None
    (sub,) = ledger.submissions(exp.exp_id)
    assert sub["state"] == "INTENT"
    first = rc.reconcile_pass(ledger, backend, grace_s=120)
    assert first.ok and first.adopted == 1 and first.retries_submitted == 0
    (sub,) = ledger.submissions(exp.exp_id)
    assert (sub["state"], sub["job_id"]) == ("ADOPTED", job) and sub["submit_time"]
    reconcile_until(ledger, backend, [exp.exp_id], timeout=90)
    assert all(r["state"] == "COMPLETED" for r in ledger.runs(exp.exp_id))
    assert len(ledger.submissions(exp.exp_id)) == 1 and len(ledger.attempts(exp.exp_id)) == 3
    # and Slurm holds exactly one job of that name
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-S", "now-1hours", "-o", "jobid",
                          f"--name=sx.{exp.exp_id}.000"], capture_output=True, text=True).stdout
    assert {line.split("_")[0] for line in out.split()} == {job}
    no_duplicates(ledger, exp.exp_id)


PASS_SCRIPT = """
import json, sys
from slurmexp.ledger import Ledger
from slurmexp.backends.slurm.backend import CALL_COUNTS, SlurmBackend
from slurmexp.reconcile.one_pass import reconcile_pass
s = reconcile_pass(Ledger(sys.argv[1]), SlurmBackend(cluster=sys.argv[2]), grace_s=300)
print(json.dumps({**s.to_dict(), "slurm_calls": CALL_COUNTS}))
"""


def assert_one_query_per_pass(summary: dict, calls: dict[str, int]) -> None:
    """One sacct and at most one squeue for a pass with attempts to look at; none without."""
    if summary["skipped"] or not summary["active"]:
        assert calls == {}, (summary, calls)
        return
    assert calls.get("sacct") == 1 and calls.get("squeue", 0) <= 1, (summary["active"], calls)
    assert set(calls) <= {"sacct", "squeue"}, calls


def _final(ledger: Ledger, exp_id: str):
    runs = [(r["run_id"], r["state"], r["n_attempts"]) for r in ledger.runs(exp_id)]
    atts = sorted((a["run_id"], a["attempt_no"], a["job_key"], a["submit_time"], a["state"],
                   a["exit_code"]) for a in ledger.attempts(exp_id))
    return runs, atts


def test_ten_concurrent_passes_on_a_500_run_sweep(ledger, backend, tmp_path):
    exp = launch_exp(ledger, tmp_path, "big", ["true"] * 500, mem_mb=50)
    copy = tmp_path / "copy" / "ledger.db"
    copy.parent.mkdir()
    with sqlite3.connect(copy) as dst:
        ledger.db.conn.backup(dst)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    started = time.monotonic()
    rounds, skipped, passes = 0, 0, 0
    while True:
        rounds += 1
        procs = [subprocess.Popen([sys.executable, "-c", PASS_SCRIPT, str(ledger.path), CLUSTER],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for _ in range(10)]
        for p in procs:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, err
            s = json.loads(out.strip().splitlines()[-1])
            assert s["error"] is None, s
            assert_one_query_per_pass(s, s["slurm_calls"])
            skipped += s["skipped"]
            passes += not s["skipped"]
        no_duplicates(ledger, exp.exp_id)
        if all(r["state"] in TERMINAL_STATES for r in ledger.runs(exp.exp_id)):
            break
        assert time.monotonic() - started < 300, ledger.counts_by_state(exp.exp_id)
        time.sleep(2)
    took = time.monotonic() - started
    assert ledger.counts_by_state(exp.exp_id) == {"COMPLETED": 500}
    assert len(ledger.attempts(exp.exp_id)) == 500 and len(ledger.submissions(exp.exp_id)) == 1
    assert skipped > 0        # they did overlap, and the lock made all but one stand aside
    # One pass over a copy taken before any of them gives the same final ledger.
    single = Ledger(copy)
    slurm_backend.reset_call_log()
    t = time.monotonic()
    s = rc.reconcile_pass(single, SlurmBackend(cluster=CLUSTER), grace_s=300)
    one_pass = time.monotonic() - t
    assert s.ok and s.moved == {"COMPLETED": 500}, s.format()
    # 500 active attempts, and Slurm was asked once by sacct and at most once by squeue.
    assert s.active == 500
    assert_one_query_per_pass(s.to_dict(), dict(slurm_backend.CALL_COUNTS))
    assert [c.command for c in slurm_backend.CALLS].count("sacct") == 1
    assert all(c.returncode == 0 for c in slurm_backend.CALLS), slurm_backend.CALLS
    assert _final(single, exp.exp_id) == _final(ledger, exp.exp_id)
    single.close()
    print(f"\n500 runs: {rounds} rounds of 10 concurrent passes ({passes} ran, {skipped} skipped) "
          f"in {took:.0f}s; one pass over 500 attempts: {one_pass:.2f}s (sacct {s.sacct_s:.2f}s)")


# --- daemons going away ---------------------------------------------------------------------

@pytest.mark.destructive
def test_slurmctld_restart_mid_sweep_loses_nothing(ledger, backend, cluster, tmp_path):
    exp = launch_exp(ledger, tmp_path, "ctld", ["sleep 8"] * 12)
    reconcile_until(ledger, backend, [exp.exp_id],
                    lambda led: "RUNNING" in led.counts_by_state(exp.exp_id), timeout=60)
    # Passes keep running (as cron would) while the controller goes down and comes back.
    during: list[pc.PassSummary] = []
    stop = threading.Event()

    def passes() -> None:
        led = Ledger(ledger.path)            # one connection per thread
        while not stop.is_set():
            during.append(rc.reconcile_pass(led, backend, grace_s=120))
            time.sleep(0.3)
        led.close()

    thread = threading.Thread(target=passes)
    thread.start()
    t = time.monotonic()
    try:
        cluster.restart_ctld()
    finally:
        restart_s = time.monotonic() - t
        time.sleep(1)
        stop.set()
        thread.join(60)
    summaries = during + reconcile_until(ledger, backend, [exp.exp_id], timeout=180,
                                         allow_errors=True)
    assert all(s.ok or s.skipped or s.exit_code == 3 for s in summaries), [s.error for s in summaries]
    assert not any(s.lost for s in summaries)
    print(f"\nslurmctld restart took {restart_s:.1f}s; {len(during)} passes ran meanwhile "
          f"({sum(s.exit_code == 3 for s in during)} said unavailable); "
          f"{len(summaries)} passes in all until the 12 runs COMPLETED")
    assert ledger.counts_by_state(exp.exp_id) == {"COMPLETED": 12}
    assert len(ledger.attempts(exp.exp_id)) == 12 and len(ledger.submissions(exp.exp_id)) == 1
    no_duplicates(ledger, exp.exp_id)


@pytest.mark.destructive
def test_slurmdbd_down_changes_nothing_then_catches_up(ledger, backend, cluster, tmp_path):
    exp = launch_exp(ledger, tmp_path, "dbd", ["sleep 3"] * 4)
    reconcile_until(ledger, backend, [exp.exp_id],
                    lambda led: "RUNNING" in led.counts_by_state(exp.exp_id), timeout=60)
    assert health_mod.health(ledger, 10)[0]
    try:
        cluster.stop_dbd()
        time.sleep(6)                    # the jobs end while accounting is away
        before = {t: list(ledger.db.query(f"SELECT * FROM {t}"))
                  for t in ("runs", "attempts", "submissions", "events")}
        s = rc.reconcile_pass(ledger, backend, grace_s=1)     # even a tiny grace: no LOST
        assert not s.ok and s.exit_code == 3, s.format()
        assert "not a job failure" in s.error or "daemon" in s.error, s.error
        after = {t: list(ledger.db.query(f"SELECT * FROM {t}"))
                 for t in ("runs", "attempts", "submissions", "events")}
        assert after == before
        ok, message = health_mod.health(ledger, 10)
        assert not ok and "failed" in message
        print(f"\nslurmdbd down: pass exit {s.exit_code}: {s.error}\nhealth: {message}")
    finally:
        cluster.start_dbd()
    reconcile_until(ledger, backend, [exp.exp_id], timeout=120)
    assert ledger.counts_by_state(exp.exp_id) == {"COMPLETED": 4}
    assert len(ledger.attempts(exp.exp_id)) == 4
    assert health_mod.health(ledger, 10)[0]
