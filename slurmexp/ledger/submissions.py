"""Submissions: the intent written before sbatch, then its job (one attempt per task) or its refusal."""
from __future__ import annotations

import os

from slurmexp.errors import SlurmexpError
from slurmexp.ledger.attempts import _NEW_ATTEMPT_COLS
from slurmexp.ledger.connection import _now
from slurmexp.ledger.store import parse_array_spec


class SubmissionsMixin:
    def record_intent(self, exp_id: str, chunk: int | None, array_spec: str, n_tasks: int,
                      script_path: str | os.PathLike, script_sha256: str,
                      cluster: str | None) -> int:
        """Written before sbatch runs, so a crash right after sbatch leaves a trace to adopt."""
        with self.transaction():
            self.get_experiment(exp_id, required=True)
            cur = self.db.execute(
                "INSERT INTO submissions (exp_id, chunk, array_spec, n_tasks, script_path, "
                "script_sha256, state, cluster, created) VALUES (?, ?, ?, ?, ?, ?, 'INTENT', ?, ?)",
                [exp_id, chunk, array_spec, n_tasks, os.fspath(script_path), script_sha256,
                 cluster, _now()])
            sub_id = cur.lastrowid
            self._event("intent", exp_id,
                        reason=f"sub_id={sub_id} chunk={chunk} array={array_spec}")
        return sub_id

    def _submission(self, sub_id: int) -> dict:
        rows = self._rows("SELECT * FROM submissions WHERE sub_id = ?", [sub_id])
        if not rows:
            raise SlurmexpError(f"no submission {sub_id} in ledger {self.path}")
        return rows[0]

    def _submission_runs(self, sub: dict) -> list[dict]:
        # The array spec says which task indices sbatch was given; a resubmission of part of
        # a chunk ("3,7") therefore creates attempts only for those runs.
        indices = parse_array_spec(sub["array_spec"])
        runs = self._rows("SELECT * FROM runs WHERE exp_id = ? AND chunk IS ? "
                          "ORDER BY task_index, idx", [sub["exp_id"], sub["chunk"]])
        if indices is None:
            return runs
        return [r for r in runs if r["task_index"] is None or r["task_index"] in indices]

    def record_submitted(self, sub_id: int, job_id: str | int, submit_time: str | None = None,
                         *, adopted: bool = False) -> list[int]:
        """sbatch answered: the submission, one attempt per task and the runs move together.

        `adopted=True` marks a submission recovered from squeue/sacct after a crashed launch.
        Returns the new attempt ids. Repeating the call with the same job id changes nothing.
        """
        job_id = str(job_id)
        with self.transaction():
            sub = self._submission(sub_id)
            if sub["state"] in ("SUBMITTED", "ADOPTED"):
                if sub["job_id"] == job_id:
                    return [r[0] for r in self.db.execute(
                        "SELECT attempt_id FROM attempts WHERE sub_id = ? ORDER BY attempt_id",
                        [sub_id])]
                raise SlurmexpError(f"submission {sub_id} already has job {sub['job_id']}, "
                                    f"not {job_id}")
            state = "ADOPTED" if adopted else "SUBMITTED"
            now = _now()
            self.db.execute("UPDATE submissions SET state = ?, job_id = ?, submit_time = ?, "
                            "error = NULL WHERE sub_id = ?", [state, job_id, submit_time, sub_id])
            runs = self._submission_runs(sub)
            exp_id = sub["exp_id"]
            self._insert_rows("attempts", _NEW_ATTEMPT_COLS, ([
                exp_id, r["run_id"], r["n_attempts"] + 1, sub_id, sub["cluster"], job_id,
                r["task_index"],
                job_id if r["task_index"] is None else f"{job_id}_{r['task_index']}",
                submit_time, "SUBMITTED", now] for r in runs))
            self.db.conn.executemany(
                "UPDATE runs SET state = 'SUBMITTED', reason = NULL, n_attempts = n_attempts + 1, "
                "updated = ? WHERE exp_id = ? AND run_id = ?",
                [(now, exp_id, r["run_id"]) for r in runs])
            ids = dict(self.db.execute(
                "SELECT run_id, attempt_id FROM attempts WHERE sub_id = ?", [sub_id]).fetchall())
            kind = "adopted" if adopted else "submitted"
            self._events_bulk([exp_id, r["run_id"], ids[r["run_id"]], kind, r["state"],
                               "SUBMITTED", f"job {job_id} (sub_id={sub_id})"] for r in runs)
        return [ids[r["run_id"]] for r in runs]

    def record_submit_failed(self, sub_id: int, error: str) -> None:
        """sbatch refused: its runs stay PLANNED, with the error as their reason, to retry."""
        with self.transaction():
            sub = self._submission(sub_id)
            now = _now()
            self.db.execute("UPDATE submissions SET state = 'FAILED', error = ? WHERE sub_id = ?",
                            [error, sub_id])
            runs = [r for r in self._submission_runs(sub) if r["state"] == "PLANNED"]
            self.db.conn.executemany(
                "UPDATE runs SET reason = ?, updated = ? WHERE exp_id = ? AND run_id = ?",
                [(error, now, r["exp_id"], r["run_id"]) for r in runs])
            self._event("submit_failed", sub["exp_id"], reason=f"sub_id={sub_id}: {error}")
            self._events_bulk([r["exp_id"], r["run_id"], None, "submit_failed", "PLANNED",
                               "PLANNED", error] for r in runs)

    def set_submit_times(self, cluster: str | None, job_id: str | int, submit_time: str) -> int:
        """Fill in the submit time once sacct reports it; returns the attempts changed.

        OR IGNORE: if an attempt with the same (cluster, job_key, submit_time) already exists
        the row is left without a time rather than failing the whole reconcile.
        """
        with self.transaction():
            n = self.db.execute(
                "UPDATE OR IGNORE attempts SET submit_time = ?, updated = ? WHERE cluster IS ? "
                "AND job_id = ? AND submit_time IS NULL",
                [submit_time, _now(), cluster, str(job_id)]).rowcount
            self.db.execute("UPDATE submissions SET submit_time = ? WHERE cluster IS ? AND "
                            "job_id = ? AND submit_time IS NULL",
                            [submit_time, cluster, str(job_id)])
        return n

    def submissions(self, exp_id: str, state: str | None = None) -> list[dict]:
        sql, params = "SELECT * FROM submissions WHERE exp_id = ?", [exp_id]
        if state:
            sql, params = sql + " AND state = ?", params + [state]
        return self._rows(sql + " ORDER BY sub_id", params)
