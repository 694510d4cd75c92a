"""Retries: which failed runs get another attempt, with what resources, and submitting them.

Failure classes (see `states.classify`) decide: infrastructure failures (NODE_FAIL, BOOT_FAIL,
PREEMPTED, LOST) are retried with exponential backoff up to `retry.max_attempts` attempts per
run; an attempt CHECKPOINTED (it received the sweep's [checkpoint] signal and `requeue` is on,
see transitions) is continued at once, without escalation; resource failures (TIMEOUT,
OUT_OF_MEMORY) are final unless the sweep asked to escalate
(then time or memory grows by `escalate_factor` up to the partition's limit); user failures
and unknown states are final.

A retry is decided inside the transaction that records the failed attempt (the run goes back
to PLANNED with the reason), and submitted later, when its backoff is over: only the affected
tasks, one sbatch per chunk and resources, intent -> sbatch -> record as launch does. So a
process killed in between leaves a PLANNED run or an INTENT, both of which the next reconcile
pass finishes. `reconcile.retry` is the same submission asked for by a person.
"""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from slurmexp import arrays, layout
from slurmexp.backends.base import kind_names
from slurmexp.backends.facts import SacctRow
from slurmexp.launch.submission import REFUSED, UNANSWERED, ChunkOutcome, ChunkRequest, stamp_submit_times, submit_chunk
from slurmexp.ledger import Ledger
from slurmexp.ledger.rows import ActiveAttempt, PlannedRun
from slurmexp.reconcile.context import PassContext
from slurmexp.reconcile.policy import (
    Escalation,
    RetryDecision,
    RetryPolicy,
    decide_retry,
    escalation_for,
)
from slurmexp.settings import ExperimentSettings
from slurmexp.states import (
    CHECKPOINTED,
    SLURM_REQUEUES_STATES,
    STOPPED_EXPERIMENT_STATES,
    TERMINAL_STATES,
)
from slurmexp.timeutil import parse_ts, utc_iso

# A retry of an attempt Slurm may requeue (states.SLURM_REQUEUES_STATES) waits at least this long
# after the attempt ended, whatever its backoff, and goes out only when the pass's squeue no
# longer lists the job: Slurm requeues in the controller as the job ends, so a queue read this
# much later shows the requeue if there was one (clock skew between nodes included).
REQUEUE_SETTLE_S = 15

# ------------------------------------------------------------------------------------------
# Reading the ledger


def tracked_experiments(ledger: Ledger) -> dict[str, dict]:
    """Every experiment by id, with its `settings` (the pass groups them by backend kind and
    cluster, and asks only about the kinds the registry says are reconciled)."""
    out = {}
    for e in ledger.experiments():
        e["settings"] = ExperimentSettings.from_json(e.get("settings_json"))
        out[e["exp_id"]] = e
    return out


def policy_of(ctx: PassContext, exp_id: str, chunk: int | None) -> RetryPolicy:
    """The retry policy of the resource group a chunk belongs to."""
    exp = ctx.exps.get(exp_id)
    return RetryPolicy.for_chunk(exp["settings"], chunk) if exp else RetryPolicy()


def _chunk_script(ledger: Ledger, exp: dict, chunk: int | None) -> tuple[Path | None, str | None]:
    """(script path, the chunk's first array spec) for a chunk of an experiment."""
    first = ledger.first_chunk_submission(exp["exp_id"], chunk)
    if first is not None:
        return Path(first.script_path), first.array_spec
    if exp.get("exp_dir") and chunk is not None:
        return layout.ExperimentPaths(exp["exp_dir"]).script(chunk), None
    return None, None


def _history(ledger: Ledger, exp_id: str, run_id: str) -> list[str]:
    """The states of a run's attempts, oldest first."""
    return ledger.attempt_states(exp_id, run_id)


# ------------------------------------------------------------------------------------------
# Deciding, as attempts end


def _escalation_history(ledger: Ledger, exp_id: str, run_id: str, history: list[str]) -> list[str]:
    """`history` less the attempts continued from a checkpoint: a TIMEOUT that saved its state
    and went on says nothing about the time a run needs."""
    kept = [x.failure_class != CHECKPOINTED for x in ledger.run_attempts(exp_id, run_id)]
    if len(kept) != len(history):
        return history
    return [s for s, keep in zip(history, kept) if keep]


def _decide(ctx: PassContext, a: ActiveAttempt, state: str, fclass: str | None,
            history: list[str], rec: SacctRow | None) -> RetryDecision:
    policy = policy_of(ctx, a.exp_id, a.run_chunk)
    if policy.continue_checkpointed and fclass != CHECKPOINTED:
        history = _escalation_history(ctx.ledger, a.exp_id, a.run_id, history)
    end = parse_ts(rec.end) if rec is not None else None
    return decide_retry(policy, state, fclass, int(a.attempt_no), history, end, ctx.now)


def schedule_retry(ctx: PassContext, a: ActiveAttempt, state: str, fclass: str | None,
                   reason: str | None, rec: SacctRow | None) -> None:
    """Inside the attempt's transaction: move the run back to PLANNED when a retry is due."""
    ledger = ctx.ledger
    n_attempts = ledger.run_n_attempts(a.exp_id, a.run_id)
    if n_attempts is None or n_attempts != int(a.attempt_no):
        return          # a newer attempt (a requeue, a retry) already carries the run
    if ledger.experiment_state(a.exp_id) in STOPPED_EXPERIMENT_STATES:
        return          # cancelled (or refused): a run that ended meanwhile is not retried
    decision = _decide(ctx, a, state, fclass, _history(ledger, a.exp_id, a.run_id), rec)
    if decision.retry:
        why = f"{decision.note} after {reason or state}"
        if decision.due and decision.due > ctx.now:
            why += f" (not before {utc_iso(decision.due)})"
        ledger.set_run_state(a.exp_id, [a.run_id], "PLANNED", why)
        ctx.summary.retries_scheduled += 1
        ctx.summary.act(f"{a.exp_id} {a.run_id}: {why}")
    elif decision.note:
        full = f"{reason}; {decision.note}" if reason else decision.note
        ledger.update_attempt(a.attempt_id, reason=full)


def preview_retry(ctx: PassContext, a: ActiveAttempt, state: str, fclass: str | None,
                  rec: SacctRow | None) -> None:
    """`schedule_retry` for a dry run: count and say what it would do, write nothing."""
    if int(a.run_n_attempts or 0) != int(a.attempt_no):
        return
    history = _history(ctx.ledger, a.exp_id, a.run_id)[:-1] + [state]
    decision = _decide(ctx, a, state, fclass, history, rec)
    if decision.retry:
        ctx.summary.retries_scheduled += 1
        ctx.summary.act(f"{a.exp_id} {a.run_id}: would schedule {decision.note}")


# ------------------------------------------------------------------------------------------
# Submitting what is due


def open_intent_tasks(ledger: Ledger) -> dict[tuple[str, Any], set[int] | None]:
    """(exp, chunk) -> task indices covered by INTENT submissions (None: the whole chunk)."""
    out: dict[tuple[str, Any], set[int] | None] = {}
    for s in ledger.intents():
        key = (s.exp_id, s.chunk)
        tasks = arrays.task_set(s.array_spec)
        if tasks is None or out.get(key, set()) is None:
            out[key] = None
        else:
            out[key] = (out.get(key) or set()) | tasks
    return out


def resubmittable_runs(ctx: PassContext, only_exp: str | None = None) -> list[PlannedRun]:
    """PLANNED runs that reconcile submits: retries, and the runs of a launch that stopped.

    A run of a launch (no attempt yet) only once the launch is over: its experiment is still
    SUBMITTING and nothing was written for it for `grace_s` (sbatch gives up after 60 s).
    """
    ledger = ctx.ledger
    covered = open_intent_tasks(ledger)
    out = []
    for r in ledger.resubmittable_runs(kind_names(retried=True)):
        if only_exp and r.exp_id != only_exp:
            continue
        if r.exp_id not in ctx.exps:
            continue
        tasks = covered.get((r.exp_id, r.chunk), set())
        if tasks is None or (r.task_index is not None and r.task_index in tasks):
            continue
        if r.n_attempts == 0 and not only_exp:
            last = parse_ts(r.last_intent) or parse_ts(r.exp_created)
            if last is not None and (ctx.now - last).total_seconds() < ctx.grace_s:
                continue
        out.append(r)
    return out


@dataclass
class _RetryItem:
    run: PlannedRun
    due: datetime
    escalation: Escalation


def _retry_items(ctx: PassContext, runs: list[PlannedRun],
                 ignore_backoff: bool = False) -> list[_RetryItem]:
    ledger = ctx.ledger
    items = []
    for r in runs:
        policy = policy_of(ctx, r.exp_id, r.chunk)
        due = ctx.now
        n_timeouts = n_ooms = 0
        if r.n_attempts:
            attempts = ledger.run_attempts(r.exp_id, r.run_id)
            newest = attempts[-1] if attempts else None
            if newest is not None and newest.state not in TERMINAL_STATES:
                continue        # still going (it cannot be PLANNED then; be safe)
            n_timeouts = sum(1 for x in attempts
                             if x.state == "TIMEOUT" and x.failure_class != CHECKPOINTED)
            n_ooms = sum(1 for x in attempts if x.state == "OUT_OF_MEMORY")
            if newest is not None and newest.job_key and newest.job_key in ctx.queue_reasons:
                # The controller still holds that job (completing, or Slurm requeued it itself
                # and the record of the requeue has not been matched yet): a retry now could
                # run the task twice. The attempt is watched (requeue_watch); a later pass decides.
                ctx.summary.act(f"{r.exp_id} {r.run_id}: retry held: job {newest.job_key} "
                                f"is still in the queue (after {newest.state}: requeued by "
                                f"Slurm?); a reconcile pass submits it once the controller "
                                f"no longer lists it")
                continue
            if newest is not None and newest.failure_class == "infrastructure" \
                    and not ignore_backoff:
                end = parse_ts(newest.end_time) or parse_ts(newest.updated) or ctx.now
                due = end + timedelta(seconds=policy.backoff(newest.attempt_no))
                if newest.state in SLURM_REQUEUES_STATES:
                    # Only a queue read taken after the controller had time to put the job
                    # back proves that it did not.
                    due = max(due, end + timedelta(seconds=REQUEUE_SETTLE_S))
        items.append(_RetryItem(r, due, escalation_for(policy, n_timeouts, n_ooms)))
    return items


def submit_due(ctx: PassContext, runs: list[dict] | None = None, ignore_backoff: bool = False,
               sub_ids: list[int] | None = None,
               failures: list[ChunkOutcome] | None = None) -> set[str]:
    """Submit the PLANNED runs whose retry is due: one sbatch per (chunk, resources).
    `sub_ids` and `failures` collect the new submissions and the refused or unanswered ones."""
    ledger, summary = ctx.ledger, ctx.summary
    runs = resubmittable_runs(ctx) if runs is None else runs
    items = _retry_items(ctx, runs, ignore_backoff)
    groups: dict[tuple, list[_RetryItem]] = defaultdict(list)
    for item in items:
        if item.due > ctx.now:
            continue
        r = item.run
        groups[(r["exp_id"], r["chunk"], item.escalation.time_min,
                item.escalation.mem_mb)].append(item)
    touched: set[str] = set()
    outcomes: list[ChunkOutcome] = []
    for (exp_id, chunk, _, _), group in sorted(groups.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        exp = ctx.exps[exp_id]
        script, first_spec = _chunk_script(ledger, exp, chunk)
        tasks = [g.run["task_index"] for g in group if g.run["task_index"] is not None]
        run_ids = [g.run["run_id"] for g in group]
        # The chunk's own share of array_parallelism (arrays.split_throttle), as first submitted.
        throttle = arrays.throttle(first_spec) or exp["settings"].group_of(chunk).throttle
        spec = arrays.format_spec(tasks, throttle)
        extra = [f"--array={spec}", *group[0].escalation.args()]
        label = f"{exp_id} chunk {chunk}: sbatch {' '.join(extra)} {script}"
        if ctx.dry_run:
            summary.act(f"would submit {label} ({len(group)} run(s))")
            summary.retries_submitted += len(group)
            continue
        if script is None or not script.is_file() or not tasks:
            why = f"cannot resubmit: the chunk script {script} is missing"
            _give_up(ctx, exp_id, group, why)
            summary.warnings.append(f"{exp_id} chunk {chunk}: {why}")
            continue
        cwd = Path(exp["exp_dir"]) if exp.get("exp_dir") and Path(exp["exp_dir"]).is_dir() else None
        t = time.monotonic()
        outcome = submit_chunk(ledger, ctx.slurm(), ChunkRequest(
            exp_id, chunk, spec, len(tasks), script, exp.get("cluster"), tuple(extra), cwd))
        summary.sbatch_s += time.monotonic() - t
        if outcome.status == UNANSWERED:
            # The job may exist: the intent stays for the next pass to adopt (or close).
            summary.error = f"sbatch: {outcome.message}"
            summary.exit_code = outcome.error.exit_code
            if failures is not None:
                failures.append(outcome)
            summary.act(f"submit {label}: sbatch did not answer; intent {outcome.sub_id} left to adopt")
            break
        if outcome.status == REFUSED:
            if failures is not None:
                failures.append(outcome)
            _give_up(ctx, exp_id, group, f"retry refused by sbatch: {outcome.message}")
            summary.warnings.append(f"{label}: refused: {outcome.message}")
            continue
        outcomes.append(outcome)
        if sub_ids is not None:
            sub_ids.append(outcome.sub_id)
        summary.retries_submitted += len(group)
        summary.retry_jobs.append(outcome.job_id)
        summary.act(f"submitted {label} -> job {outcome.job_id} ({len(group)} run(s): "
                    f"{', '.join(run_ids[:5])}{' ...' if len(run_ids) > 5 else ''})")
        touched.add(exp_id)
    if outcomes:
        stamp_submit_times(ledger, ctx.slurm(), outcomes)
    return touched


def _give_up(ctx: PassContext, exp_id: str, group: list[_RetryItem], why: str) -> None:
    """A retry that cannot be submitted: the run takes its last attempt's state back."""
    ledger = ctx.ledger
    with ledger.transaction():
        for item in group:
            run_id = item.run["run_id"]
            history = _history(ledger, exp_id, run_id)
            ledger.set_run_state(exp_id, [run_id], history[-1] if history else "PLANNED", why)
