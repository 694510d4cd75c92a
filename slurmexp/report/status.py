"""What `slurmexp status` shows: the ledger's view, read in a few SQL queries.

Status never calls Slurm: it is what the last reconcile pass (or launch) recorded, so it
stays fast and is safe to run in a loop. To bring it up to date, run
`slurmexp reconcile` first.
"""
from __future__ import annotations

from slurmexp.ledger import Ledger


def experiment_summaries(ledger: Ledger) -> list[dict]:
    counts = ledger.run_counts_by_experiment()
    return [{"exp_id": e["exp_id"], "name": e["name"], "created": e["created"], "backend": e["backend"],
             "cluster": e["cluster"], "state": e["state"], "n_runs": e["n_runs"],
             "runs_by_state": counts.get(e["exp_id"], {})} for e in ledger.experiments()]


def run_statuses(ledger: Ledger, exp_id: str) -> list[dict]:
    """One row per run with its newest attempt's job, node and times (see `RunStatus`)."""
    ledger.get_experiment(exp_id, required=True)
    return [row.to_dict() for row in ledger.run_statuses(exp_id)]
