"""Runs: their chunk and task index, state changes without an attempt, and reading them."""
from __future__ import annotations

import json
from collections.abc import Iterable

from slurmexp.ledger.connection import _now


class RunsMixin:
    def assign_chunk(self, exp_id: str, chunk: int, run_ids: list[str]) -> None:
        """Put runs into a (new) chunk, task index = position: how a retry array is built."""
        with self.transaction():
            self.db.conn.executemany(
                "UPDATE runs SET chunk = ?, task_index = ?, updated = ? "
                "WHERE exp_id = ? AND run_id = ?",
                [(chunk, i, _now(), exp_id, rid) for i, rid in enumerate(run_ids)])

    def set_run_state(self, exp_id: str, run_ids: Iterable[str], state: str,
                      reason: str | None = None) -> int:
        """Move runs without an attempt update (e.g. back to PLANNED for a retry)."""
        now = _now()
        with self.transaction():
            wanted = set(run_ids)
            runs = [r for r in self._rows("SELECT run_id, state FROM runs WHERE exp_id = ?",
                                          [exp_id]) if r["run_id"] in wanted]
            self.db.conn.executemany(
                "UPDATE runs SET state = ?, reason = ?, updated = ? "
                "WHERE exp_id = ? AND run_id = ?",
                [(state, reason, now, exp_id, r["run_id"]) for r in runs])
            self._events_bulk([exp_id, r["run_id"], None, "run_state", r["state"], state, reason]
                              for r in runs)
        return len(runs)

    def runs(self, exp_id: str, state: str | Iterable[str] | None = None) -> list[dict]:
        sql, params = "SELECT * FROM runs WHERE exp_id = ?", [exp_id]
        if state is not None:
            states = [state] if isinstance(state, str) else list(state)
            sql += f" AND state IN ({', '.join('?' * len(states))})"
            params += states
        rows = self._rows(sql + " ORDER BY idx", params)
        for r in rows:
            r["params"] = json.loads(r["params_json"])
        return rows

    def counts_by_state(self, exp_id: str) -> dict[str, int]:
        return dict(self.db.execute(
            "SELECT state, COUNT(*) FROM runs WHERE exp_id = ? GROUP BY state ORDER BY state",
            [exp_id]).fetchall())
