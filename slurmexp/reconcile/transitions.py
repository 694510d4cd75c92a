"""What one attempt's records do to it: its new state, columns and reason, Slurm's own requeue as
a new attempt of the run, LOST once a job has been in neither sacct nor squeue for the grace
period, STALLED when a RUNNING one shows no life (`liveness`). Each attempt's change, its event
and its run's retry decision are one transaction.
"""
from __future__ import annotations

import json
import sqlite3
from collections import defaultdict

from slurmexp import layout, tags
from slurmexp.backends.facts import SacctRow
from slurmexp.ledger import Ledger
from slurmexp.ledger.rows import ActiveAttempt
from slurmexp.metrics import read_metrics
from slurmexp.reconcile.attempt_files import _attempt_dir, _tail_for
from slurmexp.reconcile.context import PassContext
from slurmexp.reconcile.dependency import apply_dependency
from slurmexp.reconcile.liveness import apply_liveness
from slurmexp.reconcile.match import (
    Match,
    attempt_fields,
    closed_after_state_loss,
    failure_reason,
    is_incomplete,
    row_key,
    state_loss_reason,
    storage_failure,
)
from slurmexp.reconcile.policy import NOT_RETRIED, RetryPolicy
from slurmexp.reconcile.resubmit import preview_retry, schedule_retry
from slurmexp.states import (
    CHECKPOINTED,
    COMPLETED,
    CONTINUABLE_STATES,
    INFRASTRUCTURE,
    LOST,
    PENDING,
    PROGRESS,
    RUNNING,
    SLURM_REQUEUES_STATES,
    TERMINAL_STATES,
    classify,
    ledger_state,
)
from slurmexp.timeutil import parse_ts, utc_iso

# Allocation states a slurmctld outage can give a job that had ended by itself: the batch step
# and the attempt's own exit_code file win over them when both say it succeeded.
CONTRADICTED_STATES = frozenset({"TIMEOUT", "NODE_FAIL"})
# A job that left both sacct and squeue but whose task wrote its attempt files ran: wait this
# many grace periods for accounting before calling it lost.
EVIDENCE_FACTOR = 12
# An attempt `slurmexp cancel` marked CANCELLED is watched this long (at least) for its final
# record: a task that ended by itself before the scancel reached it keeps sacct's state.
CANCEL_WATCH_S = 3600
# Plain attempt changes written per transaction (write_transitions): a 2,000-task array is one.
WRITE_CHUNK = 5000


# ------------------------------------------------------------------------------------------
# Small helpers


def chunk_job_name(exp_id: str, chunk: int | None) -> str | None:
    """The tag launch gave a chunk's job; None for a submission that is not a chunk."""
    return None if chunk is None else tags.job_name(exp_id, chunk)


def _differs(old: dict, new: dict) -> bool:
    for k, v in new.items():
        o = old.get(k)
        if o is v or (type(o) is type(v) and o == v):      # most columns of most passes
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

# --- transitions --------------------------------------------------------------------------


def _checkpointed(ctx: PassContext, a: ActiveAttempt, fields: dict, reason: str | None
                  ) -> tuple[str | None, str | None]:
    """(failure class, reason) of an attempt that ended after its [checkpoint] signal.

    With `requeue`, an attempt that ended TIMEOUT, PREEMPTED or FAILED after its task script
    recorded a signal (layout.SIGNALLED) is CHECKPOINTED: the run continues from its checkpoint
    as its next attempt (see policy.decide_retry), unless the command wrote why it must not
    (layout.NOT_CONTINUED) or the run has no attempts left. Otherwise nothing changes."""
    fclass = fields.get("failure_class")
    exp = ctx.exps.get(a.exp_id)
    ckpt = exp["settings"].checkpoint if exp else None
    if ckpt is None or not ckpt.requeue or fields.get("state") not in CONTINUABLE_STATES:
        return fclass, reason
    folder = _attempt_dir(ctx.ledger, a)
    signals = layout.signals_received(folder)
    if not signals:
        return fclass, reason
    got = f"received SIG{signals[0]}"
    refused = layout.not_continued(folder)
    if refused:
        return fclass, f"{reason}; {got}, not continued: {refused}" if reason else refused
    policy = RetryPolicy.for_chunk(exp["settings"], a.run_chunk)
    if int(a.attempt_no) >= policy.max_attempts:
        return fclass, reason        # decide_retry says "no retries left" for the real class
    fields["failure_class"] = CHECKPOINTED
    return CHECKPOINTED, f"{reason}; {got}" if reason else got


def final_metrics(a: ActiveAttempt) -> str | None:
    """The run's metrics summary (`read_metrics`, "{}" without one) as JSON, read as the
    attempt is recorded final and stored with that state (`attempts.metrics_json`), so a
    report need not open the file; None for a run without a folder."""
    return json.dumps(read_metrics(a.run_dir) or {}) if a.run_dir else None


def _changed_under_us(ledger: Ledger, a: ActiveAttempt) -> bool:
    """Inside the write transaction: whether the attempt left the state this pass read."""
    return ledger.attempt_state(a.attempt_id) != a.state


def cancel_watch_s(grace_s: float) -> float:
    return max(CANCEL_WATCH_S, grace_s * EVIDENCE_FACTOR)


def _confirm_cancel(ctx: PassContext, a: ActiveAttempt, rec: SacctRow | None) -> bool:
    """An attempt `slurmexp cancel` marked CANCELLED, once its final record is in. A CANCELLED
    record fills in its columns (the cancel's reason stays); any other final state means the
    task had ended by itself before the scancel reached it, and sacct's state wins (not
    retried: the experiment is cancelled). Until then: wait, never LOST."""
    if rec is None or not rec.known_state or rec.state not in TERMINAL_STATES \
            or is_incomplete(rec):
        return False
    if rec.state == "CANCELLED":
        fields, reason = attempt_fields(rec), None
    else:
        fields, reason, _ = _record_fields(ctx, a, rec, False, in_queue=False)
        reason = (f"{reason}; " if reason else "") + "it had ended before `slurmexp cancel` reached it"
        ctx.summary.moved_to(fields["state"], a.exp_id)
        ctx.summary.act(f"{a.exp_id} {a.run_id} job {a.job_key}: CANCELLED -> {fields['state']} "
                        f"(sacct: it had ended before the cancel)")
    if not ctx.dry_run:
        fields["metrics_json"] = final_metrics(a)
        ctx.writes.append((a, reason, fields))
    return True


def _transition(ctx: PassContext, a: ActiveAttempt, match: Match, queued_keys: set[str]) -> bool:
    """Apply what Slurm says about one attempt (and its requeues) in one transaction; a change
    with no requeue and no retry to decide goes to `ctx.writes`, for `write_transitions`."""
    rec = match.rows.get(a.attempt_id)
    if a.state == "CANCELLED":           # marked by `slurmexp cancel`, not yet confirmed
        return _confirm_cancel(ctx, a, rec)
    later = match.requeues.get(a.attempt_id, [])
    if a.state in SLURM_REQUEUES_STATES:     # watched while its retry waits (requeue_watch)
        return _requeue_seen(ctx, a, later, queued_keys)
    if rec is None:
        return _unmatched(ctx, a, later, queued_keys)
    return _apply(ctx, a, rec, later, match.submit_times.get(a.attempt_id), queued_keys)


def _record_fields(ctx: PassContext, a: ActiveAttempt, rec: SacctRow, superseded: bool,
                   in_queue: bool) -> tuple[dict, str | None, str | None]:
    """(fields, reason, failure class) for an attempt from its record.

    `unlisted_since` is set while sacct says the job is going and the controller does not list
    it, and cleared otherwise: that clock, not the reason's text, decides LOST.
    """
    fields = {**attempt_fields(rec), "unlisted_since": None}
    if not rec.known_state:
        state = rec.state
        reason = f"unknown Slurm state {rec.state_raw or rec.state}; kept and watched"
        return {**fields, "state": state, "failure_class": "unknown"}, reason, "unknown"
    if closed_after_state_loss(rec):
        fields.pop("exit_code", None)           # it never ran
        return ({**fields, "state": LOST, "failure_class": INFRASTRUCTURE},
                state_loss_reason(rec), INFRASTRUCTURE)
    if rec.state in CONTRADICTED_STATES and rec.batch_state == COMPLETED \
            and rec.batch_exit_code == 0 and not rec.batch_signal:
        folder = _attempt_dir(ctx.ledger, a)
        if layout.exit_code_written(folder) == 0 and not layout.signals_received(folder):
            # After a slurmctld outage the controller can close a job that had ended by itself
            # (its batch script exited 0, and so did the command) as TIMEOUT or NODE_FAIL.
            return ({**fields, "state": COMPLETED, "exit_code": 0, "failure_class": None},
                    f"sacct says {rec.state_raw or rec.state} for the allocation, but its batch "
                    f"step is COMPLETED 0:0 and the attempt's exit_code file says 0 (a "
                    f"controller outage?): recorded as COMPLETED", None)
    state = ledger_state(rec.state)
    fclass = classify(rec.state, rec.exit_code)
    tail = _tail_for(ctx, a) if rec.state in ("FAILED", "OUT_OF_MEMORY") else ""
    reason = failure_reason(rec, tail)
    full = storage_failure(rec, tail, _attempt_dir(ctx.ledger, a)) if rec.state == "FAILED" else None
    if full:                       # a full disk failed it, not the command: retried
        fclass, reason = "infrastructure", full
    if state in ("PENDING", "RUNNING", "SUSPENDED") and not in_queue and ctx.queue_ok \
            and not superseded and not is_incomplete(rec):
        # sacct says it is going, the controller does not know it: it either just ended
        # (accounting lags a moment) or it is a runaway record after a controller state loss.
        since = parse_ts(a.unlisted_since) or ctx.now
        fields["unlisted_since"] = utc_iso(since)
        if (ctx.now - since).total_seconds() >= ctx.grace_s:
            return ({**fields, "state": "LOST", "failure_class": "infrastructure"},
                    f"LOST: sacct says {rec.state} but the controller has not listed the job "
                    f"since {utc_iso(since)} (a runaway record after a controller state loss?)",
                    "infrastructure")
        reason = (f"probably just ended: the controller no longer lists the job and sacct "
                  f"still says {rec.state} (accounting lags; normal for a minute, LOST only "
                  f"if it stays so, seen since {utc_iso(since)})")
    return {**fields, "state": state, "failure_class": fclass}, reason, fclass


def _apply(ctx: PassContext, a: ActiveAttempt, rec: SacctRow, later: list[SacctRow],
           submit_time: str | None, queued_keys: set[str]) -> bool:
    ledger, summary = ctx.ledger, ctx.summary
    key = a.job_key
    if is_incomplete(rec) and rec.state in TERMINAL_STATES and not later:
        end = parse_ts(rec.end) or ctx.now
        if (ctx.now - end).total_seconds() < ctx.grace_s:
            # Final, but slurmdbd has only its placeholder record yet (no partition, QOS,
            # ReqMem): a later pass records the complete one.
            summary.act(f"{a.exp_id} {a.run_id} job {key}: {rec.state}; waiting for "
                        f"its complete accounting record")
            return False
    fields, reason, fclass = _record_fields(ctx, a, rec, bool(later),
                                            in_queue=key in queued_keys or bool(later))
    if submit_time and not a.submit_time:
        fields["submit_time"] = submit_time
    state = fields["state"]
    if state in TERMINAL_STATES and not later:
        fclass, reason = _checkpointed(ctx, a, fields, reason)
    if state in PROGRESS and a.state in PROGRESS and PROGRESS[state] < PROGRESS[a.state]:
        # The same record cannot go back (a requeue is a new record): accounting lags.
        state = fields["state"] = a.state
        reason = a.reason
        fields["unlisted_since"] = a.unlisted_since
    if state == RUNNING and not later and not fields.get("unlisted_since"):
        reason, fclass = apply_liveness(ctx, a, fields, reason, _attempt_dir(ledger, a))
        state = fields["state"]
    if state == PENDING and not later:
        reason, fclass = apply_dependency(ctx, a, fields, reason, rec.reason)
        state = fields["state"]
    if not rec.known_state:
        summary.flagged.append(f"{a.exp_id} {a.run_id} job {key}: {reason}")
    old_cols = {k: getattr(a, k) for k in fields}
    # No reason keeps the recorded one (update_attempt): sacct's going blank is no change.
    changes = _differs(old_cols, fields) or bool(reason) and reason != a.reason
    if not changes and not later:
        return False
    if state != a.state:
        summary.moved_to(state, a.exp_id)
        summary.act(f"{a.exp_id} {a.run_id} job {key}: {a.state} -> {state}"
                    + (f" ({reason})" if reason else ""))
    if state == "LOST":
        summary.lost += 1
    for r in later:
        summary.requeued += 1
        summary.act(f"{a.exp_id} {a.run_id} job {key}: requeued by Slurm "
                    f"(submit {r.submit}) -> new attempt")
    if ctx.dry_run:
        if state in TERMINAL_STATES and not later:
            preview_retry(ctx, a, state, fclass, rec)
        return True
    if state in TERMINAL_STATES and not later:
        fields["metrics_json"] = final_metrics(a)
    if not later and "submit_time" not in fields and (state not in TERMINAL_STATES or fclass in NOT_RETRIED):
        # Nothing to decide in its transaction (no requeue, no retry): see write_transitions.
        ctx.writes.append((a, reason, fields))
        return True
    with ledger.transaction():
        if _changed_under_us(ledger, a):
            return False        # a cancel or another writer moved it: the next pass decides
        try:
            with ledger.transaction():
                ledger.update_attempt(a.attempt_id, reason=reason, **fields)
        except sqlite3.IntegrityError:
            # Another attempt already holds (cluster, job key, submit time): keep ours unset.
            fields.pop("submit_time", None)
            ledger.update_attempt(a.attempt_id, reason=reason, **fields)
        prev = a
        for r in later:
            prev = _record_requeue(ctx, prev, r, queued_keys)
        if state in TERMINAL_STATES and not later:
            schedule_retry(ctx, a, state, fclass, reason, rec)
    return True


def write_transitions(ctx: PassContext) -> None:
    """`ctx.writes`, per experiment and WRITE_CHUNK at a time, one transaction each (each change
    with its event and run: `Ledger.update_attempts`, which skips one moved since it was read)."""
    by_exp: dict[str, list] = defaultdict(list)
    for a, reason, fields in ctx.writes:
        by_exp[a.exp_id].append((a.attempt_id, a.state, reason, fields))
    ctx.writes.clear()
    for todo in (by_exp[e] for e in sorted(by_exp)):
        for i in range(0, len(todo), WRITE_CHUNK):
            ctx.ledger.update_attempts(todo[i:i + WRITE_CHUNK])


def _unmatched(ctx: PassContext, a: ActiveAttempt, later: list[SacctRow],
               queued_keys: set[str]) -> bool:
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
            ctx.ledger.update_attempt(a.attempt_id, reason="requeued by Slurm",
                                      state="REQUEUED")
        return True
    if not ctx.queue_ok:
        return False
    ref = parse_ts(a.submit_time) or parse_ts(a.created)
    age = (ctx.now - ref).total_seconds() if ref else float("inf")
    if age < ctx.grace_s:
        return False
    d = _attempt_dir(ctx.ledger, a)
    evidence = d is not None and (d / layout.STARTED).exists()
    if evidence and age < ctx.grace_s * EVIDENCE_FACTOR:
        note = (f"not in sacct or squeue, but the task started (see {d}); waiting for "
                f"accounting to catch up")
        if a.reason != note and not ctx.dry_run:
            ctx.ledger.update_attempt(a.attempt_id, reason=note)
        return False
    reason = (f"LOST: job {a.job_key} is in neither sacct nor squeue {int(age)}s after "
              f"its submission" + (f" (it did start: {d})" if evidence else ""))
    summary.lost += 1
    summary.moved_to("LOST", a.exp_id)
    summary.act(f"{a.exp_id} {a.run_id} job {a.job_key}: {a.state} -> LOST")
    if ctx.dry_run:
        preview_retry(ctx, a, "LOST", "infrastructure", None)
        return True
    with ctx.ledger.transaction():
        if _changed_under_us(ctx.ledger, a):
            return False
        ctx.ledger.update_attempt(a.attempt_id, reason=reason, state="LOST",
                                  failure_class="infrastructure", metrics_json=final_metrics(a))
        schedule_retry(ctx, a, "LOST", "infrastructure", reason, None)
    return True


def _requeue_seen(ctx: PassContext, a: ActiveAttempt, later: list[SacctRow],
                  queued_keys: set[str]) -> bool:
    """A failed attempt whose retry has not gone out: only Slurm's own requeue of its job (a
    later record of the same key) changes anything, and then the run follows the requeue, not
    our retry (which `resubmittable_runs` no longer finds: the run is SUBMITTED again)."""
    if not later:
        return False
    summary = ctx.summary
    for r in later:
        summary.requeued += 1
        summary.act(f"{a.exp_id} {a.run_id} job {a.job_key}: requeued by Slurm after {a.state} "
                    f"(submit {r.submit}) -> new attempt; our retry is not needed")
    if ctx.dry_run:
        return True
    with ctx.ledger.transaction():
        if _changed_under_us(ctx.ledger, a):
            return False
        prev = a
        for r in later:
            prev = _record_requeue(ctx, prev, r, queued_keys)
    return True


def _record_requeue(ctx: PassContext, prev: ActiveAttempt, rec: SacctRow,
                    queued_keys: set[str]) -> ActiveAttempt:
    """Slurm requeued `prev`'s job: a new attempt of the same run (same job key, later submit)."""
    ledger = ctx.ledger
    with ledger.transaction():
        new = prev.successor(ledger.record_requeue(prev.attempt_id, rec.submit))
        fields, reason, fclass = _record_fields(
            ctx, new, rec, False, in_queue=row_key(rec) in queued_keys)
        fields.pop("submit_time", None)
        if fields["state"] in TERMINAL_STATES:
            fclass, reason = _checkpointed(ctx, new, fields, reason)
            fields["metrics_json"] = final_metrics(new)
        ledger.update_attempt(new.attempt_id, reason=reason, **fields)
        if fields["state"] in TERMINAL_STATES:
            schedule_retry(ctx, new, fields["state"], fclass, reason, rec)
    return new
