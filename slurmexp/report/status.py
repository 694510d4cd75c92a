"""What `slurmexp status` shows: the ledger's view, read in a few SQL queries.

Status never calls Slurm: it is what the last reconcile pass (or launch) recorded, so it
stays fast and is safe to run in a loop. To bring it up to date, run
`slurmexp reconcile` first.
"""
from __future__ import annotations

import json

from slurmexp.ledger import Ledger


def experiment_summaries(ledger: Ledger) -> list[dict]:
    counts: dict[str, dict[str, int]] = {}
    for exp_id, state, n in ledger.db.execute(
            "SELECT exp_id, state, COUNT(*) FROM runs GROUP BY exp_id, state"):
        counts.setdefault(exp_id, {})[state] = n
    return [{"exp_id": e["exp_id"], "name": e["name"], "created": e["created"], "backend": e["backend"],
             "cluster": e["cluster"], "state": e["state"], "n_runs": e["n_runs"],
             "runs_by_state": counts.get(e["exp_id"], {})} for e in ledger.experiments()]


def run_statuses(ledger: Ledger, exp_id: str) -> list[dict]:
    """One row per run with its newest attempt's job, node and times."""
    ledger.get_experiment(exp_id, required=True)
    rows = ledger.db.execute("""
        SELECT r.run_id, r.idx, r.params_json, r.state, r.reason, r.n_attempts, r.run_dir,
               a.job_key, a.cluster, a.submit_time, a.start_time, a.end_time, a.node, a.partition,
               a.exit_code
        FROM runs r LEFT JOIN attempts a
          ON a.attempt_id = (SELECT MAX(attempt_id) FROM attempts x
                             WHERE x.exp_id = r.exp_id AND x.run_id = r.run_id)
        WHERE r.exp_id = ? ORDER BY r.idx""", [exp_id]).fetchall()
    keys = ["run_id", "idx", "params", "state", "reason", "attempts", "run_dir", "job", "cluster",
            "submit_time", "start_time", "end_time", "node", "partition", "exit_code"]
    out = []
    for row in rows:
        d = dict(zip(keys, row))
        d["params"] = json.loads(d["params"] or "{}")
        out.append(d)
    return out
