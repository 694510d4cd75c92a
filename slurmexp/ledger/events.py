"""The event log (one row per state change, written in the change's transaction) and the
heartbeats reconcile passes leave for `slurmexp health`.
"""
from __future__ import annotations

from collections.abc import Iterable

from slurmexp.ledger.connection import _json, _now

_EVENT_COLS = ["exp_id", "run_id", "attempt_id", "kind", "from_state", "to_state", "reason"]
_INSERT_EVENT = (f"INSERT INTO events (ts, {', '.join(_EVENT_COLS)}) "
                 f"VALUES ({', '.join('?' * (len(_EVENT_COLS) + 1))})")


class EventsMixin:
    def _event(self, kind: str, exp_id: str | None, run_id: str | None = None,
               attempt_id: int | None = None, from_state: str | None = None,
               to_state: str | None = None, reason: str | None = None) -> None:
        self._events_bulk([[exp_id, run_id, attempt_id, kind, from_state, to_state, reason]])

    def _events_bulk(self, events: Iterable[list]) -> None:
        """Rows of (exp_id, run_id, attempt_id, kind, from_state, to_state, reason), one
        executemany (inside the caller's transaction)."""
        now = _now()
        self.db.conn.executemany(_INSERT_EVENT, ([now, *e] for e in events))

    def events(self, exp_id: str, run_id: str | None = None) -> list[dict]:
        sql, params = "SELECT * FROM events WHERE exp_id = ?", [exp_id]
        if run_id is not None:
            sql, params = sql + " AND run_id = ?", params + [run_id]
        return self._rows(sql + " ORDER BY event_id", params)

    # --- health ---------------------------------------------------------------------------

    def record_heartbeat(self, kind: str, ok: bool, summary: dict | None = None) -> None:
        with self.transaction():
            self.db.execute(
                "INSERT INTO heartbeats (ts, kind, ok, summary_json) VALUES (?, ?, ?, ?)",
                [_now(), kind, int(bool(ok)), _json(summary or {})])

    def last_heartbeat(self, kind: str = "reconcile", *, ok_only: bool = False) -> dict | None:
        """The newest heartbeat of `kind`; with ok_only, the newest successful one."""
        sql = "SELECT * FROM heartbeats WHERE kind = ?" + (" AND ok = 1" if ok_only else "")
        rows = self._rows(sql + " ORDER BY id DESC LIMIT 1", [kind])
        return rows[0] if rows else None
