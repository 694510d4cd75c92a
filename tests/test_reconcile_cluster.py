"""reconcile against the REAL test cluster: node failures, preemption, orphans, daemons going
away, concurrent passes, and the failure classes, each checked in the ledger and in sacct.

Experiments are built with the real render pipeline (package template, manifest, run folders)
and submitted by a small helper that does what launch does: intent -> sbatch -> record.
Retries use backoff_s=0 and short grace periods so the module stays within a few minutes.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from clusterlib import CURRENT

from slurmexp.backends.slurm.backend import SlurmBackend
from slurmexp.launch.render import ScriptContext, render_script, write_manifest, write_run_files, write_script
from slurmexp.ledger.store import TERMINAL_STATES, Ledger
from slurmexp.reconcile import cancel
from slurmexp.reconcile import context as pc
from slurmexp.reconcile import health as health_mod
from slurmexp.reconcile import one_pass as rc
from slurmexp.sweep.plan import ArrayChunk, Resources, Run
from slurmexp.timeutil import parse_ts

pytestmark = pytest.mark.cluster

CLUSTER = CURRENT.name
REPO = Path(__file__).resolve().parent.parent
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


def make_exp(ledger: Ledger, base: Path, name: str, commands: list[str], *, time_min: int = 5,
             mem_mb: int = 100, qos: str | None = None, retry: dict | None = None,
             limits: dict | None = None) -> Exp:
    exp_id = f"{name}-{uuid.uuid4().hex[:8]}"
    exp_dir = base / exp_id
    runs = [Run(run_id=f"r{i:04d}", index=i, params={"i": i}) for i in range(len(commands))]
    res = Resources(partition="cpu", time_min=time_min, cpus=1, mem_mb=mem_mb, qos=qos)
    chunk = ArrayChunk(chunk=0, group=0, resources=res, runs=runs, offset=0)
    write_run_files(exp_dir, list(zip(runs, commands)))
    manifest = write_manifest(exp_dir, chunk)
    ctx = ScriptContext(experiment_id=exp_id, chunk=chunk, exp_dir=exp_dir, workdir=exp_dir,
                        manifest_path=manifest, runs_dir=exp_dir / "runs",
                        job_name=f"sx.{exp_id}.000", comment=f"slurmexp:{exp_id}",
                        cluster=CLUSTER)
    script = write_script(exp_dir, 0, render_script(ctx))
    ledger.create_experiment(
        exp_id, name, hashlib.sha256(exp_id.encode()).hexdigest(), CLUSTER, "slurm", exp_dir,
        None, None, None, None, None, {},
        [dict(run_id=r.run_id, idx=r.index, params=r.params, run_dir=str(exp_dir / "runs" / r.run_id),
              chunk=0, task_index=i) for i, r in enumerate(runs)])
    ledger.set_experiment_settings(exp_id, {
        "retry": {"max_attempts": 3, "escalate": False, "escalate_factor": 2.0, "backoff_s": 0,
                  **(retry or {})},
        "limits": {"max_time_min": 1440, "max_mem_mb": 3900, **(limits or {})},
        "resources": {"time_min": time_min, "mem_mb": mem_mb, "partition": "cpu", "qos": qos}})
    ledger.set_experiment_state(exp_id, "SUBMITTING")
    return Exp(exp_id, script, exp_dir, len(runs), chunk.array_spec)


def submit(ledger: Ledger, backend: SlurmBackend, exp: Exp, *, extra_args=(),
           record: bool = True) -> str:
    """What launch does for one chunk; record=False is a launch killed right after sbatch."""
    sha = hashlib.sha256(exp.script.read_bytes()).hexdigest()
    sub = ledger.record_intent(exp.exp_id, 0, exp.array_spec, exp.n, exp.script, sha, CLUSTER)
    result = backend.submit(exp.script, extra_args=list(extra_args))
    if record:
        ledger.record_submitted(sub, result.job_id)
        for job, t in backend.submit_times([result.job_id]).items():
            ledger.set_submit_times(CLUSTER, job, t)
        ledger.set_experiment_state(exp.exp_id, "SUBMITTED")
    return result.job_id


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


def sacct_field(cluster, job_key: str, fields: str, since: str = "now-1hours") -> list[dict]:
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
def ledger(tmp_path):
    led = Ledger(tmp_path / "home" / "ledger.db")
    yield led
    led.close()


@pytest.fixture
def backend(cluster):
    return SlurmBackend(cluster=CLUSTER)


@pytest.fixture(autouse=True)
def _cancel_leftovers(ledger):
    yield
    # A failing test must not leave its sleepers holding nodes for the next one.
    ids = [a["job_id"] for a in ledger.attempts(active_only=True) if a["job_id"]]
    if ids:
        subprocess.run(["scancel", *sorted(set(ids))], check=False, capture_output=True)


# --- failures and retries -------------------------------------------------------------------

def test_node_failure_is_retried_and_completes(ledger, backend, cluster, tmp_path):
    # backoff 5 s: sacct shows the two NODE_FAIL rows a moment apart, but both ended at the
    # same time, so both retries fall due together and go back in one sbatch.
    exp = make_exp(ledger, tmp_path, "nodefail", [FIRST_LONG.format(secs=120)] * 2,
                   retry={"backoff_s": 5})
    job = submit(ledger, backend, exp, extra_args=["--nodelist=c1"])
    wait_running(backend, job, 2)
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
    exp = make_exp(ledger, tmp_path, "preempt", [FIRST_LONG.format(secs=120)], qos="low")
    job = submit(ledger, backend, exp, extra_args=["--nodelist=c2", "--exclusive"])
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
    exp = make_exp(ledger, tmp_path, "requeue", [FIRST_LONG.format(secs=120)], qos="low")
    job = submit(ledger, backend, exp, extra_args=["--requeue", "--nodelist=c2", "--exclusive"])
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
    exp = make_exp(ledger, tmp_path, "fails", ["echo 'ValueError: bad lr' >&2; exit 3", "true"])
    submit(ledger, backend, exp)
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
    plain = make_exp(ledger, tmp_path, "to-plain", ["sleep 150"], time_min=1)
    esc = make_exp(ledger, tmp_path, "to-esc", ["sleep 150"], time_min=1, retry={"escalate": True})
    capped = make_exp(ledger, tmp_path, "to-cap", ["sleep 150"], time_min=1,
                      retry={"escalate": True}, limits={"max_time_min": 1})
    started = time.monotonic()
    for e in (plain, esc, capped):
        submit(ledger, backend, e)

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
    deadline = time.monotonic() + 30
    while True:     # a complete record of the retry job ("J_0", or "J_[0]" while pending)
        rows = [r for r in cluster.sacct([retry["job_id"]], "jobid,timelimit,state",
                                         since="now-1hours")
                if r["jobid"].startswith(retry["job_id"]) and r["timelimit"]]
        if rows or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert rows and rows[-1]["timelimit"] == "00:02:00", rows
    orig = sacct_field(cluster, first["job_key"], "jobid,timelimit,state")
    assert orig and orig[-1]["timelimit"] == "00:01:00"
    # cancel: one scancel, the run and its attempt CANCELLED with the reason
    assert cancel.cancel_experiment(ledger, backend, esc.exp_id, reason="cancelled by test") == 1
    (e,) = ledger.runs(esc.exp_id)
    assert e["state"] == "CANCELLED" and e["reason"] == "cancelled by test"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = sacct_field(cluster, retry["job_key"], "jobid,state")
        if rows and rows[-1]["state"].startswith("CANCELLED"):
            break
        time.sleep(1)
    assert rows[-1]["state"].startswith("CANCELLED"), rows
    print(f"\nTIMEOUT of --time=1 jobs seen after {took:.0f}s")


def test_out_of_memory_cannot_happen_here(ledger, backend, tmp_path):
    """No cgroups on the test cluster (TaskPlugin=task/none): a job over its --mem is not killed,
    so OUT_OF_MEMORY is tested with synthetic rows in test_reconcile.py. This test documents it."""
    exp = make_exp(ledger, tmp_path, "oom",
                   [f"{sys.executable} -c \"b = bytearray(300 * 2**20); import time; time.sleep(6)\""],
                   mem_mb=50)
    submit(ledger, backend, exp)
    reconcile_until(ledger, backend, [exp.exp_id], timeout=90)
    (a,) = ledger.attempts(exp.exp_id)
    if a["state"] == "OUT_OF_MEMORY":          # a cluster with cgroup memory enforcement
        assert a["failure_class"] == "resources" and a["reason"].startswith("OUT_OF_MEMORY")
    else:
        assert a["state"] == "COMPLETED", a    # here: 300 MiB held under --mem=50M, not killed


# --- orphans and concurrency ----------------------------------------------------------------

def test_job_recorded_nowhere_is_adopted_once(ledger, backend, tmp_path):
    exp = make_exp(ledger, tmp_path, "orphan", ["sleep 2"] * 3)
    job = submit(ledger, backend, exp, record=False)       # launch "SIGKILLed" after sbatch
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
from slurmexp.backends.slurm.backend import SlurmBackend
from slurmexp.reconcile.one_pass import reconcile_pass
s = reconcile_pass(Ledger(sys.argv[1]), SlurmBackend(cluster=sys.argv[2]), grace_s=300)
print(json.dumps(s.to_dict()))
"""


def _final(ledger: Ledger, exp_id: str):
    runs = [(r["run_id"], r["state"], r["n_attempts"]) for r in ledger.runs(exp_id)]
    atts = sorted((a["run_id"], a["attempt_no"], a["job_key"], a["submit_time"], a["state"],
                   a["exit_code"]) for a in ledger.attempts(exp_id))
    return runs, atts


def test_ten_concurrent_passes_on_a_500_run_sweep(ledger, backend, tmp_path):
    exp = make_exp(ledger, tmp_path, "big", ["true"] * 500, mem_mb=50)
    submit(ledger, backend, exp)
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
    t = time.monotonic()
    s = rc.reconcile_pass(single, SlurmBackend(cluster=CLUSTER), grace_s=300)
    one_pass = time.monotonic() - t
    assert s.ok and s.moved == {"COMPLETED": 500}, s.format()
    assert _final(single, exp.exp_id) == _final(ledger, exp.exp_id)
    single.close()
    print(f"\n500 runs: {rounds} rounds of 10 concurrent passes ({passes} ran, {skipped} skipped) "
          f"in {took:.0f}s; one pass over 500 attempts: {one_pass:.2f}s (sacct {s.sacct_s:.2f}s)")


# --- daemons going away ---------------------------------------------------------------------

@pytest.mark.destructive
def test_slurmctld_restart_mid_sweep_loses_nothing(ledger, backend, cluster, tmp_path):
    exp = make_exp(ledger, tmp_path, "ctld", ["sleep 8"] * 12)
    submit(ledger, backend, exp)
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
    exp = make_exp(ledger, tmp_path, "dbd", ["sleep 3"] * 4)
    submit(ledger, backend, exp)
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
