"""`slurmexp cancel`: one scancel for the jobs of an experiment that the queue still holds, under
the pass's lock, so a reconcile pass never resubmits a run that is being cancelled.

Only what the controller lists as pending or running is cancelled and marked CANCELLED: a task
that had already ended (COMPLETED, FAILED, ... but not yet reconciled) keeps its attempt open,
and the next reconcile pass records sacct's final state for it, never "cancelled by user".
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from slurmexp import tags
from slurmexp.backends.base import backend_kind, scheduler_for_experiment
from slurmexp.ledger import Ledger
from slurmexp.reconcile.context import pass_lock, require_lock
from slurmexp.reconcile.match import expand_rows, queue_record, row_key
from slurmexp.states import SLURM_ACTIVE_STATES, TERMINAL_STATES, state_word

# What squeue lists that has already ended: scancel stops nothing there, and sacct will say how
# it ended.
ENDING_STATES = frozenset({"COMPLETING", "STAGE_OUT"})


def _queued_keys(backend: Any, exp_id: str, active: list[dict]) -> tuple[set[str], set[str]]:
    """(job ids to scancel, job keys the queue still holds) of an experiment's tagged jobs.

    Raises SlurmUnavailable when squeue cannot reach the controller (nothing is cancelled)."""
    array_tasks: dict[str, list[int]] = defaultdict(list)
    for a in active:
        if a["task_index"] is not None and a["job_id"]:
            array_tasks[str(a["job_id"])].append(int(a["task_index"]))
    held = [q for q in backend.queue(name_prefix=tags.name_prefix(exp_id))
            if state_word(q.state) in SLURM_ACTIVE_STATES - ENDING_STATES]
    ids = {str(q.array_job_id or q.job_id).split("_")[0] for q in held}
    keys = {row_key(r) for r in expand_rows([queue_record(q) for q in held], array_tasks)}
    return ids, keys


def cancel_experiment(ledger: Ledger, backend: Any, exp_id: str,
                      reason: str = "cancelled by user", *, lock_wait_s: float = 120) -> int:
    """Cancel the queued or running jobs of an experiment with one scancel, and mark those
    attempts, and the runs waiting for a retry, CANCELLED with `reason`. Returns the number of
    runs cancelled.

    Jobs are found in the queue by the experiment's tag (so also those of a launch that died
    before recording its job), through `backend` or else the scheduler of the experiment's own
    kind and cluster. An attempt whose job the queue no longer holds had ended by itself: it is
    left for reconcile, which records sacct's final state. The experiment becomes CANCELLED
    only when something was cancelled: a FINISHED experiment stays FINISHED, and one whose
    jobs had all ended is finished by reconcile.
    For a kind whose jobs cannot be cancelled (the local backend: its runs are over when launch
    returns) only the ledger is marked.
    Raises SlurmUnavailable (nothing marked) when squeue or scancel cannot reach the controller.
    """
    exp = ledger.get_experiment(exp_id, required=True)
    with pass_lock(ledger, wait_s=lock_wait_s) as got:
        require_lock(got, ledger, "cancel")
        active = ledger.attempts(exp_id, active_only=True)
        stop = active
        if backend_kind(exp["backend"]).cancellable:
            backend = backend if backend is not None else scheduler_for_experiment(exp)
            ids, keys = _queued_keys(backend, exp_id, active)
            if ids:
                backend.cancel(sorted(ids, key=lambda j: (len(j), j)))
            stop = [a for a in active if a["job_key"] in keys]
        moved: set[str] = set()
        with ledger.transaction():
            intents = ledger.submissions(exp_id, state="INTENT")
            for s in intents:
                ledger.record_submit_failed(s["sub_id"], f"{reason} before its job was recorded")
            for a in stop:
                ledger.update_attempt(a["attempt_id"], reason=reason, state="CANCELLED",
                                      failure_class="user")
                moved.add(a["run_id"])
            # Runs with no attempt still open: PLANNED ones (a retry not yet submitted, a launch
            # that stopped) and those whose only job was an intent.
            still_open = {a["run_id"] for a in active} - moved
            waiting = [r["run_id"] for r in ledger.runs(exp_id)
                       if r["state"] not in TERMINAL_STATES and r["run_id"] not in still_open]
            if waiting:
                ledger.set_run_state(exp_id, waiting, "CANCELLED", reason)
                moved.update(waiting)
            if moved or intents:
                # Otherwise every job had ended by itself (or the experiment is FINISHED):
                # reconcile finishes it as it would have.
                ledger.set_experiment_state(exp_id, "CANCELLED", reason)
        return len(moved)
