"""`slurmexp cancel`: one scancel for every job of an experiment, under the pass's lock, so a
reconcile pass never resubmits a run that is being cancelled.
"""
from __future__ import annotations

import contextlib
from typing import Any

from slurmexp import tags
from slurmexp.backends.base import backend_kind, scheduler_for_experiment
from slurmexp.errors import SlurmexpError
from slurmexp.ledger import Ledger
from slurmexp.reconcile.context import pass_lock, require_lock
from slurmexp.states import TERMINAL_STATES


def cancel_experiment(ledger: Ledger, backend: Any, exp_id: str,
                      reason: str = "cancelled by user", *, lock_wait_s: float = 120) -> int:
    """Cancel every queued or running job of an experiment with one scancel, and mark its
    unfinished runs and attempts CANCELLED with `reason`. Returns the number of runs cancelled.

    Jobs are found in the ledger and by the experiment's tag in the queue (a launch that died
    before recording its job), through `backend` or else the scheduler of the experiment's own
    kind and cluster. For a kind whose jobs cannot be cancelled (the local backend: its runs are
    over when launch returns) only the ledger is marked.
    Raises SlurmUnavailable (nothing marked) when scancel cannot reach the controller.
    """
    exp = ledger.get_experiment(exp_id, required=True)
    with pass_lock(ledger, wait_s=lock_wait_s) as got:
        require_lock(got, ledger, "cancel")
        active = ledger.attempts(exp_id, active_only=True)
        if backend_kind(exp["backend"]).cancellable:
            backend = backend if backend is not None else scheduler_for_experiment(exp)
            ids = {str(a["job_id"]) for a in active if a["job_id"]}
            with contextlib.suppress(SlurmexpError):
                for q in backend.queue(name_prefix=tags.name_prefix(exp_id)):
                    ids.add(str(q.array_job_id or q.job_id).split("_")[0])
            if ids:
                backend.cancel(sorted(ids, key=lambda j: (len(j), j)))
        moved: set[str] = set()
        with ledger.transaction():
            for s in ledger.submissions(exp_id, state="INTENT"):
                ledger.record_submit_failed(s["sub_id"], f"{reason} before its job was recorded")
            for a in active:
                ledger.update_attempt(a["attempt_id"], reason=reason, state="CANCELLED",
                                      failure_class="user")
                moved.add(a["run_id"])
            waiting = [r["run_id"] for r in ledger.runs(exp_id)
                       if r["state"] not in TERMINAL_STATES]
            if waiting:
                ledger.set_run_state(exp_id, waiting, "CANCELLED", reason)
                moved.update(waiting)
            ledger.set_experiment_state(exp_id, "CANCELLED", reason)
        return len(moved)
