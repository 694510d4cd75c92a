"""reconcile without a cluster: the pure parts, and whole passes against a fake backend.

The fake has the SlurmBackend methods reconcile uses and keeps "jobs" as sacct/squeue rows the
test edits, so each test states exactly what Slurm reports and checks what the ledger did.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from slurmexp.arrays import indices
from slurmexp.backends.facts import SacctRow, SqueueRow, SubmitResult
from slurmexp.errors import SlurmCommandError, SlurmexpError, SlurmUnavailable
from slurmexp.ledger import Ledger
from slurmexp.ledger.rows import ActiveAttempt
from slurmexp.reconcile import attempt_files, cancel, cron, retry, transitions
from slurmexp.reconcile import context as pc
from slurmexp.reconcile import health as health_mod
from slurmexp.reconcile import match as rd
from slurmexp.reconcile import one_pass as rc
from slurmexp.reconcile import policy as rt
from slurmexp.reconcile.resubmit import REQUEUE_SETTLE_S
from slurmexp.settings import CheckpointSettings, ExperimentSettings, GroupSettings, RetrySettings
from slurmexp.states import TERMINAL_STATES, classify, ledger_state
from slurmexp.timeutil import utc_iso

EXP = "sweep-abcdef12"
# Long enough after a NODE_FAIL or PREEMPTED end for its retry to be due (backoff_s = 0).
SETTLED = timedelta(seconds=REQUEUE_SETTLE_S + 5)
CLUSTER = "mini"


def local(dt: datetime) -> str:
    """A timestamp as sacct prints it (local time, no offset)."""
    return dt.astimezone().strftime("%Y-%m-%dT%H:%M:%S")


def row(job_id: str, state: str = "COMPLETED", submit: datetime | str | None = None, *,
        raw: str | None = None, name: str | None = f"sx.{EXP}.000", exit_code: int | None = 0,
        node: str | None = "c1", end: datetime | None = None, elapsed: int | None = 5,
        known: bool = True, **kw) -> SacctRow:
    m = re.fullmatch(r"(\d+)_(\d+)", job_id)
    p = re.fullmatch(r"(\d+)_\[(.*)\]", job_id)
    array_job, task, pending = (m.group(1), int(m.group(2)), None) if m else (
        (p.group(1), None, indices(p.group(2))) if p else (None, None, None))
    submit_s = submit if isinstance(submit, str) or submit is None else local(submit)
    fields = dict(
        job_id=job_id, job_id_raw=raw or job_id.split("_")[0], array_job_id=array_job,
        array_task=task, pending_tasks=pending, state=state.split()[0], state_raw=state,
        submit=submit_s, start=submit_s, end=local(end) if end else (
            submit_s if state.split()[0] in TERMINAL_STATES else None),
        elapsed_s=elapsed, exit_code=exit_code, signal=0, node_list=node, partition="cpu",
        qos="normal", account="research", reason=None, alloc_tres="cpu=1,mem=500M",
        req_mem="500M", max_rss_mb=12.0, total_cpu_s=1.0, alloc_cpus=1, job_name=name,
        comment=f"slurmexp:{EXP}", cluster=CLUSTER, known_state=known)
    fields.update(kw)
    return SacctRow(**fields)


def qrow(job_id: str, state: str = "PENDING", submit: datetime | str | None = None, *,
         name: str = f"sx.{EXP}.000") -> SqueueRow:
    m = re.fullmatch(r"(\d+)_(\d+)", job_id)
    submit_s = submit if isinstance(submit, str) or submit is None else local(submit)
    return SqueueRow(job_id=job_id, array_job_id=m.group(1) if m else None,
                     array_task=int(m.group(2)) if m else None, pending_tasks=None, state=state,
                     reason=None, submit=submit_s, node_list=None, name=name,
                     comment=f"slurmexp:{EXP}")


class FakeBackend:
    """The Scheduler methods reconcile uses (backends.base), over rows the test controls."""

    cluster = None

    def __init__(self):
        self.rows: list[SacctRow] = []
        self.queued: list[SqueueRow] = []
        self.submitted: list[dict] = []
        self.cancelled: list[list[str]] = []
        self.calls: dict[str, int] = {}
        self.unavailable: set[str] = set()
        self.refuse: str | None = None
        self.die_before_sbatch = False
        self.next_id = 500

    def _call(self, what: str) -> None:
        self.calls[what] = self.calls.get(what, 0) + 1
        if what in self.unavailable:
            raise SlurmUnavailable(f"{what} could not reach a Slurm daemon: Connection refused")

    def accounting(self, job_ids, *, since, user=None, names=None, array_ids=(), timeout=60):
        self._call("sacct")
        assert since and "T" in since
        if names is not None:
            return [r for r in self.rows if r.job_name in names]
        ids = set(map(str, job_ids))
        return [r for r in self.rows if (r.array_job_id or r.job_id) in ids]

    def queue(self, job_ids=None, *, name_prefix=None, timeout=60):
        self._call("squeue")
        return [q for q in self.queued if name_prefix is None or q.name.startswith(name_prefix)]

    def submit(self, script, *, extra_args=(), cwd=None, timeout=60):
        self._call("sbatch")
        if self.die_before_sbatch:
            raise KeyboardInterrupt("killed before sbatch")
        if self.refuse:
            raise SlurmCommandError(f"sbatch failed (exit 1): {self.refuse}")
        text = Path(script).read_text()
        name = re.search(r"--job-name=(\S+)", text).group(1)
        spec = next(a.split("=", 1)[1] for a in extra_args if a.startswith("--array="))
        job = str(self.next_id)
        self.next_id += 1
        now = datetime.now()
        for t in indices(spec):
            self.queued.append(qrow(f"{job}_{t}", "PENDING", now, name=name))
        self.submitted.append({"job": job, "script": str(script), "args": list(extra_args),
                               "submit": local(now)})
        return SubmitResult(job, None)

    def submit_times(self, job_ids, **kw):
        self._call("squeue")
        return {s["job"]: s["submit"] for s in self.submitted if s["job"] in job_ids}

    def cancel(self, job_ids, timeout=60):
        self._call("scancel")
        self.cancelled.append(list(job_ids))
        # As scancel does: the controller no longer lists what it cancelled.
        ids = set(map(str, job_ids))
        self.queued = [q for q in self.queued if q.job_id not in ids and q.array_job_id not in ids
                       and f"{q.array_job_id}_{q.array_task}" not in ids]

    # helpers for tests: a submitted job's tasks move on
    def finish(self, job: str, state: str = "COMPLETED", tasks=None, **kw) -> None:
        sub = next(s for s in self.submitted if s["job"] == job)
        keep = []
        for q in self.queued:
            if q.array_job_id == job and (tasks is None or q.array_task in tasks):
                self.rows.append(row(q.job_id, state, sub["submit"], name=q.name, **kw))
            else:
                keep.append(q)
        self.queued = keep


@pytest.fixture
def ledger(tmp_path):
    led = Ledger(tmp_path / "home" / "ledger.db")
    yield led
    led.close()


SCRIPT = """#!/bin/bash
#SBATCH --job-name=sx.{exp}.{chunk:03d}
#SBATCH --comment=slurmexp:{exp}
#SBATCH --array=0-{last}%2
#SBATCH --partition=cpu
#SBATCH --time=0-00:10:00
#SBATCH --mem=500M
true
"""


def make_exp(ledger, tmp_path, n=4, chunks=1, settings=None, exp_id=EXP, backend="slurm"):
    exp_dir = tmp_path / exp_id
    per = n // chunks
    runs = [dict(run_id=f"r{i:03d}", idx=i, params={"i": i}, run_dir=str(exp_dir / "runs" / f"r{i:03d}"),
                 chunk=i // per, task_index=i % per) for i in range(n)]
    ledger.create_experiment(exp_id, "sweep", "fp-" + exp_id, CLUSTER, backend, exp_dir, None,
                             None, None, None, None, {}, runs)
    ledger.set_experiment_settings(exp_id, settings or ExperimentSettings(
        RetrySettings(max_attempts=3, escalate=False, escalate_factor=2.0, backoff_s=0),
        (GroupSettings(chunks=tuple(range(chunks)), partition="cpu", time_min=10, mem_mb=500,
                       throttle=2, max_time_min=1440, max_mem_mb=3900),)))
    scripts = []
    for c in range(chunks):
        path = exp_dir / "scripts" / f"chunk-{c:03d}.sbatch"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(SCRIPT.format(exp=exp_id, chunk=c, last=per - 1))
        scripts.append(path)
    return scripts


def submit(ledger, scripts, job="100", chunk=0, submit_time: datetime | None = None,
           spec=None, record=True, exp_id=EXP):
    n = len([r for r in ledger.runs(exp_id) if r["chunk"] == chunk])
    spec = spec or f"0-{n - 1}%2"
    sub = ledger.record_intent(exp_id, chunk, spec, n, scripts[chunk], "sha", CLUSTER)
    if record:
        ledger.record_submitted(sub, job, local(submit_time) if submit_time else None)
    return sub


def snapshot(ledger):
    """Everything but heartbeats, to prove a pass changed nothing."""
    return {t: [dict(r) for r in ledger.db.query(f"SELECT * FROM {t} ORDER BY 1")]
            for t in ("experiments", "runs", "submissions", "attempts", "events")}


def states(ledger, exp_id=EXP):
    return {r["run_id"]: r["state"] for r in ledger.runs(exp_id)}


@pytest.fixture
def t0():
    return datetime.now(timezone.utc).replace(microsecond=0)


# --- pure parts ---------------------------------------------------------------------------

@pytest.mark.parametrize("state, cls", [
    ("NODE_FAIL", "infrastructure"), ("BOOT_FAIL", "infrastructure"),
    ("PREEMPTED", "infrastructure"), ("LOST", "infrastructure"),
    ("OUT_OF_MEMORY", "resources"), ("TIMEOUT", "resources"),
    ("FAILED", "user"), ("CANCELLED", "user"), ("CANCELLED by 0", "user"), ("DEADLINE", "user"),
    ("COMPLETED", None), ("RUNNING", None), ("PENDING", None), ("REQUEUED", None),
    ("SPECIAL_EXIT", "unknown"), ("NEWSTATE", "unknown"),
])
def test_classify(state, cls):
    assert classify(state, 0) == cls
    assert classify(state, 3) == cls


def test_unknown_state_is_never_success():
    assert classify("WEIRD", 0) == "unknown"
    assert ledger_state("WEIRD") == "WEIRD"
    assert ledger_state("COMPLETING") == "RUNNING"


def test_reason_texts():
    assert rd.failure_reason(row("1", "NODE_FAIL", "2026-01-01T00:00:00", node="c2")) == "NODE_FAIL on c2"
    assert rd.failure_reason(row("1", "CANCELLED by 0", "2026-01-01T00:00:00")) == "CANCELLED by 0"
    assert rd.failure_reason(row("1", "TIMEOUT", "2026-01-01T00:00:00", elapsed=60)) == "TIMEOUT after 00:01:00"
    assert rd.failure_reason(row("1", "FAILED", "2026-01-01T00:00:00", exit_code=3), "boom") == \
        "exit code 3; stderr tail: boom"
    assert rd.failure_reason(row("1", "WEIRD", "2026-01-01T00:00:00", known=False)) == \
        "unknown Slurm state WEIRD"


def test_stderr_tail(tmp_path):
    f = tmp_path / "stderr"
    f.write_text("\n".join(f"line {i}" for i in range(20)) + "\n\n")
    assert attempt_files.stderr_tail([tmp_path / "missing", f], lines=2) == "line 18 | line 19"
    assert attempt_files.stderr_tail([tmp_path / "missing"]) == ""


def attempt(aid, key, submit=None, created=None, **kw):
    """An attempt as a reconcile pass reads it (its chunk 0 gives it the job name sx.EXP.000)."""
    job, _, task = key.partition("_")
    a = ActiveAttempt(attempt_id=aid, exp_id=EXP, run_id=f"r{aid:03d}", attempt_no=1, state="SUBMITTED",
                      cluster=CLUSTER, job_id=job, task_index=int(task) if task else None,
                      job_key=key, submit_time=submit, created=created, sub_chunk=0, **kw)
    assert a.job_name == f"sx.{EXP}.000"
    return a


def test_match_takes_only_the_row_with_the_attempts_submit_time():
    old = "2026-01-01T09:00:00"     # job 100 before a controller reset: another job
    ours = "2026-01-01T10:00:00"
    m = rd.match_rows([attempt(1, "100_0", ours), attempt(2, "100_1", ours)],
                      [row("100_0", "COMPLETED", old), row("100_0", "RUNNING", ours),
                       row("100_1", "COMPLETED", old)])
    assert m.rows[1].state == "RUNNING"
    assert [a["attempt_id"] for a in m.unmatched] == [2]     # never the other job's COMPLETED
    assert not m.requeues


def test_match_null_submit_takes_first_row_after_the_intent(t0):
    created = utc_iso(t0)
    rows = [row("100_0", "COMPLETED", t0 - timedelta(hours=2)),      # reused id, older job
            row("100_0", "RUNNING", t0 + timedelta(seconds=2))]
    m = rd.match_rows([attempt(1, "100_0", None, created)], rows)
    assert m.rows[1].state == "RUNNING"
    assert m.submit_times[1] == local(t0 + timedelta(seconds=2))


def test_match_requeue_is_a_later_record_of_the_same_job():
    s1, s2 = "2026-01-01T10:00:00", "2026-01-01T10:05:00"
    rows = [row("100_0", "PREEMPTED", s1, raw="101"), row("100_0", "PENDING", s2, raw="101"),
            row("100_1", "PREEMPTED", s1, raw="102"),
            row("100_1", "PENDING", s2, raw="102", name="someone-else")]
    m = rd.match_rows([attempt(1, "100_0", s1), attempt(2, "100_1", s1)], rows)
    assert m.rows[1].state == "PREEMPTED"
    assert [r.submit for r in m.requeues[1]] == [s2]
    assert 2 not in m.requeues          # another name: not our job


def test_pending_array_rows_expand_to_tasks():
    s = "2026-01-01T10:00:00"
    atts = [attempt(i + 1, f"100_{i}", s) for i in range(5)]
    m = rd.match_rows(atts, [row("100_0", "RUNNING", s), row("100_[1-4%2]", "PENDING", s)])
    assert {a: r.state for a, r in m.rows.items()} == {1: "RUNNING", 2: "PENDING", 3: "PENDING",
                                                        4: "PENDING", 5: "PENDING"}
    # Just after sbatch, sacct may show the array as one row under its bare id.
    bare = row("100", "PENDING", s)
    bare.array_job_id = "100"
    m = rd.match_rows(atts, [bare])
    assert len(m.rows) == 5 and not m.unmatched


def test_squeue_fills_in_while_sacct_lags():
    s = "2026-01-01T10:00:00"
    m = rd.match_rows([attempt(1, "100_0", s)], [], [rd.queue_record(qrow("100_0", "RUNNING", s))])
    assert m.rows[1].state == "RUNNING"


def test_retry_policy_and_escalation():
    p = rt.RetryPolicy(max_attempts=3, escalate=True, escalate_factor=2.0, backoff_s=60,
                       max_time_min=30, max_mem_mb=3900, time_min=10, mem_mb=500)
    now = datetime.now(timezone.utc)
    d = rt.decide_retry(p, "NODE_FAIL", "infrastructure", 2, ["NODE_FAIL", "NODE_FAIL"], now, now)
    assert d.retry and d.due == now + timedelta(seconds=120)          # 60 * 2**(2-1)
    assert not rt.decide_retry(p, "NODE_FAIL", "infrastructure", 3, [], now, now).retry
    d = rt.decide_retry(p, "TIMEOUT", "resources", 1, ["TIMEOUT"], now, now)
    assert d.retry and "time 00:20:00" in d.note
    assert rt.escalation_for(p, 1, 0).args() == ["--time=00:20:00"]
    assert rt.escalation_for(p, 2, 0).args() == ["--time=00:30:00"]        # capped at 30
    d = rt.decide_retry(p, "TIMEOUT", "resources", 2, ["TIMEOUT", "TIMEOUT"], now, now)
    assert d.retry                                                     # 20 -> 30 (the cap)
    p.max_attempts = 5
    d = rt.decide_retry(p, "TIMEOUT", "resources", 3, ["TIMEOUT"] * 3, now, now)
    assert not d.retry and "already at the partition limit" in d.note
    assert rt.escalation_for(p, 0, 1).args() == ["--mem=1000M"]
    p.escalate = False
    assert not rt.decide_retry(p, "TIMEOUT", "resources", 1, ["TIMEOUT"], now, now).retry
    assert not rt.decide_retry(p, "FAILED", "user", 1, ["FAILED"], now, now).retry


def test_settings_per_resource_group_and_version_1():
    """Each resource group keeps its own resources and caps; retries never parse scripts."""
    s = ExperimentSettings(RetrySettings(max_attempts=4, escalate=True, backoff_s=5), (
        GroupSettings(group=0, chunks=(0, 1), partition="cpu", time_min=10, mem_mb=500,
                      throttle=2, max_time_min=1440, max_mem_mb=3900),
        GroupSettings(group=1, chunks=(2,), partition="gpu", time_min=60, mem_mb=8000, gpus=1,
                      gpu_type="a100", max_time_min=120, max_mem_mb=16000)))
    back = ExperimentSettings.from_json(s.to_json())
    assert back == s
    cpu, gpu = rt.RetryPolicy.for_chunk(back, 1), rt.RetryPolicy.for_chunk(back, 2)
    assert (cpu.time_min, cpu.mem_mb, cpu.max_time_min, cpu.max_attempts) == (10, 500, 1440, 4)
    assert (gpu.time_min, gpu.mem_mb, gpu.max_time_min, gpu.max_mem_mb) == (60, 8000, 120, 16000)
    assert rt.escalation_for(gpu, 2, 0).args() == ["--time=02:00:00"]       # 60 -> 240, capped at 120
    assert back.group_of(7).group == -1 and rt.RetryPolicy.for_chunk(back, 7).time_min is None
    # Ledgers written before version 2: chunk 0's resources and limits stand for every chunk.
    old = ExperimentSettings.from_dict({
        "retry": {"max_attempts": "2", "escalate": True, "escalate_factor": 3, "backoff_s": 0},
        "limits": {"max_time_min": 30, "max_mem_mb": None},
        "resources": {"time_min": 10, "mem_mb": 500, "partition": "cpu"}})
    assert old.retry == RetrySettings(2, True, 3.0, 0.0)
    assert old.group_of(5).time_min == 10 and old.group_of(None).max_time_min == 30
    assert ExperimentSettings.from_json(None) == ExperimentSettings.from_json("not json") == ExperimentSettings()


# --- passes against the fake ----------------------------------------------------------------

def test_pass_completes_runs_and_finishes_experiment(ledger, tmp_path, t0):
    scripts = make_exp(ledger, tmp_path)
    submit(ledger, scripts, "100", submit_time=t0)
    fake = FakeBackend()
    fake.rows = [row("100_0", "RUNNING", t0), row("100_[1-3%2]", "PENDING", t0)]
    s = rc.reconcile_pass(ledger, fake, now=t0 + timedelta(seconds=30), grace_s=60)
    assert s.ok and s.exit_code == 0 and fake.calls == {"sacct": 1, "squeue": 1}
    assert states(ledger) == {"r000": "RUNNING", "r001": "PENDING", "r002": "PENDING", "r003": "PENDING"}
    fake.rows = [row(f"100_{i}", "COMPLETED", t0) for i in range(4)]
    s = rc.reconcile_pass(ledger, fake, now=t0 + timedelta(seconds=60), grace_s=60)
    assert set(states(ledger).values()) == {"COMPLETED"}
    assert s.moved == {"COMPLETED": 4}
    assert ledger.get_experiment(EXP)["state"] == "FINISHED"
    a = ledger.attempts(EXP)[0]
    assert a["node"] == "c1" and a["exit_code"] == 0 and a["slurm_job_id"] == "100"
    assert json.loads(a["sacct_json"])["state"] == "COMPLETED"
    hb = ledger.last_heartbeat("reconcile")
    assert hb["ok"] == 1 and json.loads(hb["summary_json"])["moved"] == {"COMPLETED": 4}
    # Nothing active any more: a pass asks Slurm nothing.
    fake.calls.clear()
    assert rc.reconcile_pass(ledger, fake).ok and fake.calls == {}


def test_pass_output_is_one_line_per_experiment_and_state(ledger, tmp_path, t0):
    scripts = make_exp(ledger, tmp_path, n=300)
    submit(ledger, scripts, "100", submit_time=t0)
    fake = FakeBackend()
    fake.rows = [row(f"100_{i}", "FAILED" if i % 3 == 0 else "COMPLETED", t0) for i in range(300)]
    s = rc.reconcile_pass(ledger, fake, now=t0 + timedelta(seconds=60), grace_s=60)
    assert s.moved_by_experiment == {EXP: {"COMPLETED": 200, "FAILED": 100}}
    text = s.format()
    lines = text.splitlines()
    assert f"    {EXP}: 200 COMPLETED, 100 FAILED" in lines
    assert len(lines) < 10 and max(map(len, lines)) <= 80, text
    assert lines[-1].endswith(" action(s) not listed; -v lists them)")
    verbose = s.format(verbose=True).splitlines()
    assert [line[4:] for line in verbose if line.startswith("  - ")] == s.actions
    assert f"{EXP} r001 job 100_1: SUBMITTED -> COMPLETED" in s.actions


def test_null_submit_time_is_learned(ledger, tmp_path, t0):
    scripts = make_exp(ledger, tmp_path, n=1)
    submit(ledger, scripts, "100", spec="0")
    fake = FakeBackend()
    later = datetime.now(timezone.utc) + timedelta(seconds=1)
    fake.rows = [row("100_0", "COMPLETED", t0 - timedelta(days=1)),   # the id's previous owner
                 row("100_0", "RUNNING", later)]
    rc.reconcile_pass(ledger, fake)
    a = ledger.attempts(EXP)[0]
    assert a["state"] == "RUNNING" and a["submit_time"] == local(later)


def test_job_id_reuse_is_not_our_job(ledger, tmp_path, t0):
    scripts = make_exp(ledger, tmp_path, n=1)
    submit(ledger, scripts, "100", submit_time=t0, spec="0")
    fake = FakeBackend()
    fake.rows = [row("100_0", "COMPLETED", t0 + timedelta(minutes=5), name="sx-other")]
    rc.reconcile_pass(ledger, fake, now=t0 + timedelta(seconds=30), grace_s=60)
    assert states(ledger) == {"r000": "SUBMITTED"}
    rc.reconcile_pass(ledger, fake, now=t0 + timedelta(seconds=61), grace_s=60)
    att = ledger.attempts(EXP)
    assert att[0]["state"] == "LOST" and "neither sacct nor squeue" in att[0]["reason"]
    # LOST is an infrastructure failure: retried (backoff 0) as a new job of the same chunk.
    assert len(fake.submitted) == 1 and fake.submitted[0]["args"] == ["--array=0%2"]
    assert [a["attempt_no"] for a in att] == [1, 2]


def test_lost_waits_for_grace_and_for_task_evidence(ledger, tmp_path, t0):
    scripts = make_exp(ledger, tmp_path, n=2)
    submit(ledger, scripts, "100", submit_time=t0, spec="0-1")
    started = tmp_path / EXP / "runs" / "r001" / "attempts" / "100_1"
    started.mkdir(parents=True)
    (started / "started").write_text("x")
    fake = FakeBackend()
    s = rc.reconcile_pass(ledger, fake, now=t0 + timedelta(seconds=59), grace_s=60)
    assert s.lost == 0 and states(ledger) == {"r000": "SUBMITTED", "r001": "SUBMITTED"}
    s = rc.reconcile_pass(ledger, fake, now=t0 + timedelta(seconds=61), grace_s=60)
    assert s.lost == 1 and ledger.attempts(EXP)[0]["state"] == "LOST"
    a1 = ledger.attempts(EXP, run_id="r001")[0]
    assert a1["state"] == "SUBMITTED" and "the task started" in a1["reason"]
    rc.reconcile_pass(ledger, fake, now=t0 + timedelta(seconds=60 * transitions.EVIDENCE_FACTOR + 1), grace_s=60)
    assert ledger.attempts(EXP, run_id="r001")[0]["state"] == "LOST"


def test_requeue_by_slurm_is_a_new_attempt_not_a_new_job(ledger, tmp_path, t0):
    scripts = make_exp(ledger, tmp_path, n=2)
    submit(ledger, scripts, "100", submit_time=t0, spec="0-1")
    fake = FakeBackend()
    s2 = t0 + timedelta(seconds=40)
    fake.rows = [row("100_0", "PREEMPTED", t0, raw="101", node="c2"),
                 row("100_0", "PENDING", s2, raw="101", node=None),
                 row("100_1", "RUNNING", t0, raw="102")]
    s = rc.reconcile_pass(ledger, fake, now=t0 + timedelta(seconds=45), grace_s=60)
    assert s.requeued == 1 and fake.submitted == [] and s.retries_scheduled == 0
    att = ledger.attempts(EXP, run_id="r000")
    assert [(a["attempt_no"], a["state"], a["job_key"], a["sub_id"]) for a in att] == [
        (1, "PREEMPTED", "100_0", 1), (2, "PENDING", "100_0", 1)]
    assert att[0]["reason"].startswith("PREEMPTED on c2") and att[1]["submit_time"] == local(s2)
    assert ledger.runs(EXP)[0]["n_attempts"] == 2
    kinds = [e["kind"] for e in ledger.events(EXP, "r000")]
    assert "requeued" in kinds
    # The next pass: the same rows change nothing, then the requeued attempt completes.
    before = snapshot(ledger)
    rc.reconcile_pass(ledger, fake, now=t0 + timedelta(seconds=50), grace_s=60)
    assert snapshot(ledger)["attempts"] == before["attempts"]
    fake.rows[1] = row("100_0", "COMPLETED", s2, raw="101")
    fake.rows[2] = row("100_1", "COMPLETED", t0, raw="102")
    rc.reconcile_pass(ledger, fake, now=t0 + timedelta(seconds=90), grace_s=60)
    assert states(ledger) == {"r000": "COMPLETED", "r001": "COMPLETED"}
    assert len(ledger.attempts(EXP)) == 3 and fake.submitted == []


def test_requeue_seen_only_in_squeue_is_not_resubmitted(ledger, tmp_path, t0):
    scripts = make_exp(ledger, tmp_path, n=1)
    submit(ledger, scripts, "100", submit_time=t0, spec="0")
    fake = FakeBackend()
    fake.rows = [row("100_0", "PREEMPTED", t0)]
    fake.queued = [qrow("100_0", "PENDING", t0 + timedelta(seconds=5))]
    s = rc.reconcile_pass(ledger, fake, now=t0 + timedelta(seconds=10), grace_s=60)
    assert fake.submitted == [] and s.requeued == 1
    assert [a["state"] for a in ledger.attempts(EXP)] == ["PREEMPTED", "PENDING"]


# Slurm's own requeue vs our retry: a task must never run twice.

@pytest.mark.parametrize("failed", ["PREEMPTED", "NODE_FAIL"])
def test_requeue_that_shows_after_the_failure_is_followed_not_retried(ledger, tmp_path, t0, failed):
    # The race seen on Slurm 26.05: a pass reads the PREEMPTED record before the requeue shows
    # anywhere. The retry (backoff 0) waits REQUEUE_SETTLE_S; the attempt stays watched, and
    # when the requeue shows, the run follows it and no sbatch of ours goes out.
    scripts = make_exp(ledger, tmp_path, n=1)
    submit(ledger, scripts, "100", submit_time=t0, spec="0")
    fake = FakeBackend()
    fake.rows = [row("100_0", failed, t0)]
    s = rc.reconcile_pass(ledger, fake, now=t0 + timedelta(seconds=2), grace_s=60)
    assert s.retries_scheduled == 1 and fake.submitted == [] and states(ledger) == {"r000": "PLANNED"}
    s2 = t0 + timedelta(seconds=3)
    fake.rows.append(row("100_0", "PENDING", s2, node=None))
    s = rc.reconcile_pass(ledger, fake, now=t0 + SETTLED, grace_s=60)
    assert fake.submitted == [] and s.requeued == 1 and s.retries_submitted == 0
    att = ledger.attempts(EXP)
    assert [(a["attempt_no"], a["state"], a["job_key"]) for a in att] == [
        (1, failed, "100_0"), (2, "PENDING", "100_0")]
    assert states(ledger) == {"r000": "PENDING"}
    fake.rows[1] = row("100_0", "COMPLETED", s2)
    for k in range(3):
        rc.reconcile_pass(ledger, fake, now=t0 + SETTLED + timedelta(seconds=60 * (k + 1)), grace_s=60)
    assert states(ledger) == {"r000": "COMPLETED"} and fake.submitted == [] and len(ledger.attempts(EXP)) == 2


def test_retry_held_while_the_controller_still_lists_the_job(ledger, tmp_path, t0):
    # sacct says PREEMPTED, the controller still lists the job with its old submit time
    # (completing, before its requeue record): no retry while it does, however long ago it ended.
    scripts = make_exp(ledger, tmp_path, n=1)
    submit(ledger, scripts, "100", submit_time=t0, spec="0")
    fake = FakeBackend()
    fake.rows = [row("100_0", "PREEMPTED", t0)]
    fake.queued = [qrow("100_0", "COMPLETING", t0)]
    for k in range(3):
        s = rc.reconcile_pass(ledger, fake, now=t0 + SETTLED + timedelta(minutes=k), grace_s=60)
        assert fake.submitted == [] and states(ledger) == {"r000": "PLANNED"}
    assert any("retry held: job 100_0 is still in the queue" in a for a in s.actions), s.actions
    assert s.active == 0                            # watched, not counted as active
    # The controller lets it go without requeueing it: the next pass retries it, once.
    fake.queued = []
    s = rc.reconcile_pass(ledger, fake, now=t0 + SETTLED + timedelta(minutes=5), grace_s=60)
    assert s.retries_submitted == 1 and len(fake.submitted) == 1
    rc.reconcile_pass(ledger, fake, now=t0 + SETTLED + timedelta(minutes=6), grace_s=60)
    assert len(fake.submitted) == 1 and [a["state"] for a in ledger.attempts(EXP)] == ["PREEMPTED", "PENDING"]


def test_a_persons_retry_is_held_while_the_controller_still_lists_the_job(ledger, tmp_path, t0):
    scripts = make_exp(ledger, tmp_path, n=1, settings=ExperimentSettings(
        RetrySettings(max_attempts=1, escalate=False, escalate_factor=2.0, backoff_s=0),
        (GroupSettings(chunks=(0,), partition="cpu", time_min=10, mem_mb=500, throttle=2,
                       max_time_min=1440, max_mem_mb=3900),)))
    submit(ledger, scripts, "100", submit_time=t0, spec="0")
    fake = FakeBackend()
    fake.rows = [row("100_0", "PREEMPTED", t0)]
    rc.reconcile_pass(ledger, fake, now=t0 + SETTLED, grace_s=60)
    assert states(ledger) == {"r000": "PREEMPTED"}             # no retries left: final
    fake.queued = [qrow("100_0", "PENDING", t0 + timedelta(seconds=1))]   # but Slurm requeued it
    notes: list[str] = []
    assert retry.retry_experiment(ledger, fake, EXP, "failed", notes=notes) == []
    assert fake.submitted == [] and fake.calls["squeue"] >= 2
    assert any("retry held: job 100_0 is still in the queue" in n for n in notes), notes
    assert states(ledger) == {"r000": "PLANNED"}      # the person's retry stands, for reconcile
    fake.queued = []
    s = rc.reconcile_pass(ledger, fake, now=t0 + SETTLED + timedelta(seconds=10), grace_s=60)
    assert s.retries_submitted == 1 and len(fake.submitted) == 1


def test_preempted_retry_waits_the_settle_time_even_with_no_backoff(ledger, tmp_path, t0):
    scripts = make_exp(ledger, tmp_path, n=1)
    submit(ledger, scripts, "100", submit_time=t0, spec="0")
    fake = FakeBackend()
    fake.rows = [row("100_0", "PREEMPTED", t0)]
    rc.reconcile_pass(ledger, fake, now=t0 + timedelta(seconds=REQUEUE_SETTLE_S - 1), grace_s=60)
    assert fake.submitted == [] and states(ledger) == {"r000": "PLANNED"}
    rc.reconcile_pass(ledger, fake, now=t0 + timedelta(seconds=REQUEUE_SETTLE_S), grace_s=60)
    assert len(fake.submitted) == 1
    # A failure Slurm does not requeue (a lost job) is not held: covered by the LOST tests.


def test_unavailable_changes_nothing_and_fails_health(ledger, tmp_path, t0):
    scripts = make_exp(ledger, tmp_path)
    submit(ledger, scripts, "100", submit_time=t0)
    fake = FakeBackend()
    fake.rows = [row(f"100_{i}", "COMPLETED", t0) for i in range(4)]
    rc.reconcile_pass(ledger, fake, now=t0 + timedelta(seconds=600), grace_s=60)  # ok pass first
    fake.rows = []
    # a fresh submission, then slurmdbd goes away
    submit(ledger, scripts, "101", submit_time=t0)
    fake.unavailable = {"sacct"}
    before = snapshot(ledger)
    s = rc.reconcile_pass(ledger, fake, now=t0 + timedelta(seconds=900), grace_s=60)
    assert not s.ok and s.exit_code == 3 and "Connection refused" in s.error
    assert snapshot(ledger) == before                    # not even LOST after the grace period
    assert ledger.last_heartbeat("reconcile")["ok"] == 0
    ok, message = health_mod.health(ledger, 60)
    assert not ok and "failed" in message and "Connection refused" in message
    assert "FAILED" in s.format()
    fake.unavailable = set()
    fake.rows = [row(f"101_{i}", "COMPLETED", t0) for i in range(4)]
    assert rc.reconcile_pass(ledger, fake).ok
    assert health_mod.health(ledger, 60)[0]


def test_squeue_unavailable_applies_sacct_but_decides_nothing_else(ledger, tmp_path, t0):
    scripts = make_exp(ledger, tmp_path, n=2)
    submit(ledger, scripts, "100", submit_time=t0, spec="0-1")
    fake = FakeBackend()
    fake.rows = [row("100_0", "NODE_FAIL", t0)]
    fake.unavailable = {"squeue"}
    s = rc.reconcile_pass(ledger, fake, now=t0 + timedelta(hours=1), grace_s=60)
    assert s.exit_code == 3 and "squeue" in s.error
    assert [a["state"] for a in ledger.attempts(EXP)] == ["NODE_FAIL", "SUBMITTED"]  # no LOST
    assert fake.submitted == []                      # no sbatch while the controller is away
    fake.unavailable = set()
    fake.rows.append(row("100_1", "COMPLETED", t0))
    s = rc.reconcile_pass(ledger, fake, now=t0 + timedelta(hours=1), grace_s=60)
    assert s.ok and len(fake.submitted) == 1


def test_lock_held_means_another_pass_runs(ledger, tmp_path, t0):
    scripts = make_exp(ledger, tmp_path)
    submit(ledger, scripts, "100", submit_time=t0)
    fake = FakeBackend()
    with pc.pass_lock(ledger) as got:
        assert got
        s = rc.reconcile_pass(ledger, fake)
        assert s.skipped and s.exit_code == 0 and s.ok and fake.calls == {}
        assert "another pass" in s.format()
        with pytest.raises(SlurmexpError, match="still running"):
            cancel.cancel_experiment(ledger, fake, EXP, lock_wait_s=0.3)
    assert ledger.last_heartbeat("reconcile") is None
    assert stat.S_IMODE(os.stat(pc.lock_path(ledger)).st_mode) == 0o600
    assert rc.reconcile_pass(ledger, fake).ok


def test_orphan_is_adopted_not_resubmitted(ledger, tmp_path, t0):
    scripts = make_exp(ledger, tmp_path)
    ledger.set_experiment_state(EXP, "SUBMITTING")
    sub = submit(ledger, scripts, record=False)          # sbatch ran, the launch died
    fake = FakeBackend()
    now = datetime.now()
    fake.rows = [row("100_0", "RUNNING", now), row("100_[1-3%2]", "PENDING", now)]
    fake.rows.append(row("99", "COMPLETED", now, name=f"sx.{EXP}.000",
                         comment="slurmexp:other-exp"))     # a name clash from another tag
    s = rc.reconcile_pass(ledger, fake, grace_s=600)
    assert s.adopted == 1 and fake.submitted == []
    assert ledger.submissions(EXP)[0]["state"] == "ADOPTED"
    assert ledger.submissions(EXP)[0]["job_id"] == "100"
    assert states(ledger) == {"r000": "RUNNING", "r001": "PENDING", "r002": "PENDING", "r003": "PENDING"}
    assert ledger.get_experiment(EXP)["state"] == "SUBMITTED"
    # A late record_submitted from the launch itself is a no-op, and a second pass adopts nothing.
    assert len(ledger.record_submitted(sub, "100")) == 4
    s = rc.reconcile_pass(ledger, fake, grace_s=600)
    assert s.adopted == 0 and len(ledger.attempts(EXP)) == 4 and fake.submitted == []


def test_dead_intent_is_closed_and_resubmitted_once(ledger, tmp_path, t0):
    scripts = make_exp(ledger, tmp_path)
    ledger.set_experiment_state(EXP, "SUBMITTING")
    submit(ledger, scripts, record=False)                # died before sbatch
    fake = FakeBackend()
    s = rc.reconcile_pass(ledger, fake, grace_s=300)
    assert s.intents_failed == 0 and fake.submitted == []        # too early to tell
    later = datetime.now(timezone.utc) + timedelta(seconds=301)
    s = rc.reconcile_pass(ledger, fake, now=later, grace_s=300)
    assert s.intents_failed == 1 and len(fake.submitted) == 1
    assert fake.submitted[0]["args"] == ["--array=0-3%2"]       # the throttle is kept
    subs = ledger.submissions(EXP)
    assert [x["state"] for x in subs] == ["FAILED", "SUBMITTED"]
    assert "sbatch never created it" in subs[0]["error"]
    s = rc.reconcile_pass(ledger, fake, now=later, grace_s=300)
    assert len(fake.submitted) == 1 and len(ledger.attempts(EXP)) == 4


def test_infrastructure_failures_retry_only_affected_tasks_with_backoff(ledger, tmp_path, t0):
    settings = {"retry": {"max_attempts": 2, "escalate": False, "escalate_factor": 2.0,
                          "backoff_s": 60}, "limits": {}, "resources": {}}
    scripts = make_exp(ledger, tmp_path, n=8, chunks=2, settings=settings)
    submit(ledger, scripts, "100", chunk=0, submit_time=t0)
    submit(ledger, scripts, "200", chunk=1, submit_time=t0)
    fake = FakeBackend()
    end = t0 + timedelta(seconds=30)
    fake.rows = [row("100_0", "COMPLETED", t0), row("100_1", "NODE_FAIL", t0, node="c2", end=end),
                 row("100_2", "COMPLETED", t0), row("100_3", "BOOT_FAIL", t0, node="c3", end=end),
                 *[row(f"200_{i}", "COMPLETED", t0, name=f"sx.{EXP}.001") for i in range(3)],
                 row("200_3", "PREEMPTED", t0, name=f"sx.{EXP}.001", end=end)]
    s = rc.reconcile_pass(ledger, fake, now=end + timedelta(seconds=10))
    assert s.retries_scheduled == 3 and fake.submitted == []          # backoff 60 s
    runs = {r["run_id"]: r for r in ledger.runs(EXP)}
    assert runs["r001"]["state"] == "PLANNED" and "NODE_FAIL on c2" in runs["r001"]["reason"]
    assert "retry 2/2" in runs["r001"]["reason"] and "not before" in runs["r001"]["reason"]
    att = ledger.attempts(EXP, run_id="r001")[0]
    assert (att["state"], att["failure_class"], att["node"]) == ("NODE_FAIL", "infrastructure", "c2")
    s = rc.reconcile_pass(ledger, fake, now=end + timedelta(seconds=61))
    assert s.retries_submitted == 3
    assert sorted(x["args"][0] for x in fake.submitted) == ["--array=1,3%2", "--array=3%2"]
    assert all(x["script"].endswith(("chunk-000.sbatch", "chunk-001.sbatch")) for x in fake.submitted)
    job0 = next(x["job"] for x in fake.submitted if x["args"][0] == "--array=1,3%2")
    # the retry's attempts are the same runs (same task index), attempt 2
    retry = [a for a in ledger.attempts(EXP) if a["job_id"] == job0]
    assert sorted((a["run_id"], a["task_index"], a["attempt_no"]) for a in retry) == [
        ("r001", 1, 2), ("r003", 3, 2)]
    assert all(a["submit_time"] for a in retry)          # stamped right after sbatch
    # the retry fails again: max_attempts=2 reached, final with the reason
    fake.finish(job0, "NODE_FAIL", node="c1")
    for x in fake.submitted:
        if x["job"] != job0:
            fake.finish(x["job"])
    s = rc.reconcile_pass(ledger, fake, now=end + timedelta(hours=1))
    r1 = ledger.runs(EXP)[1]
    assert r1["state"] == "NODE_FAIL" and "no retries left (2 of 2 attempts)" in r1["reason"]
    assert len(fake.submitted) == 2
    assert states(ledger)["r007"] == "COMPLETED"
    assert ledger.get_experiment(EXP)["state"] == "FINISHED_WITH_FAILURES"


def test_user_failure_is_final_with_exit_code_and_stderr_tail(ledger, tmp_path, t0):
    scripts = make_exp(ledger, tmp_path, n=1)
    submit(ledger, scripts, "100", submit_time=t0, spec="0")
    d = tmp_path / EXP / "runs" / "r000" / "attempts" / "100_0"
    d.mkdir(parents=True)
    (d / "stderr").write_text("Traceback (most recent call last):\nValueError: boom\n")
    fake = FakeBackend()
    fake.rows = [row("100_0", "FAILED", t0, exit_code=3)]
    rc.reconcile_pass(ledger, fake, now=t0 + timedelta(seconds=10))
    a = ledger.attempts(EXP)[0]
    assert a["state"] == "FAILED" and a["failure_class"] == "user" and a["exit_code"] == 3
    assert a["reason"] == ("exit code 3; stderr tail: Traceback (most recent call last): | "
                           "ValueError: boom")
    assert ledger.runs(EXP)[0]["reason"] == a["reason"] and fake.submitted == []


def test_timeout_final_unless_escalating(ledger, tmp_path, t0):
    scripts = make_exp(ledger, tmp_path, n=1)
    submit(ledger, scripts, "100", submit_time=t0, spec="0")
    fake = FakeBackend()
    fake.rows = [row("100_0", "TIMEOUT", t0, elapsed=600)]
    rc.reconcile_pass(ledger, fake, now=t0 + timedelta(seconds=10))
    assert states(ledger) == {"r000": "TIMEOUT"} and fake.submitted == []
    assert ledger.runs(EXP)[0]["reason"] == "TIMEOUT after 00:10:00"


def test_escalation_multiplies_and_stops_at_the_limit(ledger, tmp_path, t0):
    settings = ExperimentSettings(
        RetrySettings(max_attempts=5, escalate=True, escalate_factor=2.0, backoff_s=0),
        (GroupSettings(chunks=(0,), time_min=10, mem_mb=500, throttle=2, max_time_min=30,
                       max_mem_mb=1500),))
    scripts = make_exp(ledger, tmp_path, n=2, settings=settings)
    submit(ledger, scripts, "100", submit_time=t0, spec="0-1")
    fake = FakeBackend()
    # OUT_OF_MEMORY cannot happen on the test cluster (no cgroups): a synthetic row.
    fake.rows = [row("100_0", "TIMEOUT", t0, elapsed=600), row("100_1", "OUT_OF_MEMORY", t0)]
    rc.reconcile_pass(ledger, fake, now=t0 + timedelta(seconds=10))
    args = sorted(tuple(x["args"]) for x in fake.submitted)
    assert args == [("--array=0%2", "--time=00:20:00"), ("--array=1%2", "--mem=1000M")]
    oom = ledger.attempts(EXP, run_id="r001")[0]
    assert oom["failure_class"] == "resources" and oom["reason"].startswith("OUT_OF_MEMORY")
    for x in list(fake.submitted):
        fake.finish(x["job"], "TIMEOUT" if "--time" in x["args"][1] else "OUT_OF_MEMORY",
                    elapsed=1200)
    rc.reconcile_pass(ledger, fake, now=t0 + timedelta(seconds=20))
    args = sorted(tuple(x["args"]) for x in fake.submitted[2:])
    assert args == [("--array=0%2", "--time=00:30:00"), ("--array=1%2", "--mem=1500M")]
    for x in fake.submitted[2:]:
        fake.finish(x["job"], "TIMEOUT" if "--time" in x["args"][1] else "OUT_OF_MEMORY")
    rc.reconcile_pass(ledger, fake, now=t0 + timedelta(seconds=30))
    assert len(fake.submitted) == 4
    for r in ledger.runs(EXP):
        assert r["state"] in ("TIMEOUT", "OUT_OF_MEMORY") and r["n_attempts"] == 3
        assert "already at the partition limit" in r["reason"]


def test_unknown_state_is_kept_flagged_and_watched(ledger, tmp_path, t0):
    scripts = make_exp(ledger, tmp_path, n=1)
    submit(ledger, scripts, "100", submit_time=t0, spec="0")
    fake = FakeBackend()
    fake.rows = [row("100_0", "WARPED", t0, known=False, exit_code=0)]
    s = rc.reconcile_pass(ledger, fake, now=t0 + timedelta(seconds=10))
    a = ledger.attempts(EXP)[0]
    assert a["state"] == "WARPED" and a["failure_class"] == "unknown"
    assert "unknown Slurm state WARPED" in a["reason"] and s.flagged
    assert states(ledger) == {"r000": "WARPED"} and fake.submitted == []
    assert ledger.get_experiment(EXP)["state"] != "FINISHED"
    fake.rows = [row("100_0", "COMPLETED", t0)]
    rc.reconcile_pass(ledger, fake, now=t0 + timedelta(seconds=20))
    assert states(ledger) == {"r000": "COMPLETED"}


def test_runaway_record_becomes_lost(ledger, tmp_path, t0):
    scripts = make_exp(ledger, tmp_path, n=1)
    submit(ledger, scripts, "100", submit_time=t0, spec="0")
    fake = FakeBackend()
    fake.rows = [row("100_0", "RUNNING", t0)]          # but the controller lost the job
    rc.reconcile_pass(ledger, fake, now=t0 + timedelta(seconds=10), grace_s=60)
    a = ledger.attempts(EXP)[0]
    assert a["state"] == "RUNNING" and a["reason"].startswith(
        "probably just ended: the controller no longer lists the job and sacct still says "
        "RUNNING (accounting lags; normal for a minute, LOST only if it stays so, seen since ")
    rc.reconcile_pass(ledger, fake, now=t0 + timedelta(seconds=40), grace_s=60)
    assert ledger.attempts(EXP)[0]["state"] == "RUNNING"
    rc.reconcile_pass(ledger, fake, now=t0 + timedelta(seconds=71), grace_s=60)
    att = ledger.attempts(EXP)
    assert att[0]["state"] == "LOST" and "runaway" in att[0]["reason"] and len(att) == 2


def test_runaway_clock_is_a_column_not_the_reason_text(ledger, tmp_path, t0):
    """LOST is decided by attempts.unlisted_since: another wording of the reason (a message
    reworded in a later version, a note written over it) must not restart the clock."""
    scripts = make_exp(ledger, tmp_path, n=1)
    submit(ledger, scripts, "100", submit_time=t0, spec="0")
    fake = FakeBackend()
    fake.rows = [row("100_0", "RUNNING", t0)]          # the controller lost the job
    first = t0 + timedelta(seconds=10)
    rc.reconcile_pass(ledger, fake, now=first, grace_s=60)
    a = ledger.attempts(EXP)[0]
    assert a["state"] == "RUNNING" and a["unlisted_since"] == utc_iso(first)
    ledger.update_attempt(a["attempt_id"], reason="the controller forgot this job")
    assert ledger.attempts(EXP)[0]["unlisted_since"] == utc_iso(first)
    rc.reconcile_pass(ledger, fake, now=t0 + timedelta(seconds=71), grace_s=60)
    a = ledger.attempts(EXP)[0]
    assert a["state"] == "LOST" and a["failure_class"] == "infrastructure"
    assert f"since {utc_iso(first)}" in a["reason"] and a["unlisted_since"] == utc_iso(first)


def test_runaway_clock_restarts_when_the_controller_lists_the_job_again(ledger, tmp_path, t0):
    scripts = make_exp(ledger, tmp_path, n=1)
    submit(ledger, scripts, "100", submit_time=t0, spec="0")
    fake = FakeBackend()
    fake.rows = [row("100_0", "RUNNING", t0)]
    rc.reconcile_pass(ledger, fake, now=t0 + timedelta(seconds=10), grace_s=60)
    assert ledger.attempts(EXP)[0]["unlisted_since"] == utc_iso(t0 + timedelta(seconds=10))
    fake.queued = [qrow("100_0", "RUNNING", t0)]         # listed again: the clock stops
    rc.reconcile_pass(ledger, fake, now=t0 + timedelta(seconds=40), grace_s=60)
    a = ledger.attempts(EXP)[0]
    assert a["state"] == "RUNNING" and a["unlisted_since"] is None
    fake.queued = []                                     # and gone again: a new clock
    rc.reconcile_pass(ledger, fake, now=t0 + timedelta(seconds=71), grace_s=60)
    a = ledger.attempts(EXP)[0]
    assert a["state"] == "RUNNING" and a["unlisted_since"] == utc_iso(t0 + timedelta(seconds=71))


def test_placeholder_record_waits_for_the_complete_one(ledger, tmp_path, t0):
    """slurmdbd first writes a placeholder (JobName "allocation", no partition/QOS/ReqMem)."""
    scripts = make_exp(ledger, tmp_path, n=1)
    submit(ledger, scripts, "100", spec="0")           # no submit time yet: matched by time
    fake = FakeBackend()
    later = datetime.now(timezone.utc) + timedelta(seconds=1)
    fake.rows = [row("100_0", "FAILED", later, exit_code=3, name="allocation", partition=None,
                     qos=None, req_mem="16?", incomplete=True)]
    s = rc.reconcile_pass(ledger, fake, grace_s=60)
    assert states(ledger) == {"r000": "SUBMITTED"} and "waiting for its complete" in s.actions[0]
    fake.rows = [row("100_0", "FAILED", later, exit_code=3)]
    rc.reconcile_pass(ledger, fake, grace_s=60)
    a = ledger.attempts(EXP)[0]
    assert (a["state"], a["partition"], a["req_mem"]) == ("FAILED", "cpu", "500M")
    # a placeholder that never completes is taken after the grace period (without its blanks)
    scripts = make_exp(ledger, tmp_path, n=1, exp_id="other-12345678")
    submit(ledger, scripts, "200", spec="0", submit_time=t0, exp_id="other-12345678")
    fake.rows = [row("200_0", "COMPLETED", t0, name="allocation", partition=None, qos=None,
                     req_mem="16?", incomplete=True, end=t0)]
    rc.reconcile_pass(ledger, fake, grace_s=60, now=t0 + timedelta(seconds=61))
    a = ledger.attempts("other-12345678")[0]
    assert a["state"] == "COMPLETED" and a["req_mem"] is None


def test_placeholder_does_not_move_a_running_attempt_back(ledger, tmp_path, t0):
    scripts = make_exp(ledger, tmp_path, n=1)
    submit(ledger, scripts, "100", spec="0", submit_time=t0)
    fake = FakeBackend()
    fake.queued = [qrow("100_0", "RUNNING", t0)]
    rc.reconcile_pass(ledger, fake, now=t0 + timedelta(seconds=5))
    assert states(ledger) == {"r000": "RUNNING"}
    fake.rows = [row("100_0", "PENDING", t0, name="allocation", incomplete=True, partition=None)]
    fake.queued = []
    rc.reconcile_pass(ledger, fake, now=t0 + timedelta(seconds=10))
    a = ledger.attempts(EXP)[0]
    assert a["state"] == "RUNNING" and not a["reason"]


def test_dry_run_writes_nothing(ledger, tmp_path, t0):
    scripts = make_exp(ledger, tmp_path, n=2)
    submit(ledger, scripts, "100", submit_time=t0, spec="0-1")
    fake = FakeBackend()
    fake.rows = [row("100_0", "NODE_FAIL", t0), row("100_1", "COMPLETED", t0)]
    before = snapshot(ledger)
    s = rc.reconcile_pass(ledger, fake, dry_run=True, now=t0 + timedelta(seconds=10))
    assert snapshot(ledger) == before and ledger.last_heartbeat("reconcile") is None
    assert fake.submitted == [] and s.moved == {"NODE_FAIL": 1, "COMPLETED": 1}
    assert any("would schedule" in a for a in s.actions)
    assert "dry run" in s.format()


# --- killed passes ------------------------------------------------------------------------

def test_killed_between_sbatch_and_record_then_adopted(ledger, tmp_path, t0, monkeypatch):
    scripts = make_exp(ledger, tmp_path, n=2)
    submit(ledger, scripts, "100", submit_time=t0, spec="0-1")
    fake = FakeBackend()
    fake.rows = [row("100_0", "NODE_FAIL", t0), row("100_1", "COMPLETED", t0)]

    def killed(*a, **k):
        raise KeyboardInterrupt("SIGKILL after sbatch")

    monkeypatch.setattr(ledger, "record_submitted", killed)
    with pytest.raises(KeyboardInterrupt):
        rc.reconcile_pass(ledger, fake, now=t0 + SETTLED)
    monkeypatch.undo()
    assert len(fake.submitted) == 1
    assert [s["state"] for s in ledger.submissions(EXP)] == ["SUBMITTED", "INTENT"]
    assert ledger.last_heartbeat("reconcile")["ok"] == 0
    s = rc.reconcile_pass(ledger, fake)          # finds the job by its tag: adopts it
    assert s.adopted == 1 and len(fake.submitted) == 1
    subs = ledger.submissions(EXP)
    assert subs[1]["state"] == "ADOPTED" and subs[1]["job_id"] == fake.submitted[0]["job"]
    att = ledger.attempts(EXP, run_id="r000")
    assert [(a["attempt_no"], a["state"]) for a in att] == [(1, "NODE_FAIL"), (2, "PENDING")]
    for _ in range(2):
        rc.reconcile_pass(ledger, fake)
    assert len(fake.submitted) == 1 and len(ledger.attempts(EXP)) == 3


def test_killed_between_intent_and_sbatch_then_replaced(ledger, tmp_path, t0):
    scripts = make_exp(ledger, tmp_path, n=1)
    submit(ledger, scripts, "100", submit_time=t0, spec="0")
    fake = FakeBackend()
    fake.rows = [row("100_0", "PREEMPTED", t0)]
    fake.die_before_sbatch = True
    with pytest.raises(KeyboardInterrupt):
        rc.reconcile_pass(ledger, fake, now=t0 + SETTLED)
    fake.die_before_sbatch = False
    assert [s["state"] for s in ledger.submissions(EXP)] == ["SUBMITTED", "INTENT"]
    assert states(ledger) == {"r000": "PLANNED"}
    s = rc.reconcile_pass(ledger, fake, grace_s=300)
    assert fake.submitted == [] and s.intents_failed == 0        # the intent might still be live
    s = rc.reconcile_pass(ledger, fake, grace_s=300,
                          now=datetime.now(timezone.utc) + timedelta(seconds=301))
    assert s.intents_failed == 1 and len(fake.submitted) == 1
    assert [s["state"] for s in ledger.submissions(EXP)] == ["SUBMITTED", "FAILED", "SUBMITTED"]
    assert [a["attempt_no"] for a in ledger.attempts(EXP)] == [1, 2]


def test_a_pass_killed_while_writing_its_changes_leaves_none_then_records_all(
        ledger, tmp_path, t0, monkeypatch):
    """The changes with nothing to decide are written together: a kill inside that transaction
    (after the attempts' UPDATE, before their events) leaves no attempt changed without its
    event, and the next pass records them all."""
    scripts = make_exp(ledger, tmp_path, n=6)
    submit(ledger, scripts, "100", submit_time=t0, spec="0-5")
    fake = FakeBackend()
    fake.rows = [row(f"100_{i}", "PENDING", t0, exit_code=None, end=None) for i in range(3)] + [
        row(f"100_{i}", "COMPLETED", t0) for i in range(3, 6)]
    fake.queued = [qrow(f"100_{i}", "PENDING", t0) for i in range(3)]
    before = snapshot(ledger)

    def killed(events):
        raise KeyboardInterrupt("killed before the events")

    monkeypatch.setattr(ledger, "_events_bulk", killed)
    with pytest.raises(KeyboardInterrupt):
        rc.reconcile_pass(ledger, fake, now=t0 + timedelta(seconds=10))
    assert snapshot(ledger) == before
    monkeypatch.undo()
    s = rc.reconcile_pass(ledger, fake, now=t0 + timedelta(seconds=20))
    assert s.moved == {"PENDING": 3, "COMPLETED": 3}
    assert states(ledger) == {"r000": "PENDING", "r001": "PENDING", "r002": "PENDING",
                              "r003": "COMPLETED", "r004": "COMPLETED", "r005": "COMPLETED"}
    changes = [(e["run_id"], e["to_state"]) for e in ledger.events(EXP) if e["kind"] == "state"]
    assert sorted(changes) == sorted(states(ledger).items())


def test_a_pass_writes_its_plain_changes_in_one_transaction_whatever_their_number(tmp_path, t0):
    """n+1 guard: recording 200 new PENDING states takes as many transactions as recording 2."""
    begins = {}
    for n in (2, 200):
        led = Ledger(tmp_path / str(n) / "ledger.db")
        scripts = make_exp(led, tmp_path / str(n), n=n)
        submit(led, scripts, "100", submit_time=t0, spec=f"0-{n - 1}")
        fake = FakeBackend()
        fake.rows = [row(f"100_{i}", "PENDING", t0, exit_code=None, end=None) for i in range(n)]
        fake.queued = [qrow(f"100_{i}", "PENDING", t0) for i in range(n)]
        seen = []
        led.db.conn.set_trace_callback(seen.append)
        assert rc.reconcile_pass(led, fake, now=t0 + timedelta(seconds=10)).moved == {"PENDING": n}
        led.db.conn.set_trace_callback(None)
        begins[n] = sum(1 for sql in seen if sql.startswith(("BEGIN", "SAVEPOINT")))
        led.close()
    assert begins[200] == begins[2], begins


def test_a_pass_with_nothing_new_writes_nothing_after_the_queue_gave_the_reason(ledger, tmp_path, t0):
    """Right after a launch only squeue knows the jobs (with their pending reason); sacct's
    records come later without one. The recorded reason stays (update_attempt keeps it), so
    a pass after that has nothing to write: no attempt update at all, not 3 that change
    nothing (each pass did 2,000 of them on a 2,000-task array)."""
    scripts = make_exp(ledger, tmp_path, n=3)
    submit(ledger, scripts, "100", submit_time=t0, spec="0-2")
    fake = FakeBackend()
    fake.queued = [dataclasses.replace(qrow(f"100_{i}", "PENDING", t0), reason="BeginTime")
                   for i in range(3)]
    assert rc.reconcile_pass(ledger, fake, now=t0 + timedelta(seconds=10)).moved == {"PENDING": 3}
    fake.rows = [row(f"100_{i}", "PENDING", t0, exit_code=None, end=None) for i in range(3)]
    rc.reconcile_pass(ledger, fake, now=t0 + timedelta(seconds=20))    # sacct's records
    assert {a["reason"] for a in ledger.attempts(EXP)} == {"pending: BeginTime"}
    before = snapshot(ledger)
    seen = []
    ledger.db.conn.set_trace_callback(seen.append)
    s = rc.reconcile_pass(ledger, fake, now=t0 + timedelta(seconds=30))
    ledger.db.conn.set_trace_callback(None)
    assert s.ok and s.moved == {} and snapshot(ledger) == before
    assert sum(sql.startswith("BEGIN") for sql in seen) == 1, seen      # the heartbeat's


def test_every_kill_point_of_a_retry_converges(ledger, tmp_path, t0, monkeypatch):
    """Kill the pass at each ledger write of a retry; the next pass must finish the job once."""
    points = ["record_intent", "record_submitted", "set_run_state", "update_attempt",
              "update_attempts"]
    for point in points:
        led = Ledger(tmp_path / point / "ledger.db")
        scripts = make_exp(led, tmp_path / point, n=2)
        submit(led, scripts, "100", submit_time=t0, spec="0-1")
        fake = FakeBackend()
        fake.rows = [row("100_0", "NODE_FAIL", t0), row("100_1", "COMPLETED", t0)]
        original = getattr(led, point)

        def dying(*a, _orig=original, _point=point, **k):
            _orig(*a, **k)
            raise KeyboardInterrupt(f"killed after {_point}")

        monkeypatch.setattr(led, point, dying)
        with pytest.raises(KeyboardInterrupt):
            rc.reconcile_pass(led, fake, now=t0 + SETTLED)
        monkeypatch.undo()
        later = datetime.now(timezone.utc) + timedelta(seconds=400)
        for _ in range(3):
            rc.reconcile_pass(led, fake, now=later, grace_s=300)
        for x in fake.submitted:
            fake.finish(x["job"])
        rc.reconcile_pass(led, fake, now=later, grace_s=300)
        assert len(fake.submitted) == 1, point
        assert states(led) == {"r000": "COMPLETED", "r001": "COMPLETED"}, point
        assert [a["attempt_no"] for a in led.attempts(EXP, run_id="r000")] == [1, 2], point
        led.close()


# --- manual retry and cancel ----------------------------------------------------------------

def test_manual_retry_and_cancel(ledger, tmp_path, t0):
    scripts = make_exp(ledger, tmp_path, n=4)
    submit(ledger, scripts, "100", submit_time=t0)
    fake = FakeBackend()
    fake.rows = [row("100_0", "FAILED", t0, exit_code=1), row("100_1", "COMPLETED", t0),
                 row("100_2", "CANCELLED by 0", t0), row("100_3", "RUNNING", t0)]
    fake.queued = [qrow("100_3", "RUNNING", t0)]
    rc.reconcile_pass(ledger, fake, now=t0 + timedelta(seconds=10))
    assert fake.submitted == []
    assert retry.retry_experiment(ledger, fake, EXP, "lost") == []
    subs = retry.retry_experiment(ledger, fake, EXP, "failed")
    assert len(subs) == 1 and fake.submitted[0]["args"] == ["--array=0,2%2"]
    assert states(ledger) == {"r000": "SUBMITTED", "r001": "COMPLETED", "r002": "SUBMITTED",
                              "r003": "RUNNING"}
    n = cancel.cancel_experiment(ledger, fake, EXP, reason="cancelled by test")
    assert n == 3
    assert sorted(fake.cancelled[0]) == sorted(["100", fake.submitted[0]["job"]])
    assert states(ledger) == {"r000": "CANCELLED", "r001": "COMPLETED", "r002": "CANCELLED",
                              "r003": "CANCELLED"}
    assert ledger.runs(EXP)[0]["reason"] == "cancelled by test"
    assert ledger.get_experiment(EXP)["state"] == "CANCELLED"
    # already-final attempts keep what happened
    assert ledger.attempts(EXP, run_id="r001")[0]["state"] == "COMPLETED"
    # cancelled attempts are not looked at again
    fake.calls.clear()
    rc.reconcile_pass(ledger, fake)
    assert "sbatch" not in fake.calls


def test_cancel_local_experiment_only_marks(ledger, tmp_path):
    make_exp(ledger, tmp_path, n=2, exp_id="loc-12345678", backend="local")
    assert cancel.cancel_experiment(ledger, None, "loc-12345678") == 2
    assert set(states(ledger, "loc-12345678").values()) == {"CANCELLED"}
    with pytest.raises(SlurmexpError, match="local backend"):
        retry.retry_experiment(ledger, None, "loc-12345678")


def test_retry_when_sbatch_is_down_leaves_an_intent(ledger, tmp_path, t0):
    scripts = make_exp(ledger, tmp_path, n=1)
    submit(ledger, scripts, "100", submit_time=t0, spec="0")
    fake = FakeBackend()
    fake.rows = [row("100_0", "FAILED", t0, exit_code=2)]
    rc.reconcile_pass(ledger, fake, now=t0 + timedelta(seconds=10))
    fake.unavailable = {"sbatch"}
    with pytest.raises(SlurmUnavailable, match="adopts or replaces"):
        retry.retry_experiment(ledger, fake, EXP, "failed")
    assert ledger.submissions(EXP)[-1]["state"] == "INTENT"


def test_retry_refused_by_sbatch_gives_the_run_back_its_state(ledger, tmp_path, t0):
    scripts = make_exp(ledger, tmp_path, n=1)
    submit(ledger, scripts, "100", submit_time=t0, spec="0")
    fake = FakeBackend()
    fake.rows = [row("100_0", "NODE_FAIL", t0)]
    fake.refuse = "Invalid partition name specified"
    s = rc.reconcile_pass(ledger, fake, now=t0 + SETTLED)
    assert s.ok and s.warnings and "refused" in s.warnings[0]
    r = ledger.runs(EXP)[0]
    assert r["state"] == "NODE_FAIL" and "retry refused by sbatch" in r["reason"]
    rc.reconcile_pass(ledger, fake, now=t0 + SETTLED + timedelta(seconds=10))
    assert fake.calls["sbatch"] == 1                         # not retried every pass


# --- cron and health ------------------------------------------------------------------------

def test_cron_line(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURMEXP_HOME", raising=False)
    monkeypatch.delenv("SLURM_CONF", raising=False)
    line = cron.cron_line(5, tmp_path / "my dir" / "ledger.db", "/opt/sx/bin/slurmexp",
                        path_env="/opt/slurm/bin:/usr/bin")
    assert line.startswith("*/5 * * * * PATH=/opt/slurm/bin:/usr/bin ")
    assert f"--ledger '{tmp_path}/my dir/ledger.db' reconcile --quiet" in line
    assert f">> '{tmp_path}/my dir/reconcile.log' 2>&1" in line
    assert "flock" not in line and line.endswith(cron.CRON_MARKER)
    assert cron.cron_line(1, "/l.db", "/x").startswith("* * * * * ")
    assert cron.cron_line(120, "/l.db", "/x").startswith("0 */2 * * * ")
    assert "\\%" in cron.cron_line(5, "/data/100%/l.db", "/x")
    with pytest.raises(SlurmexpError, match="every 90 minutes"):
        cron.cron_line(90, "/l.db", "/x")


def _fake_crontab(tmp_path, initial: str | None) -> Path:
    store = tmp_path / "crontab.txt"
    if initial is not None:
        store.write_text(initial)
    exe = tmp_path / "crontab"
    exe.write_text(f"""#!/bin/bash
if [ "$1" = -l ]; then
  [ -f {store} ] || {{ echo "no crontab for $USER" >&2; exit 1; }}
  cat {store}
elif [ "$1" = - ]; then cat > {store}
fi
""")
    exe.chmod(0o755)
    return exe


def test_install_cron_replaces_only_our_line(tmp_path):
    exe = _fake_crontab(tmp_path, None)
    line = cron.cron_line(5, tmp_path / "ledger.db", "/x/slurmexp")
    assert cron.install_cron(line, crontab=str(exe)) == line + "\n"
    (tmp_path / "crontab.txt").write_text(
        "MAILTO=me\n0 1 * * * backup.sh\n*/10 * * * * /old/slurmexp reconcile --quiet\n" + line + "\n")
    new = cron.cron_line(2, tmp_path / "ledger.db", "/x/slurmexp")
    text = cron.install_cron(new, crontab=str(exe))
    assert text == f"MAILTO=me\n0 1 * * * backup.sh\n{new}\n"
    with pytest.raises(SlurmexpError, match="not installed"):
        cron.install_cron(new, crontab=str(tmp_path / "nope"))


def test_health(ledger, t0):
    ok, msg = health_mod.health(ledger, 30)
    assert not ok and "no reconcile pass" in msg
    ledger.record_heartbeat("reconcile", True, {"active": 3, "moved": {"COMPLETED": 2}})
    ok, msg = health_mod.health(ledger, 30)
    assert ok and "3 active" in msg
    ok, msg = health_mod.health(ledger, 30, now=datetime.now(timezone.utc) + timedelta(minutes=31))
    assert not ok and "older than 30 min" in msg
    ledger.record_heartbeat("reconcile", False, {"error": "sacct: slurmdbd down"})
    ok, msg = health_mod.health(ledger, 30)
    assert not ok and "slurmdbd down" in msg and "last good pass" in msg


def test_settings_roundtrip_and_migration(tmp_path):
    led = Ledger(tmp_path / "l.db")
    make_exp(led, tmp_path, n=1)
    assert led.experiment_settings(EXP).retry.backoff_s == 0
    assert "settings_json" in led.db.columns("experiments")
    with pytest.raises(SlurmexpError):
        led.experiment_settings("nope")
    led.close()


def test_retry_spec_backoff_default():
    import pydantic

    from slurmexp.sweep.spec import RetrySpec

    assert RetrySpec().backoff_s == 60
    assert RetrySpec(backoff_s=0).backoff_s == 0
    with pytest.raises(pydantic.ValidationError):
        RetrySpec(backoff_s=-1)


def test_checkpointed_attempt_is_continued_at_once_without_escalation_within_max_attempts():
    settings = ExperimentSettings(RetrySettings(max_attempts=3, escalate=True, backoff_s=600),
                                  (GroupSettings(time_min=10, max_time_min=60),),
                                  CheckpointSettings("USR1", 90, requeue=True))
    assert ExperimentSettings.from_json(settings.to_json()) == settings     # kept for retries
    p = rt.RetryPolicy.for_chunk(settings, 0)
    assert p.continue_checkpointed
    now = datetime.now(timezone.utc)
    d = rt.decide_retry(p, "TIMEOUT", "checkpointed", 1, [], now, now)
    assert d.retry and d.due == now and d.note == "continue 2/3 from its checkpoint"
    d = rt.decide_retry(p, "PREEMPTED", "checkpointed", 3, [], now, now)
    assert not d.retry and "no attempts left" in d.note
    # A later real TIMEOUT escalates from the request: the checkpointed one is not counted.
    assert rt.decide_retry(p, "TIMEOUT", "resources", 2, ["TIMEOUT"], now, now).note.endswith(
        "with time 00:20:00")
    assert not rt.RetryPolicy.for_chunk(ExperimentSettings(), 0).continue_checkpointed


def test_a_full_disk_is_an_infrastructure_failure_not_the_command(tmp_path):
    # Issue 9 item 5 (the real task script on a full tmpfs: test_submit_limits_cluster.py).
    attempt = tmp_path / "attempts" / "7_0"
    attempt.mkdir(parents=True)
    wrapper = row("7_0", "FAILED", exit_code=98)
    assert "could not write its files" in rd.storage_failure(wrapper, "", attempt)
    (attempt / "exit_code").write_text("98\n")          # the command itself exited 98
    assert rd.storage_failure(wrapper, "", attempt) is None
    full = rd.storage_failure(row("7_0", "FAILED", exit_code=1), "OSError: [Errno 28] No space left on device", attempt)
    assert full.startswith("exit code 1; stderr tail:") and "disk was full" in full
    assert rd.storage_failure(row("7_0", "FAILED", exit_code=1), "ValueError: bad lr", attempt) is None
    assert rd.storage_failure(row("7_0", "TIMEOUT", exit_code=0), "Disk quota exceeded", attempt) is None


# --- sacct and squeue at once (real processes: fake Slurm commands on PATH) -----------------

def _fake_slurm(tmp_path, monkeypatch, sacct: str, squeue: str) -> Path:
    """`sacct` and `squeue` on PATH as Python scripts (bodies given), and their meeting folder."""
    bin_dir, meet = tmp_path / "bin", tmp_path / "meet"
    bin_dir.mkdir()
    meet.mkdir()
    head = (f"#!{sys.executable}\nimport os, sys, time\nMEET = {str(meet)!r}\nSEP = '\\x1f'\n"
            "def wait_for(name, seconds):\n"
            "    deadline = time.monotonic() + seconds\n"
            "    while not os.path.exists(os.path.join(MEET, name)):\n"
            "        if time.monotonic() > deadline:\n"
            "            return False\n"
            "        time.sleep(0.02)\n"
            "    return True\n")
    for name, body in (("sacct", sacct), ("squeue", squeue)):
        (bin_dir / name).write_text(head + body)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.delenv("SLURM_CONF", raising=False)
    return meet


def _sacct_text(values: dict) -> str:
    from slurmexp.backends.slurm import parse as sp
    return sp.DELIMITER.join(values.get(f, "") for f in sp.SACCT_FIELDS) + "\n"


def test_a_pass_runs_its_squeue_while_its_sacct_runs(ledger, tmp_path, monkeypatch, t0):
    from slurmexp.backends.slurm import backend as slurm
    from slurmexp.backends.slurm.backend import SlurmBackend

    scripts = make_exp(ledger, tmp_path, n=2)
    submit(ledger, scripts, "100", submit_time=t0, spec="0-1")
    line = _sacct_text({"JobID": "100_[0-1]", "JobIDRaw": "100", "State": "PENDING",
                        "Submit": local(t0), "Partition": "cpu", "QOS": "normal",
                        "JobName": f"sx.{EXP}.000", "Cluster": CLUSTER})
    # sacct answers only once squeue has started: one after the other, this pass would fail.
    _fake_slurm(tmp_path, monkeypatch, sacct=(
        "if not wait_for('squeue-started', 30):\n"
        "    sys.exit('sacct: error: squeue was not running while sacct ran')\n"
        f"sys.stdout.write({line!r})\n"), squeue=(
        "open(os.path.join(MEET, 'squeue-started'), 'w').close()\n"
        "for t in (0, 1):\n"
        f"    print(SEP.join(['100_%d' % t, '100', str(t), 'PENDING', 'BeginTime', {local(t0)!r},"
        f" '', 'sx.{EXP}.000', 'slurmexp:{EXP}']))\n"))
    slurm.reset_call_log()
    s = rc.reconcile_pass(ledger, SlurmBackend(cluster=CLUSTER, user="ann"), now=t0, grace_s=60)
    assert s.ok, s.error
    assert slurm.CALL_COUNTS == {"sacct": 1, "squeue": 1}
    assert [c.command for c in slurm.CALLS] == ["sacct", "squeue"]      # judged in that order
    attempts = ledger.attempts(EXP)
    assert [a["state"] for a in attempts] == ["PENDING", "PENDING"]
    # squeue's rows were read: sacct's PENDING tasks are in the controller's queue.
    assert [a["unlisted_since"] for a in attempts] == [None, None], attempts


def test_a_pass_whose_sacct_fails_stops_its_squeue(ledger, tmp_path, monkeypatch, t0):
    from slurmexp.backends.slurm.backend import SlurmBackend

    scripts = make_exp(ledger, tmp_path, n=2)
    submit(ledger, scripts, "100", submit_time=t0, spec="0-1")
    meet = _fake_slurm(tmp_path, monkeypatch, sacct=(
        "wait_for('squeue-started', 30)\n"
        "sys.exit('sacct: error: slurmdbd: Connection refused')\n"), squeue=(
        "open(os.path.join(MEET, 'squeue.pid'), 'w').write(str(os.getpid()))\n"
        "open(os.path.join(MEET, 'squeue-started'), 'w').close()\n"
        "wait_for('never', 120)\n"))
    before = snapshot(ledger)
    s = rc.reconcile_pass(ledger, SlurmBackend(cluster=CLUSTER, user="ann"), now=t0, grace_s=60)
    assert not s.ok and s.exit_code == 3 and "Connection refused" in s.error
    assert snapshot(ledger) == before
    pid = int((meet / "squeue.pid").read_text())
    assert not _alive(pid), "the pass left its squeue running"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_record_json_of_array_tasks_is_each_tasks_own_record():
    # The tasks of a pending array row share one JSON text with their id and index written in.
    def plain(rec):
        out = {f.name: getattr(rec, f.name) for f in dataclasses.fields(rec)}
        if out["pending_tasks"] is not None:
            out["pending_tasks"] = len(out["pending_tasks"])
        return json.dumps(out, sort_keys=True, default=str)

    odd = row("9_[0-3]", "PENDING", "2026-01-01T00:00:00", comment='a "quoted" \u00e9 comment\\u0000',
              max_rss_mb=1.5e-7, reason="BeginTime")
    recs = [odd, row("10", "FAILED", "2026-01-01T00:00:00", exit_code=3),
            row("11_2", "RUNNING", "2026-01-01T00:00:00"),
            *rd.expand_rows([odd], {}), *rd.expand_rows([dataclasses.replace(odd, job_name=None)], {})]
    assert len(recs) == 11
    for rec in recs:
        assert rd.record_json(rec) == plain(rec)
        assert json.loads(rd.record_json(rec))["job_id"] == rec.job_id
    tasks = rd.expand_rows([odd], {})
    assert [json.loads(rd.record_json(t))["array_task"] for t in tasks] == [0, 1, 2, 3]
