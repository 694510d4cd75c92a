"""Bring the ledger up to date with what Slurm did, retry what the cluster broke, and say so.

One reconcile pass (run by cron every few minutes, or by hand) does, in this order:

1. takes a non-blocking lock next to the ledger, so overlapping passes never act twice;
2. asks Slurm once: one sacct call for every active attempt of every Slurm experiment (plus one
   by job name when a launch died between sbatch and the ledger write) and one squeue call.
   Nothing is written until every answer is in, so a daemon that does not answer
   (SlurmUnavailable) changes nothing;
3. adopts jobs whose submission is still INTENT (found by their tag `sx.<exp>.<chunk>`);
4. matches sacct rows to attempts on (cluster, job key, submit time) (`records.match_rows`):
   job ids are reused after a controller state loss, so a row with another submit time is
   another job, and a row with the same key and a later submit time is Slurm's own requeue of
   the job, recorded as a NEW attempt of the same run;
5. writes each attempt's transition, with its event and the retry decision, in one transaction;
6. submits the retries that are due (`retry.submit_due`: only the affected tasks, one sbatch
   per chunk, intent -> sbatch -> record, as launch does);
7. writes a heartbeat with a summary, which `operate.health()` reads.

What a record means (state words, failure classes, reasons) is in `records`; what happens
after a failure (backoff, escalation, resubmission) is in `retry`.

Killing a pass at any point is harmless: every step is a transaction of its own, and the next
pass sees what is left (an INTENT it adopts or, once provably dead, replaces; a PLANNED run it
submits; an attempt whose row it matches again).
"""
from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from slurmexp.backends.facts import SacctRow
from slurmexp.errors import SlurmexpError, SlurmUnavailable
from slurmexp.ledger.store import TERMINAL_STATES, Ledger, parse_array_spec
from slurmexp.reconcile.context import (EXIT_ERROR, FINISHED_EXPERIMENT_STATES, PassContext, PassSummary,
                           pass_lock)
from slurmexp.reconcile.match import (PROGRESS, SUBMIT_SKEW_S, Match, attempt_fields, classify, expand_rows,
                      failure_reason, is_incomplete, ledger_state, match_rows, queue_record,
                      row_key)
from slurmexp.reconcile.retry import (preview_retry, resubmittable_runs, schedule_retry, slurm_experiments,
                    submit_due)
from slurmexp import tags
from slurmexp.timeutil import parse_ts, sacct_time, utc_iso

HEARTBEAT_KIND = "reconcile"
HEARTBEAT_LIST_LIMIT = 20
# sacct -S: searched from the oldest active attempt minus this, never from all history (job
# ids are reused after a controller reset).
SINCE_MARGIN_S = 300
# A job that left both sacct and squeue but whose task wrote its attempt files ran: wait this
# many grace periods for accounting before calling it lost.
EVIDENCE_FACTOR = 12
STDERR_TAIL_LINES = 5
STDERR_TAIL_CHARS = 400

_RUNAWAY_RE = re.compile(r"the controller does not list the job \(since ([^)]+)\)")


# ------------------------------------------------------------------------------------------
# Small helpers


def chunk_job_name(exp_id: str, chunk: int | None) -> str | None:
    """The tag launch gave a chunk's job; None for a submission that is not a chunk."""
    return None if chunk is None else tags.job_name(exp_id, chunk)


def attempt_dir(run_dir: str | None, job_key: str | None, restart: int = 0) -> Path | None:
    """`<run_dir>/attempts/<job_key>[.r<N>]`, as the task script names it."""
    if not run_dir or not job_key:
        return None
    return Path(run_dir) / "attempts" / (f"{job_key}.r{restart}" if restart else job_key)


def stderr_tail(paths: Iterable[Path | None], lines: int = STDERR_TAIL_LINES,
                limit: int = STDERR_TAIL_CHARS) -> str:
    """The last non-empty lines of the first readable, non-empty file, joined with " | "."""
    for path in paths:
        if path is None:
            continue
        try:
            with open(path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 8192))
                data = fh.read().decode("utf-8", errors="replace")
        except OSError:
            continue
        kept = [ln.strip() for ln in data.splitlines() if ln.strip()][-lines:]
        if kept:
            text = " | ".join(kept)
            return text if len(text) <= limit else "..." + text[-limit:]
    return ""


def _differs(old: dict, new: dict) -> bool:
    for k, v in new.items():
        o = old.get(k)
        if o is None and v is None:
            continue
        if o is None or v is None:
            return True
        if isinstance(v, float) or isinstance(o, float):
            try:
                if abs(float(o) - float(v)) > 1e-6:
                    return True
                continue
            except (TypeError, ValueError):
                return True
        if str(o) != str(v):
            return True
    return False


# ------------------------------------------------------------------------------------------
# Reading the ledger


_ACTIVE_SQL = f"""
SELECT a.*, r.run_dir, r.n_attempts AS run_n_attempts, r.state AS run_state,
       r.chunk AS run_chunk, s.created AS created, s.chunk AS sub_chunk,
       s.script_path AS script_path, e.exp_dir AS exp_dir
FROM attempts a
JOIN experiments e ON e.exp_id = a.exp_id
JOIN runs r ON r.exp_id = a.exp_id AND r.run_id = a.run_id
LEFT JOIN submissions s ON s.sub_id = a.sub_id
WHERE e.backend = 'slurm'
  AND a.state NOT IN ({", ".join("'" + s + "'" for s in sorted(TERMINAL_STATES))})
ORDER BY a.attempt_id
"""


def _active_attempts(ledger: Ledger, cluster: str | None) -> list[dict]:
    out = []
    for a in ledger.db.query(_ACTIVE_SQL):
        if cluster and a["cluster"] and a["cluster"] != cluster:
            continue
        # A record Slurm replaced by a requeue is final once its successor exists.
        if a["state"] in ("REQUEUED",) and a["attempt_no"] < a["run_n_attempts"]:
            continue
        chunk = a["sub_chunk"] if a["sub_chunk"] is not None else a["run_chunk"]
        a["job_name"] = chunk_job_name(a["exp_id"], chunk)
        out.append(a)
    return out


def _intents(ledger: Ledger, exps: dict[str, dict], cluster: str | None) -> list[dict]:
    out = []
    for s in ledger.db.query("SELECT * FROM submissions WHERE state = 'INTENT' ORDER BY sub_id"):
        if s["exp_id"] not in exps:
            continue
        if cluster and s["cluster"] and s["cluster"] != cluster:
            continue
        out.append(s)
    return out


# ------------------------------------------------------------------------------------------
# The pass


def reconcile_pass(ledger: Ledger, backend: Any = None, *, dry_run: bool = False,
                   now: datetime | None = None, grace_s: float = 300) -> PassSummary:
    """One reconcile pass over every Slurm experiment of the ledger (see the module doc).

    Never raises for Slurm being unavailable: the summary says so (`error`, `exit_code` 3) and
    the heartbeat records a failed pass. `dry_run` asks Slurm but writes and submits nothing.
    """
    started = time.monotonic()
    # A naive `now` is local time, like Slurm's own timestamps.
    now = now.astimezone(timezone.utc) if now else datetime.now(timezone.utc)
    summary = PassSummary(started=utc_iso(now), dry_run=dry_run)
    with pass_lock(ledger) as got:
        if not got:
            summary.skipped = True
            return summary
        ctx = PassContext(ledger, backend, summary, now, grace_s, dry_run)
        try:
            _run_pass(ctx)
        except SlurmexpError as exc:
            summary.error = exc.message
            summary.exit_code = exc.exit_code
        except BaseException as exc:
            summary.error = f"{type(exc).__name__}: {exc}"
            summary.exit_code = EXIT_ERROR
            summary.seconds = time.monotonic() - started
            if not dry_run:
                with contextlib.suppress(Exception):
                    ledger.record_heartbeat(HEARTBEAT_KIND, False, summary.to_dict(HEARTBEAT_LIST_LIMIT))
            raise
        summary.seconds = time.monotonic() - started
        if not dry_run:
            ledger.record_heartbeat(HEARTBEAT_KIND, summary.ok, summary.to_dict(HEARTBEAT_LIST_LIMIT))
    return summary


def _run_pass(ctx: PassContext) -> None:
    ledger, summary = ctx.ledger, ctx.summary
    cluster = getattr(ctx.backend, "cluster", None) if ctx.backend is not None else None
    ctx.exps = slurm_experiments(ledger)
    active = _active_attempts(ledger, cluster)
    intents = _intents(ledger, ctx.exps, cluster)
    pending = resubmittable_runs(ctx)
    summary.active = len(active)
    if not active and not intents and not pending:
        _update_experiments(ctx, set(ctx.exps))
        return
    backend = ctx.slurm()

    # --- ask Slurm everything first; nothing is written before all answers are in --------
    rows: list[SacctRow] = []
    name_rows: list[SacctRow] = []
    queue: list[Any] = []
    if active:
        since = _since([parse_ts(a["submit_time"]) or parse_ts(a["created"]) for a in active],
                       ctx.now)
        job_ids = sorted({str(a["job_id"]) for a in active if a["job_id"]})
        array_ids = sorted({str(a["job_id"]) for a in active if a["task_index"] is not None})
        t = time.monotonic()
        rows = backend.sacct_rows(job_ids, since=since, array_ids=array_ids)
        summary.sacct_s += time.monotonic() - t
    if intents:
        since = _since([parse_ts(s["created"]) for s in intents], ctx.now)
        names = sorted({n for s in intents if (n := chunk_job_name(s["exp_id"], s["chunk"]))})
        if names:
            t = time.monotonic()
            name_rows = backend.sacct_rows([], since=since, names=names)
            summary.sacct_s += time.monotonic() - t
    if active or intents:
        t = time.monotonic()
        try:
            queue = backend.squeue_rows()
        except SlurmUnavailable as exc:
            # sacct answered, the controller did not: record what accounting says, but decide
            # nothing that needs the queue (LOST, dead intents) and submit nothing.
            ctx.queue_ok = False
            summary.error = f"squeue: {exc.message}"
            summary.exit_code = exc.exit_code
        summary.squeue_s += time.monotonic() - t
    queue_records = [queue_record(q) for q in queue]

    # --- orphans: INTENT submissions -----------------------------------------------------
    if intents:
        changed = _resolve_intents(ctx, intents, name_rows, queue_records)
        if changed and not ctx.dry_run:
            active = _active_attempts(ledger, cluster)
            summary.active = len(active)
    # --- match and transition ------------------------------------------------------------
    match = match_rows(active, [*rows, *name_rows], queue_records)
    queued_keys = {row_key(r) for r in expand_rows(queue_records)}
    touched: set[str] = set()
    for a in active:
        if _transition(ctx, a, match, queued_keys):
            touched.add(a["exp_id"])
    # --- retries -------------------------------------------------------------------------
    if ctx.queue_ok:
        touched |= submit_due(ctx)
    _update_experiments(ctx, touched | {a["exp_id"] for a in active} | {
        s["exp_id"] for s in intents})


def _since(times: Iterable[datetime | None], now: datetime) -> str:
    known = [t for t in times if t is not None]
    oldest = min(known) if known else now - timedelta(days=7)
    return sacct_time(oldest - timedelta(seconds=SINCE_MARGIN_S))


# --- intents ------------------------------------------------------------------------------


def _recorded_jobs(ledger: Ledger, exp_id: str) -> list[tuple[str, datetime | None, datetime | None]]:
    """(job id, submit time, intent time) of the experiment's recorded submissions."""
    out = []
    for s in ledger.db.query(
            "SELECT job_id, submit_time, created FROM submissions WHERE exp_id = ? "
            "AND state IN ('SUBMITTED', 'ADOPTED') AND job_id IS NOT NULL", [exp_id]):
        out.append((str(s["job_id"]), parse_ts(s["submit_time"]), parse_ts(s["created"])))
    return out


def _same_job(job_id: str, submit: datetime, rec_job: str, rec_submit: datetime | None,
              rec_created: datetime | None) -> bool:
    """Whether a recorded submission (job id, submit, intent time) is this job."""
    if rec_job != job_id:
        return False
    if rec_submit is not None:
        return abs((rec_submit - submit).total_seconds()) < 1
    # No submit time recorded yet: the same job if its intent came shortly before the job.
    return rec_created is None or (submit - timedelta(hours=1) <= rec_created
                                   <= submit + timedelta(seconds=SUBMIT_SKEW_S))


def _jobs_by_name(records: Iterable[SacctRow]) -> dict[str, dict[str, dict]]:
    """name -> job id -> {"submit": earliest submit, "tasks": set, "comment": ...}."""
    out: dict[str, dict[str, dict]] = defaultdict(dict)
    for r in records:
        if not r.job_name or is_incomplete(r):
            continue
        job = r.array_job_id or r.job_id
        info = out[r.job_name].setdefault(job, {"submit": None, "tasks": set(), "comment": None})
        ts = parse_ts(r.submit)
        if ts is not None and (info["submit"] is None or ts < info["submit"]):
            info["submit"] = ts
        if r.array_task is not None:
            info["tasks"].add(r.array_task)
        for t in r.pending_tasks or ():
            info["tasks"].add(t)
        info["comment"] = info["comment"] or r.comment
    return out


def _resolve_intents(ctx: PassContext, intents: list[dict], name_rows: list[SacctRow],
                     queue: list[SacctRow]) -> bool:
    """Adopt each INTENT's job, or close an intent that provably made none. True if changed."""
    ledger, summary = ctx.ledger, ctx.summary
    jobs = _jobs_by_name([*name_rows, *queue])
    taken: set[tuple[str, str]] = set()
    changed = False
    for s in intents:
        name = chunk_job_name(s["exp_id"], s["chunk"])
        created = parse_ts(s["created"])
        lo = created - timedelta(seconds=SUBMIT_SKEW_S) if created else None
        wanted = parse_array_spec(s["array_spec"] or "")
        recorded = _recorded_jobs(ledger, s["exp_id"])
        candidates = []
        for job_id, info in jobs.get(name or "", {}).items():
            submit = info["submit"]
            if (name, job_id) in taken or submit is None or (lo is not None and submit < lo):
                continue
            if info["comment"] and info["comment"] != f"slurmexp:{s['exp_id']}":
                continue
            if wanted is not None and info["tasks"] and not info["tasks"] <= wanted:
                continue
            if any(_same_job(job_id, submit, *rec) for rec in recorded):
                continue    # a job some other submission already recorded
            candidates.append((submit, job_id))
        if candidates:
            submit, job_id = min(candidates)
            taken.add((name, job_id))
            summary.adopted += 1
            summary.act(f"adopt job {job_id} ({name}) for submission {s['sub_id']}")
            if not ctx.dry_run:
                ledger.record_submitted(s["sub_id"], job_id, sacct_time(submit), adopted=True)
                changed = True
            continue
        age = (ctx.now - created).total_seconds() if created else float("inf")
        if not ctx.queue_ok or age < ctx.grace_s:
            summary.act(f"submission {s['sub_id']} ({name}): no job yet; waiting")
            continue
        message = (f"no job named {name} was found in sacct or squeue {int(age)}s after the "
                   f"intent: sbatch never created it (the submitting process died first)")
        summary.intents_failed += 1
        summary.act(f"close dead intent {s['sub_id']}: {message}")
        if not ctx.dry_run:
            ledger.record_submit_failed(s["sub_id"], message)
            changed = True
    return changed


# --- transitions --------------------------------------------------------------------------


def _restart_count(ledger: Ledger, a: dict) -> int:
    row = ledger.db.execute(
        "SELECT COUNT(*) FROM attempts WHERE sub_id IS ? AND job_key = ? AND attempt_id < ?",
        [a["sub_id"], a["job_key"], a["attempt_id"]]).fetchone()
    return int(row[0]) if row else 0


def _tail_for(ctx: PassContext, a: dict) -> str:
    restart = _restart_count(ctx.ledger, a)
    paths: list[Path | None] = []
    d = attempt_dir(a.get("run_dir"), a.get("job_key"), restart)
    if d is not None:
        paths.append(d / "stderr")
    if a.get("exp_dir") and a.get("job_key"):
        paths.append(Path(a["exp_dir"]) / "logs" / f"{a['job_key']}.err")
    return stderr_tail(paths)


def _changed_under_us(ledger: Ledger, a: dict) -> bool:
    """Inside the write transaction: whether the attempt left the state this pass read."""
    cur = ledger.db.execute("SELECT state FROM attempts WHERE attempt_id = ?",
                            [a["attempt_id"]]).fetchone()
    return cur is None or cur[0] != a["state"]


def _transition(ctx: PassContext, a: dict, match: Match, queued_keys: set[str]) -> bool:
    """Apply what Slurm says about one attempt (and its requeues) in one transaction."""
    rec = match.rows.get(a["attempt_id"])
    later = match.requeues.get(a["attempt_id"], [])
    if rec is None:
        return _unmatched(ctx, a, later, queued_keys)
    return _apply(ctx, a, rec, later, match.submit_times.get(a["attempt_id"]), queued_keys)


def _record_fields(ctx: PassContext, a: dict, rec: SacctRow, superseded: bool,
                   in_queue: bool) -> tuple[dict, str | None, str | None]:
    """(fields, reason, failure class) for an attempt from its record."""
    fields = attempt_fields(rec)
    if not rec.known_state:
        state = rec.state
        reason = f"unknown Slurm state {rec.state_raw or rec.state}; kept and watched"
        return {**fields, "state": state, "failure_class": "unknown"}, reason, "unknown"
    state = ledger_state(rec.state)
    fclass = classify(rec.state, rec.exit_code)
    tail = _tail_for(ctx, a) if rec.state in ("FAILED", "OUT_OF_MEMORY") else ""
    reason = failure_reason(rec, tail)
    if state in ("PENDING", "RUNNING", "SUSPENDED") and not in_queue and ctx.queue_ok \
            and not superseded and not is_incomplete(rec):
        # sacct says it is going, the controller does not know it: it either just ended
        # (accounting lags a moment) or it is a runaway record after a controller state loss.
        since = None
        m = _RUNAWAY_RE.search(a.get("reason") or "")
        if m:
            since = parse_ts(m.group(1))
        if since is None:
            since = ctx.now
        if (ctx.now - since).total_seconds() >= ctx.grace_s:
            return ({**fields, "state": "LOST", "failure_class": "infrastructure"},
                    f"LOST: sacct says {rec.state} but the controller has not listed the job "
                    f"since {utc_iso(since)} (a runaway record after a controller state loss?)",
                    "infrastructure")
        reason = (f"sacct says {rec.state}, but the controller does not list the job "
                  f"(since {utc_iso(since)})")
    return {**fields, "state": state, "failure_class": fclass}, reason, fclass


def _apply(ctx: PassContext, a: dict, rec: SacctRow, later: list[SacctRow], submit_time: str | None,
           queued_keys: set[str]) -> bool:
    ledger, summary = ctx.ledger, ctx.summary
    key = a["job_key"]
    if is_incomplete(rec) and rec.state in TERMINAL_STATES and not later:
        end = parse_ts(rec.end) or ctx.now
        if (ctx.now - end).total_seconds() < ctx.grace_s:
            # Final, but slurmdbd has only its placeholder record yet (no partition, QOS,
            # ReqMem): a later pass records the complete one.
            summary.act(f"{a['exp_id']} {a['run_id']} job {key}: {rec.state}; waiting for "
                        f"its complete accounting record")
            return False
    fields, reason, fclass = _record_fields(ctx, a, rec, bool(later),
                                            in_queue=key in queued_keys or bool(later))
    if submit_time and not a.get("submit_time"):
        fields["submit_time"] = submit_time
    state = fields["state"]
    if state in PROGRESS and a["state"] in PROGRESS and PROGRESS[state] < PROGRESS[a["state"]]:
        # The same record cannot go back (a requeue is a new record): accounting lags.
        state = fields["state"] = a["state"]
        reason = a.get("reason")
    if not rec.known_state:
        summary.flagged.append(f"{a['exp_id']} {a['run_id']} job {key}: {reason}")
    old_cols = {k: a.get(k) for k in fields}
    changes = _differs(old_cols, fields) or (reason or None) != (a.get("reason") or None)
    if not changes and not later:
        return False
    if state != a["state"]:
        summary.moved_to(state)
        summary.act(f"{a['exp_id']} {a['run_id']} job {key}: {a['state']} -> {state}"
                    + (f" ({reason})" if reason else ""))
    if state == "LOST":
        summary.lost += 1
    for r in later:
        summary.requeued += 1
        summary.act(f"{a['exp_id']} {a['run_id']} job {key}: requeued by Slurm "
                    f"(submit {r.submit}) -> new attempt")
    if ctx.dry_run:
        if state in TERMINAL_STATES and not later:
            preview_retry(ctx, a, state, fclass, rec)
        return True
    with ledger.transaction():
        if _changed_under_us(ledger, a):
            return False        # a cancel or another writer moved it: the next pass decides
        try:
            with ledger.transaction():
                ledger.update_attempt(a["attempt_id"], reason=reason, **fields)
        except sqlite3.IntegrityError:
            # Another attempt already holds (cluster, job key, submit time): keep ours unset.
            fields.pop("submit_time", None)
            ledger.update_attempt(a["attempt_id"], reason=reason, **fields)
        prev = a
        for r in later:
            prev = _record_requeue(ctx, prev, r, queued_keys)
        if state in TERMINAL_STATES and not later:
            schedule_retry(ctx, a, state, fclass, reason, rec)
    return True


def _unmatched(ctx: PassContext, a: dict, later: list[SacctRow], queued_keys: set[str]) -> bool:
    """No record of this attempt: wait, or after the grace period call it LOST."""
    summary = ctx.summary
    if later:
        # Only later records of the same job exist (the first aged out of sacct's window).
        if ctx.dry_run:
            summary.requeued += len(later)
            return True
        with ctx.ledger.transaction():
            prev = a
            for r in later:
                summary.requeued += 1
                prev = _record_requeue(ctx, prev, r, queued_keys)
            ctx.ledger.update_attempt(a["attempt_id"], reason="requeued by Slurm",
                                      state="REQUEUED")
        return True
    if not ctx.queue_ok:
        return False
    ref = parse_ts(a.get("submit_time")) or parse_ts(a.get("created"))
    age = (ctx.now - ref).total_seconds() if ref else float("inf")
    if age < ctx.grace_s:
        return False
    d = attempt_dir(a.get("run_dir"), a.get("job_key"), _restart_count(ctx.ledger, a))
    evidence = d is not None and (d / "started").exists()
    if evidence and age < ctx.grace_s * EVIDENCE_FACTOR:
        note = (f"not in sacct or squeue, but the task started (see {d}); waiting for "
                f"accounting to catch up")
        if a.get("reason") != note and not ctx.dry_run:
            ctx.ledger.update_attempt(a["attempt_id"], reason=note)
        return False
    reason = (f"LOST: job {a['job_key']} is in neither sacct nor squeue {int(age)}s after "
              f"its submission" + (f" (it did start: {d})" if evidence else ""))
    summary.lost += 1
    summary.moved_to("LOST")
    summary.act(f"{a['exp_id']} {a['run_id']} job {a['job_key']}: {a['state']} -> LOST")
    if ctx.dry_run:
        preview_retry(ctx, a, "LOST", "infrastructure", None)
        return True
    with ctx.ledger.transaction():
        if _changed_under_us(ctx.ledger, a):
            return False
        ctx.ledger.update_attempt(a["attempt_id"], reason=reason, state="LOST",
                                  failure_class="infrastructure")
        schedule_retry(ctx, a, "LOST", "infrastructure", reason, None)
    return True


def _record_requeue(ctx: PassContext, prev: dict, rec: SacctRow, queued_keys: set[str]) -> dict:
    """Slurm requeued `prev`'s job: a new attempt of the same run (same job key, later submit)."""
    ledger = ctx.ledger
    with ledger.transaction():
        new = ledger.record_requeue(prev["attempt_id"], rec.submit)
        new.update(run_dir=prev.get("run_dir"), exp_dir=prev.get("exp_dir"),
                   created=prev.get("created"), job_name=prev.get("job_name"),
                   script_path=prev.get("script_path"))
        fields, reason, fclass = _record_fields(
            ctx, new, rec, False, in_queue=row_key(rec) in queued_keys)
        fields.pop("submit_time", None)
        ledger.update_attempt(new["attempt_id"], reason=reason, **fields)
        if fields["state"] in TERMINAL_STATES:
            new["state"] = "SUBMITTED"
            schedule_retry(ctx, new, fields["state"], fclass, reason, rec)
    return new


# --- experiments --------------------------------------------------------------------------


def _update_experiments(ctx: PassContext, exp_ids: set[str]) -> None:
    """SUBMITTING -> SUBMITTED once nothing waits for sbatch; FINISHED[_WITH_FAILURES] at the end."""
    if ctx.dry_run:
        return
    ledger = ctx.ledger
    for exp_id in sorted(exp_ids):
        exp = ctx.exps.get(exp_id)
        if exp is None:
            continue
        current = ledger.db.execute("SELECT state FROM experiments WHERE exp_id = ?",
                                    [exp_id]).fetchone()[0]
        if current in ("CANCELLED", "FAILED"):
            continue
        counts = ledger.counts_by_state(exp_id)
        intents = ledger.db.execute("SELECT COUNT(*) FROM submissions WHERE exp_id = ? AND "
                                    "state = 'INTENT'", [exp_id]).fetchone()[0]
        active = sum(n for s, n in counts.items() if s not in TERMINAL_STATES)
        if not active and not intents and counts:
            state = "FINISHED" if set(counts) == {"COMPLETED"} else "FINISHED_WITH_FAILURES"
            failed = sum(n for s, n in counts.items() if s != "COMPLETED")
            if current != state:
                ledger.set_experiment_state(exp_id, state,
                                            f"{failed} run(s) did not complete" if failed else None)
                ctx.summary.finished.append(f"{exp_id} ({state})")
        elif current in FINISHED_EXPERIMENT_STATES or (
                current == "SUBMITTING" and not intents and not counts.get("PLANNED")):
            ledger.set_experiment_state(exp_id, "SUBMITTED", "runs in the queue again"
                                        if current in FINISHED_EXPERIMENT_STATES else None)

