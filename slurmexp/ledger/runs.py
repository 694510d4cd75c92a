"""Runs: their chunk and task index, state changes without an attempt, and reading them."""
from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from slurmexp.ledger.connection import _in_list, _now
from slurmexp.ledger.rows import PlannedRun, RunStatus


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

    def run_counts_by_experiment(self) -> dict[str, dict[str, int]]:
        """exp_id -> state -> number of runs, for every experiment with runs."""
        counts: dict[str, dict[str, int]] = {}
        for exp_id, state, n in self.db.execute(
                "SELECT exp_id, state, COUNT(*) FROM runs GROUP BY exp_id, state"):
            counts.setdefault(exp_id, {})[state] = n
        return counts

    def run_n_attempts(self, exp_id: str, run_id: str) -> int | None:
        """How many attempts the run has had (None: no such run)."""
        row = self.db.execute("SELECT n_attempts FROM runs WHERE exp_id = ? AND run_id = ?",
                              [exp_id, run_id]).fetchone()
        return None if row is None else int(row[0])

    def find_runs(self, run_prefix: str, exp_prefix: str | None = None) -> list[dict]:
        """Runs whose id starts with `run_prefix` (and experiment id with `exp_prefix`), with
        `params`; by experiment, then index. Prefixes are exact: case and `_` count."""
        # substr, not LIKE: LIKE ignores case and gives '_' a meaning.
        sql = "SELECT * FROM runs WHERE substr(run_id, 1, ?) = ?"
        params: list[Any] = [len(run_prefix), run_prefix]
        if exp_prefix:
            sql += " AND substr(exp_id, 1, ?) = ?"
            params += [len(exp_prefix), exp_prefix]
        rows = self._rows(sql + " ORDER BY exp_id, idx", params)
        for r in rows:
            r["params"] = json.loads(r["params_json"] or "{}")
        return rows

    def run_ids_starting(self, prefix: str, exp_id: str | None = None,
                         limit: int = 200) -> list[tuple[str, str]]:
        """(exp_id, run_id) of at most `limit` runs whose id starts with `prefix` (of `exp_id`
        when given), by experiment, then index: what shell completion offers."""
        sql = "SELECT exp_id, run_id FROM runs WHERE substr(run_id, 1, ?) = ?"
        params: list[Any] = [len(prefix), prefix]
        if exp_id is not None:
            sql += " AND exp_id = ?"
            params.append(exp_id)
        rows = self.db.execute(sql + " ORDER BY exp_id, idx LIMIT ?", [*params, limit])
        return [(r[0], r[1]) for r in rows]

    # --- Python-function experiments (slurmexp.functions, slurmexp.submitit) ------------

    def run_extent(self, exp_id: str) -> tuple[int, int]:
        """(number of runs, number of chunks so far): where new runs and chunks start."""
        n, top = self.db.execute("SELECT COUNT(*), MAX(chunk) FROM runs WHERE exp_id = ?",
                                 [exp_id]).fetchone()
        top_sub = self.db.execute("SELECT MAX(chunk) FROM submissions WHERE exp_id = ?",
                                  [exp_id]).fetchone()[0]
        tops = [t for t in (top, top_sub) if t is not None]
        return int(n or 0), (max(tops) + 1) if tops else 0

    def run_ids(self, exp_id: str) -> list[str]:
        """The experiment's run ids, by index."""
        return [r[0] for r in self.db.execute(
            "SELECT run_id FROM runs WHERE exp_id = ? ORDER BY idx", [exp_id])]

    def run_views(self, exp_id: str, run_ids: Iterable[str] | None = None) -> dict[str, dict]:
        """run_id -> the run's state, reason, run_dir, idx, n_attempts and its newest attempt's
        job_key, job_id, cluster, node and state (None before the first submission), in one
        query, by index: what a waiting Python process reads instead of asking Slurm."""
        rows = self._rows("""
            SELECT r.run_id, r.idx, r.state, r.reason, r.run_dir, r.n_attempts, r.params_json,
                   r.chunk, r.task_index, a.job_key, a.job_id, a.cluster, a.node,
                   a.state AS attempt_state, a.attempt_no
            FROM runs r LEFT JOIN attempts a
              ON a.exp_id = r.exp_id AND a.run_id = r.run_id AND a.attempt_no = r.n_attempts
            WHERE r.exp_id = ? ORDER BY r.idx, a.attempt_id""", [exp_id])
        wanted = None if run_ids is None else set(run_ids)
        out: dict[str, dict] = {}
        for r in rows:
            if wanted is None or r["run_id"] in wanted:
                out[r["run_id"]] = r      # the last row per run is its newest attempt
        return out

    # --- typed rows for reconcile and status ----------------------------------------------

    def _planned(self, where: list[str], params: list, order: str) -> list[PlannedRun]:
        return PlannedRun.from_cursor(self.db.execute(
            f"SELECT {PlannedRun.select_list('r')} FROM runs r "
            "JOIN experiments e ON e.exp_id = r.exp_id "
            f"WHERE r.state = 'PLANNED' AND {' AND '.join(where)} ORDER BY {order}", params))

    def resubmittable_runs(self, backend: str | Iterable[str] | None = None) -> list[PlannedRun]:
        """PLANNED runs reconcile may submit: retries (the run had an attempt) and the runs of a
        launch still SUBMITTING, of experiments neither FAILED nor CANCELLED; only experiments
        of `backend` when given. By experiment, chunk and task."""
        where = ["(r.n_attempts > 0 OR e.state = 'SUBMITTING')",
                 "e.state NOT IN ('FAILED', 'CANCELLED')"]
        params: list = []
        if backend is not None:
            clause, params = _in_list("e.backend", backend)
            where.append(clause)
        return self._planned(where, params, "r.exp_id, r.chunk, r.task_index")

    def planned_runs(self, exp_id: str) -> list[PlannedRun]:
        """Every PLANNED run of one experiment, by index."""
        return self._planned(["r.exp_id = ?"], [exp_id], "r.idx")

    def run_statuses(self, exp_id: str, limit: int | None = None) -> list[RunStatus]:
        """One row per run with its newest attempt's job, node and times, by index (the
        first `limit` only, when given)."""
        rows = self.db.execute("""
            SELECT r.run_id, r.idx, r.params_json, r.state, r.reason, r.n_attempts, r.run_dir,
                   a.job_key, a.cluster, a.submit_time, a.start_time, a.end_time, a.node,
                   a.partition, a.exit_code
            FROM runs r LEFT JOIN attempts a
              ON a.attempt_id = (SELECT MAX(attempt_id) FROM attempts x
                                 WHERE x.exp_id = r.exp_id AND x.run_id = r.run_id)
            WHERE r.exp_id = ? ORDER BY r.idx LIMIT ?""", [exp_id, -1 if limit is None else limit]).fetchall()
        # One json.loads of every run's parameters at once: about half the time of one per row.
        params = json.loads("[" + ",".join(row[2] or "{}" for row in rows) + "]")
        return [RunStatus(run_id, idx, p, *rest)
                for (run_id, idx, _, *rest), p in zip(rows, params)]
