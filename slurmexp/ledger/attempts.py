"""Attempts: what reconcile learns about each job of a run, Slurm's requeues, reading them."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from slurmexp.errors import SlurmexpError
from slurmexp.layout import restart_numbers
from slurmexp.ledger.connection import BATCH_SIZE, _in_list, _json, _now
from slurmexp.ledger.rows import ActiveAttempt, Attempt
from slurmexp.ledger.schema import ACTIVE_ATTEMPT_SQL, REQUEUE_WATCH_SQL

_ATTEMPT_FIXED = {"attempt_id", "exp_id", "run_id", "attempt_no"}
_NEW_ATTEMPT_COLS = ["exp_id", "run_id", "attempt_no", "sub_id", "cluster", "job_id",
                     "task_index", "job_key", "submit_time", "state", "updated"]


class AttemptsMixin:
    def _attempt(self, attempt_id: int) -> dict:
        rows = self._rows("SELECT * FROM attempts WHERE attempt_id = ?", [attempt_id])
        if not rows:
            raise SlurmexpError(f"no attempt {attempt_id} in ledger {self.path}")
        return rows[0]

    def record_requeue(self, attempt_id: int, submit_time: str) -> dict:
        """Slurm requeued an attempt's job: its job key again, with a later submit time.

        That is a new attempt of the same run (next attempt_no, same submission, SUBMITTED),
        and the run follows it; attempt, run and event are one transaction. Returns the new
        attempt's row. Repeating the call with the same submit time changes nothing and
        returns the attempt the first call made.
        """
        with self.transaction():
            prev = self._attempt(attempt_id)
            existing = self._rows(
                "SELECT * FROM attempts WHERE cluster IS ? AND job_key = ? AND submit_time = ?",
                [prev["cluster"], prev["job_key"], submit_time])
            if existing:
                return existing[0]
            exp_id, run_id = prev["exp_id"], prev["run_id"]
            n_attempts, run_state = self.db.execute(
                "SELECT n_attempts, state FROM runs WHERE exp_id = ? AND run_id = ?",
                [exp_id, run_id]).fetchone()
            attempt_no = int(n_attempts) + 1
            now = _now()
            new_id = self.db.execute(
                f"INSERT INTO attempts ({', '.join(_NEW_ATTEMPT_COLS)}) "
                f"VALUES ({', '.join('?' * len(_NEW_ATTEMPT_COLS))})",
                [exp_id, run_id, attempt_no, prev["sub_id"], prev["cluster"], prev["job_id"],
                 prev["task_index"], prev["job_key"], submit_time, "SUBMITTED", now]).lastrowid
            why = f"requeued by Slurm: job {prev['job_key']} again (submit {submit_time})"
            self.db.execute(
                "UPDATE runs SET n_attempts = ?, state = 'SUBMITTED', reason = ?, updated = ? "
                "WHERE exp_id = ? AND run_id = ?", [attempt_no, why, now, exp_id, run_id])
            self._event("requeued", exp_id, run_id, new_id, run_state, "SUBMITTED", why)
            return self._attempt(new_id)

    def update_attempt(self, attempt_id: int, reason: str | None = None, **fields: Any) -> dict:
        """Apply what reconcile learned about one attempt; a state change logs an event.

        The run follows only its newest attempt, so a late report about an older attempt
        cannot overwrite the state of the retry that replaced it.
        """
        fields = self._checked_fields(fields, reason)
        with self.transaction():
            old = self._attempt(attempt_id)
            changed = _changes(old, fields)
            if not changed:
                return old
            now = changed["updated"] = _now()
            # Column names were checked against the table above, so formatting them is safe.
            assignments = ", ".join(f"{k} = ?" for k in changed)
            self.db.execute(f"UPDATE attempts SET {assignments} WHERE attempt_id = ?",
                            [*changed.values(), attempt_id])
            event, run = _run_follows(old, changed, now)
            if event is not None:
                self._events_bulk([event])
            if run is not None:
                self.db.execute(*run)
            if changed.get("submit_time") and old["sub_id"] is not None:
                # The submission's own time, when its launch died before stamping it: the
                # attempts learn it from sacct, and their submission is keyed by it too.
                self.db.execute("UPDATE submissions SET submit_time = ? WHERE sub_id = ? AND "
                                "submit_time IS NULL", [changed["submit_time"], old["sub_id"]])
            return {**old, **changed}

    def update_attempts(self, updates: Iterable[tuple[int, str, str | None, dict]]) -> list[int]:
        """Many `update_attempt`s in one transaction: (attempt_id, the state the caller read,
        reason, fields) each, applied only while the attempt is still in that state (another
        writer, a cancel, may have moved it since). Every change, its event and its run's are
        written together with a few executemany statements. Returns the attempts applied.

        `submit_time` is not accepted: its UNIQUE key can refuse one attempt, which would undo
        them all (`update_attempt` writes it, one attempt at a time).
        """
        todo = [(aid, expected, self._checked_fields(fields, reason))
                for aid, expected, reason, fields in updates]
        if any("submit_time" in f for _, _, f in todo):
            raise TypeError("update_attempts: submit_time is written by update_attempt alone")
        applied: list[int] = []
        with self.transaction():
            olds = self._attempts_by_id([aid for aid, _, _ in todo])
            now = _now()
            by_columns: dict[tuple[str, ...], list[list]] = {}
            events, runs = [], []
            for aid, expected, fields in todo:
                old = olds.get(aid)
                if old is None or old["state"] != expected:
                    continue
                applied.append(aid)
                changed = _changes(old, fields)
                if not changed:
                    continue
                changed["updated"] = now
                by_columns.setdefault(tuple(changed), []).append([*changed.values(), aid])
                event, run = _run_follows(old, changed, now)
                if event is not None:
                    events.append(event)
                if run is not None:
                    runs.append(run)
            for columns, params in by_columns.items():
                assignments = ", ".join(f"{k} = ?" for k in columns)
                self.db.conn.executemany(
                    f"UPDATE attempts SET {assignments} WHERE attempt_id = ?", params)
            self._events_bulk(events)
            for sql in {sql for sql, _ in runs}:
                self.db.conn.executemany(sql, [p for s, p in runs if s == sql])
        return applied

    def _checked_fields(self, fields: dict, reason: str | None) -> dict:
        unknown = set(fields) - set(self._attempt_columns()) | (set(fields) & _ATTEMPT_FIXED)
        if unknown:
            raise TypeError(f"update_attempt: cannot set {sorted(unknown)}")
        fields = dict(fields)
        if isinstance(fields.get("sacct_json"), (dict, list)):
            fields["sacct_json"] = _json(fields["sacct_json"])
        if reason is not None:
            fields["reason"] = reason
        return fields

    def _attempts_by_id(self, attempt_ids: list[int]) -> dict[int, dict]:
        """attempt_id -> the attempt's row, read BATCH_SIZE ids per query."""
        out: dict[int, dict] = {}
        for i in range(0, len(attempt_ids), BATCH_SIZE):
            ids = attempt_ids[i:i + BATCH_SIZE]
            cur = self.db.execute(f"SELECT * FROM attempts WHERE attempt_id IN "
                                  f"({', '.join('?' * len(ids))})", ids)
            names = [d[0] for d in cur.description]
            for values in cur:
                row = dict(zip(names, values))
                out[row["attempt_id"]] = row
        return out

    def _attempt_columns(self) -> list[str]:
        if self._attempt_cols is None:
            self._attempt_cols = self.db.columns("attempts")
        return self._attempt_cols

    def attempts(self, exp_id: str | None = None, run_id: str | None = None,
                 active_only: bool = False, *, cluster: str | None = None,
                 job_id: str | int | None = None, sub_id: int | None = None) -> list[dict]:
        """`active_only` means not terminal, so UNKNOWN and states sacct adds stay watched."""
        where, params = [], []
        for col, val in (("exp_id", exp_id), ("run_id", run_id), ("cluster", cluster),
                         ("job_id", None if job_id is None else str(job_id)), ("sub_id", sub_id)):
            if val is not None:
                where.append(f"{col} = ?")
                params.append(val)
        if active_only:
            where.append(ACTIVE_ATTEMPT_SQL)
        sql = "SELECT * FROM attempts" + (f" WHERE {' AND '.join(where)}" if where else "")
        return self._rows(sql + " ORDER BY attempt_id", params)

    # --- for a reconcile pass -------------------------------------------------------------

    def active_attempts(self, backend: str | Iterable[str] | None = None) -> list[ActiveAttempt]:
        """Every attempt not in a final state, oldest first, with its run's and submission's
        context; only experiments of `backend` (a kind or several) when given."""
        # The partial index's own term, literally (schema.ACTIVE_ATTEMPT_SQL): SQLite uses the
        # index only for the WHERE it was made with, and a bound parameter never matches one.
        return self._attempts_in_context([f"a.{ACTIVE_ATTEMPT_SQL}"], [], backend)

    def unconfirmed_cancels(self, since: str, backend: str | Iterable[str] | None = None
                            ) -> list[ActiveAttempt]:
        """Attempts `slurmexp cancel` marked CANCELLED since `since` (a ledger timestamp) whose
        final accounting record has not been seen yet (no end time): a task can end by itself
        between the squeue and the scancel of a cancel, and then sacct's state wins. Only the
        run's newest attempt, oldest first."""
        return self._attempts_in_context(
            ["a.state = 'CANCELLED'", "a.end_time IS NULL", "a.job_id IS NOT NULL",
             "a.updated >= ?", "a.attempt_no = r.n_attempts"], [since], backend)

    def requeue_watch(self, backend: str | Iterable[str] | None = None) -> list[ActiveAttempt]:
        """Attempts that ended in a state Slurm may requeue (`states.SLURM_REQUEUES_STATES`)
        whose run waits for its retry (PLANNED): the pass keeps asking about them so that
        Slurm's own requeue, should it show after the failure, is recorded and our retry is
        never submitted beside it. Only the run's newest attempt, oldest first."""
        return self._attempts_in_context(     # the partial index's term as written (schema)
            [f"a.{REQUEUE_WATCH_SQL}", "a.job_id IS NOT NULL", "a.attempt_no = r.n_attempts",
             "r.state = 'PLANNED'"], [], backend)

    def _attempts_in_context(self, where: list[str], params: list, backend) -> list[ActiveAttempt]:
        """Attempts matching `where` with their run's and submission's context, oldest first;
        only experiments of `backend` (a kind or several) when given."""
        if backend is not None:
            clause, kinds = _in_list("e.backend", backend)
            where, params = [*where, clause], [*params, *kinds]
        return ActiveAttempt.from_cursor(self.db.execute(
            f"SELECT {ActiveAttempt.select_list('a')} FROM attempts a "
            "JOIN experiments e ON e.exp_id = a.exp_id "
            "JOIN runs r ON r.exp_id = a.exp_id AND r.run_id = a.run_id "
            "LEFT JOIN submissions s ON s.sub_id = a.sub_id "
            f"WHERE {' AND '.join(where)} ORDER BY a.attempt_id", params))

    def attempt_state(self, attempt_id: int) -> str | None:
        """The attempt's state now (None if there is no such attempt): inside a write
        transaction, whether another writer moved it since it was read."""
        row = self.db.execute("SELECT state FROM attempts WHERE attempt_id = ?",
                              [attempt_id]).fetchone()
        return None if row is None else row[0]

    def run_attempts(self, exp_id: str, run_id: str) -> list[Attempt]:
        """A run's attempts, oldest first (by attempt number)."""
        return Attempt.from_cursor(self.db.execute(
            f"SELECT {Attempt.select_list('a')} FROM attempts a "
            "WHERE a.exp_id = ? AND a.run_id = ? ORDER BY a.attempt_no", [exp_id, run_id]))

    def attempt_states(self, exp_id: str, run_id: str) -> list[str]:
        """The states of a run's attempts, oldest first: its retry history."""
        return [r[0] for r in self.db.execute(
            "SELECT state FROM attempts WHERE exp_id = ? AND run_id = ? ORDER BY attempt_no",
            [exp_id, run_id])]

    def restarts_before(self, sub_id: int | None, job_key: str | None, attempt_id: int) -> int:
        """How many attempts of the same submission and job key came before this one: the
        number of times Slurm requeued the job first (the task's `.r<N>` folder suffix)."""
        row = self.db.execute(
            "SELECT COUNT(*) FROM attempts WHERE sub_id IS ? AND job_key = ? AND attempt_id < ?",
            [sub_id, job_key, attempt_id]).fetchone()
        return int(row[0]) if row else 0

    def restarts_of(self, attempts: Iterable[Any]) -> dict[int, int]:
        """`restarts_before` of many attempts (rows with attempt_id, sub_id, job_key) at once:
        attempt_id -> restart number, from one read of their submissions' attempts (a pass over
        SSH asks it for every active attempt; one query each scanned the table 500 times)."""
        wanted = list(attempts)
        subs = sorted({a.sub_id for a in wanted if a.sub_id is not None})
        rows: list[dict] = []
        for i in range(0, len(subs), 500):
            where, params = _in_list("sub_id", subs[i:i + 500])
            rows += [dict(zip(("attempt_id", "sub_id", "job_key"), r)) for r in self.db.execute(
                f"SELECT attempt_id, sub_id, job_key FROM attempts WHERE {where}", params)]
        if any(a.sub_id is None for a in wanted):
            rows += [dict(zip(("attempt_id", "sub_id", "job_key"), r)) for r in self.db.execute(
                "SELECT attempt_id, sub_id, job_key FROM attempts WHERE sub_id IS NULL")]
        # job_key NULL never matches in SQL (`job_key = ?`): such rows count for nobody.
        numbers = restart_numbers(r for r in rows if r["job_key"] is not None)
        return {a.attempt_id: numbers.get(a.attempt_id, 0) if a.job_key is not None else 0
                for a in wanted}

def _changes(old: dict, fields: dict) -> dict:
    """The columns `fields` change in the attempt row `old` (a new state clears the old
    state's reason unless a new one is given)."""
    if fields.get("state", old["state"]) != old["state"]:
        fields = {"reason": None, **fields}
    return {k: v for k, v in fields.items() if old[k] != v}


def _run_follows(old: dict, changed: dict, now: str) -> tuple[list | None, tuple | None]:
    """(the event row as `_events_bulk` takes it, the runs UPDATE as (sql, params)) that an
    attempt's change brings: a new state is an event and the run's state, a new reason alone
    the run's reason; the run only while the attempt is its newest (n_attempts = attempt_no)."""
    key = [old["exp_id"], old["run_id"], old["attempt_no"]]
    new_state = changed.get("state")
    if new_state is not None:
        reason = changed.get("reason", old["reason"])
        return ([old["exp_id"], old["run_id"], old["attempt_id"], "state", old["state"],
                 new_state, reason],
                ("UPDATE runs SET state = ?, reason = ?, updated = ? WHERE exp_id = ? AND "
                 "run_id = ? AND n_attempts = ?", [new_state, reason, now, *key]))
    if "reason" in changed:
        return None, ("UPDATE runs SET reason = ?, updated = ? WHERE exp_id = ? AND run_id = ? "
                      "AND n_attempts = ?", [changed["reason"], now, *key])
    return None, None
