"""`slurmexp retry`: a person resubmits an experiment's runs now, through the pass's own
`submit_due` (intent -> sbatch -> record), under the reconcile lock.

It ignores the backoff and `[retry] max_attempts` (a person asked) but says so, and which runs
went out under which job; a queue limit that refuses some arrays is `PartlySubmitted` (exit 5),
an sbatch that did not answer `SubmissionUnknown` (exit 6).
"""
from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timezone
from typing import Any

from slurmexp.backends.base import backend_kind
from slurmexp.errors import (
    PartlySubmitted,
    Problem,
    SlurmexpError,
    SlurmQueueLimit,
    SlurmUnavailable,
    SubmissionUnknown,
)
from slurmexp.launch import depends
from slurmexp.launch.submission import REFUSED, UNANSWERED, ChunkOutcome
from slurmexp.ledger import Ledger
from slurmexp.ledger.rows import PlannedRun
from slurmexp.reconcile.context import PassContext, PassSummary, pass_lock, remote_key, require_lock
from slurmexp.reconcile.match import queue_reasons
from slurmexp.reconcile.resubmit import open_intent_tasks, policy_of, submit_due, tracked_experiments
from slurmexp.states import FAILED_STATES, FINISHED_EXPERIMENT_STATES, LOST, STOPPED_EXPERIMENT_STATES
from slurmexp.timeutil import utc_iso

RETRY_WHICH = {
    "failed": FAILED_STATES - {LOST},
    "lost": frozenset({LOST}),
    "all": FAILED_STATES,
    # Runs never submitted: sbatch refused their array at launch (a queue limit), so they
    # are PLANNED with no attempt. Those an open intent covers are left to reconcile.
    "unsubmitted": frozenset({"PLANNED"}),
}


def _unsubmitted(ledger: Ledger, exp_id: str) -> list[PlannedRun]:
    covered = open_intent_tasks(ledger)
    out = []
    for r in ledger.planned_runs(exp_id):
        tasks = covered.get((r.exp_id, r.chunk), set())
        if r.n_attempts or tasks is None or (r.task_index is not None and r.task_index in tasks):
            continue
        out.append(r)
    return out


def _over_max_attempts(ctx: PassContext, runs: list[PlannedRun]) -> list[str]:
    """One line per resource group whose runs already had max_attempts attempts: a person may
    go past the limit, but is told so."""
    over: dict[int, list[str]] = defaultdict(list)
    limits: dict[int, int] = {}
    for r in runs:
        policy = policy_of(ctx, r.exp_id, r.chunk)
        if r.n_attempts >= policy.max_attempts:
            over[r.n_attempts + 1].append(r.run_id)
            limits[r.n_attempts + 1] = policy.max_attempts
    return [f"{len(ids)} run(s) get attempt {n}, past max_attempts = {limits[n]} (asked for by "
            f"hand): {', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''}"
            for n, ids in sorted(over.items())]


def retry_experiment(ledger: Ledger, backend: Any, exp_id: str, which: str = "failed", *,
                     lock_wait_s: float = 120, notes: list[str] | None = None) -> list[int]:
    """Resubmit an experiment's finished-but-unsuccessful runs now (one sbatch per chunk).

    which: "failed" (every final state but COMPLETED and LOST), "lost", "all", or
    "unsubmitted" (runs whose array sbatch refused at launch). Ignores the backoff and the
    max_attempts limit (a person asked) but says so in `notes`, with which runs went out under
    which job; escalation still applies. Returns the new submissions' ids. Raises
    SlurmUnavailable when sbatch reached no controller and SubmissionUnknown when it did not
    answer (the intent is left for the next reconcile pass to adopt); SlurmQueueLimit or
    SlurmexpError when Slurm refused every array, PartlySubmitted when it refused some.
    """
    if which not in RETRY_WHICH:
        raise SlurmexpError(f"retry: unknown selection {which!r}",
                            [Problem("", "which", f"{which!r}", "use failed, lost, all or unsubmitted")])
    notes = notes if notes is not None else []
    exp = ledger.get_experiment(exp_id, required=True)
    if not backend_kind(exp["backend"]).retried:
        raise SlurmexpError(
            f"retry: {exp_id} ran with the {exp['backend']} backend",
            [Problem("", exp_id, "only Slurm experiments are retried by slurmexp",
                     fix="launch the sweep again with --new to run it locally once more")])
    now = datetime.now(timezone.utc)
    summary = PassSummary(started=utc_iso(now))
    with pass_lock(ledger, wait_s=lock_wait_s) as got:
        require_lock(got, ledger, "retry")
        # Without a backend given, the scheduler of the experiment's own kind and cluster.
        ctx = PassContext(ledger, backend, summary, now, 0, False, kind=exp["backend"],
                          cluster=exp.get("cluster") or None)
        tracked = tracked_experiments(ledger)
        mine = remote_key(tracked[exp_id]["settings"].remote)
        # The experiments reached the same way (this machine's Slurm, or one login node).
        ctx.exps = {k: e for k, e in tracked.items() if remote_key(e["settings"].remote) == mine}
        depends.check_retry(ledger, exp_id, tracked[exp_id]["settings"].depends)
        if which == "unsubmitted":
            planned = _unsubmitted(ledger, exp_id)
            if not planned:
                return []
        else:
            runs = ledger.runs(exp_id, state=RETRY_WHICH[which])
            if not runs:
                return []
            if exp["state"] in STOPPED_EXPERIMENT_STATES | FINISHED_EXPERIMENT_STATES:
                ledger.set_experiment_state(exp_id, "SUBMITTED", f"manual retry ({which})")
            ledger.set_run_state(exp_id, [r["run_id"] for r in runs], "PLANNED",
                                 f"manual retry ({which})")
            wanted = {r["run_id"] for r in runs}
            planned = [r for r in ledger.planned_runs(exp_id) if r.run_id in wanted]
        notes += _over_max_attempts(ctx, planned)
        # One squeue: a run whose job the controller still holds (Slurm requeued it itself) is
        # not submitted again beside it.
        ctx.queue_reasons = queue_reasons(ctx.scheduler().queue())
        sub_ids: list[int] = []
        failures: list[ChunkOutcome] = []
        submit_due(ctx, planned, ignore_backoff=True, sub_ids=sub_ids, failures=failures)
        notes += [a for a in summary.actions if a.startswith("submitted ") or ": retry held: " in a]
        if sub_ids:
            ledger.set_experiment_state(exp_id, "SUBMITTED", f"manual retry of {len(planned)} run(s)")
        if summary.error:
            left = ("the submission intent was recorded, and `slurmexp reconcile` adopts or "
                    "replaces it, never twice")
            if any(f.status == UNANSWERED and f.error.timed_out for f in failures):
                raise SubmissionUnknown(f"retry of {exp_id}: {summary.error}; {left}")
            raise SlurmUnavailable(f"retry of {exp_id}: {summary.error}; {left}")
        if summary.warnings and not sub_ids:
            refusals = [f.error for f in failures if f.status == REFUSED]
            if refusals and all(isinstance(e, SlurmQueueLimit) for e in refusals):
                raise SlurmQueueLimit(f"retry of {exp_id}: nothing submitted: "
                                      f"{refusals[0].message}", limit=refusals[0].limit)
            raise SlurmexpError(f"retry of {exp_id} failed", [
                Problem("", exp_id, w) for w in summary.warnings])
        if summary.warnings:
            raise PartlySubmitted(
                f"retry of {exp_id}: {len(sub_ids)} array job(s) submitted, others refused: "
                + "; ".join(summary.warnings) + "\n" + "\n".join(notes)
                + f"\nsubmit the rest once the queue has room: `slurmexp retry {exp_id} "
                f"--{which}`")
        return sub_ids
