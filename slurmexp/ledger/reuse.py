"""Runs one experiment takes over from another (`launch --skip-completed`), and the `[notify]`
command's bookkeeping: due, claimed (at most once), and what it did."""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from slurmexp.ledger.connection import _json, _now, _path_str
from slurmexp.ledger.schema import REUSABLE_RUN_SQL
from slurmexp.states import COMPLETED

_BATCH = 500        # reuse keys per query: well under SQLite's parameter limit
# Migration 9's partial index's own term, as `ledger.attempts` writes ACTIVE_ATTEMPT_SQL: the
# planner uses runs_reusable only when the WHERE implies it (tests/test_ledger_schema.py checks
# the plan). `r.` names the runs' state beside the attempts' and experiments'; reused_from is
# the runs' alone.
_REUSABLE = f"r.{REUSABLE_RUN_SQL}"

_REUSED_COLS = ["exp_id", "run_id", "idx", "params_json", "seed", "source", "state", "reason",
                "run_dir", "chunk", "task_index", "n_attempts", "updated", "reuse_key",
                "reused_from", "reused_attempt"]

NOTIFY_PENDING = "pending"
NOTIFY_CLAIMED = "claimed"
NOTIFY_DONE = "done"


class ReuseMixin:
    def completed_by_reuse_key(self, keys: Iterable[str], *,
                               exclude_exp: str | None = None) -> dict[tuple[str, str], dict]:
        """For each (run id, reuse key) a COMPLETED run of another experiment has, the newest
        such run that was itself run (not reused), with its newest COMPLETED attempt:
        `exp_id`, `run_id`, `run_dir`, `attempt_id`, `attempt_no`, `job_key`."""
        keys = sorted(set(keys))
        found: dict[tuple[str, str], dict] = {}
        for start in range(0, len(keys), _BATCH):
            part = keys[start:start + _BATCH]
            rows = self._rows(
                "SELECT r.exp_id, r.run_id, r.run_dir, r.reuse_key, a.attempt_id, a.attempt_no, "
                "a.job_key, e.created FROM runs r JOIN experiments e ON e.exp_id = r.exp_id "
                "JOIN attempts a ON a.exp_id = r.exp_id AND a.run_id = r.run_id "
                f"AND a.state = ? WHERE {_REUSABLE} "
                f"AND r.reuse_key IN ({', '.join('?' * len(part))}) AND r.exp_id != ? "
                "ORDER BY e.created, r.exp_id, a.attempt_no",
                [COMPLETED, *part, exclude_exp or ""])
            for row in rows:      # oldest first: the newest experiment and attempt win
                found[(row["run_id"], row["reuse_key"])] = row
        return found

    def add_reused_runs(self, exp_id: str, runs: Sequence[dict]) -> None:
        """COMPLETED runs of `exp_id` that another experiment ran: each dict has the planned
        run's `run_id`, `idx`, `params`, `seed`, `source`, `reuse_key` and the source's
        `exp_id` (as `from_exp`), `run_dir` and `attempt_id`. One transaction with an event."""
        if not runs:
            return
        now = _now()
        rows = [[exp_id, r["run_id"], r["idx"], _json(r.get("params", {})), r.get("seed"),
                 r.get("source"), COMPLETED,
                 f"reused: completed in {r['from_exp']} as job {r.get('job_key')} (attempt id "
                 f"{r['attempt_id']})",
                 _path_str(r["run_dir"]), None, None, 0, now, r.get("reuse_key"), r["from_exp"],
                 r["attempt_id"]] for r in runs]
        with self.transaction():
            self._insert_rows("runs", _REUSED_COLS, rows)
            self.db.execute("UPDATE experiments SET n_runs = n_runs + ?, updated = ? "
                            "WHERE exp_id = ?", [len(rows), now, exp_id])
            sources = sorted({r["from_exp"] for r in runs})
            self._event("reused", exp_id, reason=f"{len(rows)} completed run(s) reused from "
                        + ", ".join(sources))

    # --- [notify] ---------------------------------------------------------------------

    def set_notify_pending(self, exp_id: str) -> None:
        with self.transaction():
            self.db.execute("UPDATE experiments SET notify_state = ? WHERE exp_id = ?",
                            [NOTIFY_PENDING, exp_id])

    def notifications_due(self, states: Iterable[str]) -> list[dict]:
        """Experiments in one of `states` whose [notify] command has not run."""
        states = list(states)
        return self._rows(
            "SELECT exp_id, name, state, exp_dir, settings_json FROM experiments "
            f"WHERE notify_state = ? AND state IN ({', '.join('?' * len(states))}) "
            "ORDER BY created, exp_id", [NOTIFY_PENDING, *states])

    def claim_notification(self, exp_id: str) -> bool:
        """True for the one caller that moves the experiment's notification from pending to
        claimed: the command runs at most once, even with passes racing."""
        now = _now()
        with self.transaction():
            cur = self.db.execute(
                "UPDATE experiments SET notify_state = ?, notified_json = ? "
                "WHERE exp_id = ? AND notify_state = ?",
                [NOTIFY_CLAIMED, _json({"claimed": now}), exp_id, NOTIFY_PENDING])
            if cur.rowcount != 1:
                return False
            self._event("notify", exp_id, reason=f"[notify] command claimed at {now}")
            return True

    def record_notification(self, exp_id: str, outcome: dict) -> None:
        with self.transaction():
            self.db.execute("UPDATE experiments SET notify_state = ?, notified_json = ? "
                            "WHERE exp_id = ?", [NOTIFY_DONE, _json(outcome), exp_id])
            self._event("notified", exp_id, reason=outcome.get("summary"))

    def notification(self, exp_id: str) -> tuple[str | None, dict]:
        row = self.db.execute("SELECT notify_state, notified_json FROM experiments "
                              "WHERE exp_id = ?", [exp_id]).fetchone()
        if row is None:
            return None, {}
        return row[0], json.loads(row[1]) if row[1] else {}
