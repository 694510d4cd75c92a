"""Bring the ledger up to date with what Slurm did, retry what the cluster broke, and say so.

One reconcile pass (run by cron every few minutes, or by hand) does, in this order:

1. takes a non-blocking lock next to the ledger, so overlapping passes never act twice;
2. asks each cluster once: one sacct call for every active attempt of the cluster's
   experiments (plus one by job name when a launch died between sbatch and the ledger write)
   and one squeue call, through the scheduler the factory builds for the experiments' backend
   kind and cluster (`backends.base`; only kinds the registry marks `reconciled`). Nothing is
   written for a cluster until all of its answers are in, so a daemon that does not answer
   (SlurmUnavailable) changes nothing there, and the other clusters go on;
3. adopts jobs whose submission is still INTENT (found by their tag `sx.<exp>.<chunk>`);
4. matches sacct rows to attempts on (cluster, job key, submit time) (`records.match_rows`):
   job ids are reused after a controller state loss, so a row with another submit time is
   another job, and a row with the same key and a later submit time is Slurm's own requeue of
   the job, recorded as a NEW attempt of the same run;
5. writes each attempt's transition, with its event and the retry decision, in one transaction
   (those with no retry to decide and no requeue all together, per experiment: `transitions`);
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
import time
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

from slurmexp.backends.base import find_kind, kind_names
from slurmexp.backends.facts import SacctRow
from slurmexp.errors import SlurmexpError, SlurmUnavailable
from slurmexp.ledger import Ledger
from slurmexp.ledger.rows import ActiveAttempt, Submission
from slurmexp.reconcile.adopt import _resolve_intents
from slurmexp.reconcile.context import EXIT_ERROR, PassContext, PassSummary, pass_lock, remote_key
from slurmexp.reconcile.match import match_rows, queue_reasons, queue_record
from slurmexp.reconcile.notify import notify_finished
from slurmexp.reconcile.remote_reads import is_remote, read_remote
from slurmexp.reconcile.resubmit import resubmittable_runs, submit_due, tracked_experiments
from slurmexp.reconcile.transitions import _transition, cancel_watch_s, chunk_job_name, write_transitions
from slurmexp.states import FINISHED_EXPERIMENT_STATES, STOPPED_EXPERIMENT_STATES, TERMINAL_STATES
from slurmexp.timeutil import parse_ts, sacct_time, utc_iso

HEARTBEAT_KIND = "reconcile"
HEARTBEAT_LIST_LIMIT = 20
# sacct -S: searched from the oldest active attempt minus this, never from all history (job
# ids are reused after a controller reset).
SINCE_MARGIN_S = 300

# ------------------------------------------------------------------------------------------
# Reading the ledger


def _active_attempts(ledger: Ledger, cluster: str | None,
                     cancelled_since: str | None = None) -> list[ActiveAttempt]:
    """The attempts a pass asks Slurm about: every active one, those `slurmexp cancel`
    marked since `cancelled_since` whose final record has not been seen (transitions), and
    the failed ones Slurm may still requeue while their retry waits (`requeue_watch`)."""
    out = []
    kinds = kind_names(reconciled=True)
    found = ledger.active_attempts(kinds)
    if cancelled_since:
        found += ledger.unconfirmed_cancels(cancelled_since, kinds)
    found += ledger.requeue_watch(kinds)
    for a in found:
        if cluster and a.cluster and a.cluster != cluster:
            continue
        # A record Slurm replaced by a requeue is final once its successor exists.
        if a.state in ("REQUEUED",) and a.attempt_no < a.run_n_attempts:
            continue
        out.append(a)
    return out


def _intents(ledger: Ledger, exps: dict[str, dict], cluster: str | None) -> list[Submission]:
    out = []
    for s in ledger.intents():
        if s.exp_id not in exps:
            continue
        if cluster and s.cluster and s.cluster != cluster:
            continue
        out.append(s)
    return out


# ------------------------------------------------------------------------------------------
# The pass


def reconcile_pass(ledger: Ledger, backend: Any = None, *, dry_run: bool = False,
                   now: datetime | None = None, grace_s: float = 300,
                   transport: Any = None) -> PassSummary:
    """One reconcile pass over every reconciled experiment of the ledger (see the module doc).

    Each cluster is asked through the scheduler the factory builds for it (its commands run
    through `transport`, default this machine); a `backend` given instead is used for every
    experiment on its cluster (all of them when it names none).
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
        ctx = PassContext(ledger, backend, summary, now, grace_s, dry_run, transport=transport)
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
        if not dry_run:
            _notify(ledger, summary)
        summary.seconds = time.monotonic() - started
        if not dry_run:
            ledger.record_heartbeat(HEARTBEAT_KIND, summary.ok, summary.to_dict(HEARTBEAT_LIST_LIMIT))
    return summary


def _notify(ledger: Ledger, summary: PassSummary) -> None:
    """[notify] commands of experiments that finished (reconcile.notify); never fails the pass."""
    try:
        notify_finished(ledger, summary)
    except Exception as exc:  # noqa: BLE001 - a notification must not cost the pass
        summary.warnings.append(f"[notify]: {type(exc).__name__}: {exc}")


def refresh_pass(ledger: Ledger) -> list[str]:
    """`slurmexp status --refresh`: one pass before the table is shown. Returns what the user
    should be told (a pass that did not run or failed): the table is shown all the same."""
    summary = reconcile_pass(ledger)
    if summary.skipped:
        return ["refresh: another reconcile pass is running; the states are those it left so far"]
    if summary.error:
        return [f"refresh: the reconcile pass failed: {summary.error}; the states are those of "
                f"the last pass that did not"]
    return []


def _run_pass(ctx: PassContext) -> None:
    """Each (backend kind, cluster) in turn, asked once; an error of one does not stop the others."""
    groups = _scheduler_groups(ctx, tracked_experiments(ctx.ledger))
    summary = ctx.summary
    errors: list[str] = []
    for (kind, cluster, _remote), exps in groups:
        ctx.kind, ctx.cluster, ctx.exps, ctx.queue_ok = kind, cluster, exps, True
        summary.error = None
        try:
            _reconcile_cluster(ctx)
        except SlurmexpError as exc:
            summary.error = exc.message
            summary.exit_code = exc.exit_code
        if summary.error:
            errors.append(summary.error if len(groups) == 1 else f"{cluster or kind}: {summary.error}")
    summary.error = "; ".join(errors) or None


def _scheduler_groups(ctx: PassContext, exps: dict[str, dict]) -> list[tuple[tuple, dict]]:
    """The experiments by the (kind, cluster, login node) asked about them, for kinds that are
    reconciled (the login node: `[remote]` as launched, None for this machine's Slurm).

    A scheduler given to the pass asks its own cluster: experiments of another cluster are left
    for a pass that asks theirs; one that names no cluster is asked about every experiment."""
    given = ctx.backend
    only = getattr(given, "cluster", None) if given is not None else None
    groups: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for exp_id, exp in exps.items():
        kind = find_kind(exp.get("backend"))
        if kind is None:
            ctx.summary.warnings.append(f"{exp_id}: unknown backend {exp.get('backend')!r}; not reconciled")
            continue
        if not kind.reconciled:
            continue
        cluster = exp.get("cluster") or None
        if given is not None:
            if only and cluster and cluster != only:
                continue
            cluster = only
        settings = exp.get("settings")
        remote = remote_key(settings.remote if settings is not None and given is None else None)
        groups[(kind.kind, cluster, remote)][exp_id] = exp
    return sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or "", str(kv[0][2] or "")))


def _reconcile_cluster(ctx: PassContext) -> None:
    """The pass for the experiments `ctx.exps` of one (kind, cluster): one batched sacct (plus
    one by name for intents) and at most one squeue."""
    ledger, summary, cluster = ctx.ledger, ctx.summary, ctx.cluster
    active = _cluster_active(ctx)
    intents = _intents(ledger, ctx.exps, cluster)
    pending = resubmittable_runs(ctx)
    summary.active += _n_going(active)
    if not active and not intents and not pending:
        _update_experiments(ctx, set(ctx.exps))
        return
    backend = ctx.scheduler()

    # --- ask Slurm everything first; nothing is written before all answers are in --------
    rows: list[SacctRow] = []
    name_rows: list[SacctRow] = []
    queue: list[Any] = []
    if is_remote(backend) and (active or intents):
        # Over SSH: sacct, squeue and the attempts' files in one round trip, mirrored here.
        names = sorted({n for s in intents if (n := chunk_job_name(s.exp_id, s.chunk))})
        t = time.monotonic()
        rows, name_rows, queue = read_remote(
            ctx, backend, active, intents,
            since=_since([parse_ts(a.submit_time) or parse_ts(a.created) for a in active], ctx.now)
            if active else None,
            names=names, names_since=_since([parse_ts(s.created) for s in intents], ctx.now) if intents else None)
        summary.sacct_s += time.monotonic() - t
    else:
        asked = _start_queue(backend) if active or intents else None
        try:
            rows, name_rows = _accounting(ctx, backend, active, intents)
            if asked is not None:
                t = time.monotonic()
                try:
                    queue = asked.rows()
                except SlurmUnavailable as exc:
                    # sacct answered, the controller did not: record what accounting says, but
                    # decide nothing that needs the queue (LOST, dead intents), submit nothing.
                    ctx.queue_ok = False
                    summary.error = f"squeue: {exc.message}"
                    summary.exit_code = exc.exit_code
                summary.squeue_s += time.monotonic() - t
        finally:
            if asked is not None:
                asked.close()
    queue_records = [queue_record(q) for q in queue]

    # --- orphans: INTENT submissions -----------------------------------------------------
    if intents:
        changed = _resolve_intents(ctx, intents, name_rows, queue_records)
        if changed and not ctx.dry_run:
            before = _n_going(active)
            active = _cluster_active(ctx)
            summary.active += _n_going(active) - before
    # --- match and transition ------------------------------------------------------------
    match = match_rows(active, [*rows, *name_rows], queue_records)
    # The controller's pending reason is current; sacct's is the one the job was submitted with.
    ctx.queue_reasons = queue_reasons(queue_records)
    queued_keys = set(ctx.queue_reasons)
    touched: set[str] = set()
    for a in active:
        if _transition(ctx, a, match, queued_keys):
            touched.add(a.exp_id)
    write_transitions(ctx)
    # --- retries -------------------------------------------------------------------------
    if ctx.queue_ok:
        touched |= submit_due(ctx)
    _update_experiments(ctx, touched | {a.exp_id for a in active} | {
        s.exp_id for s in intents})


def _accounting(ctx: PassContext, backend: Any, active: list[ActiveAttempt],
                intents: list[Submission]) -> tuple[list[SacctRow], list[SacctRow]]:
    """The pass's sacct rows: one batched query by id for the active attempts, one by name
    for the open intents' chunks."""
    rows: list[SacctRow] = []
    name_rows: list[SacctRow] = []
    if active:
        since = _since([parse_ts(a.submit_time) or parse_ts(a.created) for a in active], ctx.now)
        job_ids = sorted({str(a.job_id) for a in active if a.job_id})
        array_ids = sorted({str(a.job_id) for a in active if a.task_index is not None})
        t = time.monotonic()
        rows = backend.accounting(job_ids, since=since, array_ids=array_ids)
        ctx.summary.sacct_s += time.monotonic() - t
    names = sorted({n for s in intents if (n := chunk_job_name(s.exp_id, s.chunk))})
    if names:
        since = _since([parse_ts(s.created) for s in intents], ctx.now)
        t = time.monotonic()
        name_rows = backend.accounting([], since=since, names=names)
        ctx.summary.sacct_s += time.monotonic() - t
    return rows, name_rows


class _QueueLater:
    """The queue of a scheduler that cannot start squeue early (`SlurmBackend.start_queue`):
    asked when its rows are read, after sacct, as before."""

    def __init__(self, backend: Any):
        self._backend = backend

    def rows(self) -> list[Any]:
        return self._backend.queue()

    def close(self) -> None:
        pass


def _start_queue(backend: Any) -> Any:
    """squeue started now (it runs while sacct does), or asked later where it cannot be."""
    start = getattr(backend, "start_queue", None)
    return start() if start is not None else _QueueLater(backend)


def _n_going(attempts: list[ActiveAttempt]) -> int:
    """The summary's active count: the watched failed or cancelled attempts are not going."""
    return sum(1 for a in attempts if a.state not in TERMINAL_STATES)


def _cluster_active(ctx: PassContext) -> list[ActiveAttempt]:
    since = utc_iso(ctx.now - timedelta(seconds=cancel_watch_s(ctx.grace_s)))
    return [a for a in _active_attempts(ctx.ledger, ctx.cluster, since) if a.exp_id in ctx.exps]


def _since(times: Iterable[datetime | None], now: datetime) -> str:
    known = [t for t in times if t is not None]
    oldest = min(known) if known else now - timedelta(days=7)
    return sacct_time(oldest - timedelta(seconds=SINCE_MARGIN_S))


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
        current = ledger.experiment_state(exp_id)
        if current in STOPPED_EXPERIMENT_STATES:
            continue
        counts = ledger.counts_by_state(exp_id)
        intents = len(ledger.intents(exp_id))
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

