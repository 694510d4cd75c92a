"""Submissions: the intent written before sbatch, then its job (one attempt per task) or its refusal."""
from __future__ import annotations

import json
import os

from slurmexp.arrays import task_key_sql, task_set
from slurmexp.errors import SlurmexpError
from slurmexp.ledger.attempts import _NEW_ATTEMPT_COLS
from slurmexp.ledger.connection import _now
from slurmexp.ledger.rows import Submission
from slurmexp.states import RECORDED_SUBMISSION_STATES


def _runs_where(sub: dict) -> tuple[str, dict]:
    """The WHERE clause (on `runs`, named parameters) for the runs a submission's job runs:
    the chunk's, and of those only the tasks its array spec names (a resubmission of part of a
    chunk, "3,7", creates attempts only for those runs). The one rule of which runs those are:
    `record_submitted` selects by it inside SQLite, `_submission_runs` reads them."""
    where, params = "exp_id = :exp AND chunk IS :chunk", dict(exp=sub["exp_id"], chunk=sub["chunk"])
    indices = task_set(sub["array_spec"])
    if indices is None:
        return where, params
    if indices and max(indices) - min(indices) + 1 == len(indices):
        return (where + " AND (task_index IS NULL OR task_index BETWEEN :lo AND :hi)",
                dict(params, lo=min(indices), hi=max(indices)))
    return (where + " AND (task_index IS NULL OR task_index IN (SELECT value FROM json_each(:tasks)))",
            dict(params, tasks=json.dumps(sorted(indices))))


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
        """The runs of the submission's job (`_runs_where`), in task order, with only the
        columns recording its outcome reads (not each run's parameters)."""
        where, params = _runs_where(sub)
        return self._rows("SELECT exp_id, run_id, state, n_attempts, task_index FROM "
                          f"runs WHERE {where} ORDER BY task_index, idx", params)

    def record_adopted(self, sub_id: int, job_id: str | int, submit_time: str | None) -> list[int]:
        """An intent's job found by its tag after a crashed launch or an unanswered sbatch:
        recorded as `record_submitted` records an answer, the submission marked ADOPTED."""
        return self._record_job(sub_id, job_id, submit_time, adopted=True)

    def record_submitted(self, sub_id: int, job_id: str | int, submit_time: str | None = None) -> list[int]:
        """sbatch answered: the submission, one attempt per task and the runs move together.

        Called by `launch.submission.submit_chunk` only. Returns the new attempt ids.
        Repeating the call with the same job id changes nothing.
        """
        return self._record_job(sub_id, job_id, submit_time, adopted=False)

    def _record_job(self, sub_id: int, job_id: str | int, submit_time: str | None, *,
                    adopted: bool) -> list[int]:
        job_id = str(job_id)
        with self.transaction():
            sub = self._submission(sub_id)
            if sub["state"] in RECORDED_SUBMISSION_STATES:
                if sub["job_id"] == job_id:
                    return [r[0] for r in self.db.execute(
                        "SELECT attempt_id FROM attempts WHERE sub_id = ? ORDER BY attempt_id",
                        [sub_id])]
                raise SlurmexpError(f"submission {sub_id} already has job {sub['job_id']}, "
                                    f"not {job_id}")
            state = "ADOPTED" if adopted else "SUBMITTED"
            kind = "adopted" if adopted else "submitted"
            now = _now()
            self.db.execute("UPDATE submissions SET state = ?, job_id = ?, submit_time = ?, "
                            "error = NULL WHERE sub_id = ?", [state, job_id, submit_time, sub_id])
            # Three statements over the chunk's runs, stepped inside SQLite: the rows of an
            # 8,000-run launch no longer go through Python one by one (each run's dict, its
            # attempt's list, its run update's and its event's tuples; ~18 us of the ~45 us its
            # rows cost). Attempts are numbered in the runs' (task, idx) order, the order their
            # ids are returned in; each event names the state its run leaves, so the events go
            # in before the runs' update.
            where, params = _runs_where(sub)
            cols = ", ".join(_NEW_ATTEMPT_COLS)
            # The new attempts' ids follow the largest one now (attempt_id is the rowid): read
            # back by that range, not by sub_id, which has no index (a scan of every attempt).
            before = self.db.execute("SELECT coalesce(max(attempt_id), 0) FROM attempts").fetchone()[0]
            self.db.execute(
                f"INSERT INTO attempts ({cols}) SELECT exp_id, run_id, n_attempts + 1, :sub, "
                f":cluster, :job, task_index, {task_key_sql(':job', 'task_index')}, :submit, "
                f"'SUBMITTED', :now FROM runs WHERE {where} ORDER BY task_index, idx",
                dict(sub=sub_id, cluster=sub["cluster"], job=job_id, submit=submit_time, now=now,
                     **params))
            self.db.execute(
                "INSERT INTO events (ts, exp_id, run_id, attempt_id, kind, from_state, to_state, "
                "reason) SELECT ?, a.exp_id, a.run_id, a.attempt_id, ?, r.state, 'SUBMITTED', ? "
                "FROM attempts a JOIN runs r ON r.exp_id = a.exp_id AND r.run_id = a.run_id "
                "WHERE a.attempt_id > ? ORDER BY a.attempt_id",
                [now, kind, f"job {job_id} (sub_id={sub_id})", before])
            self.db.execute(
                "UPDATE runs SET state = 'SUBMITTED', reason = NULL, n_attempts = n_attempts + 1, "
                f"updated = :now WHERE {where}", dict(now=now, **params))
            return [r[0] for r in self.db.execute(
                "SELECT attempt_id FROM attempts WHERE attempt_id > ? ORDER BY attempt_id", [before])]

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

    def set_submission_submit_time(self, sub_id: int, submit_time: str) -> int:
        """Stamp a new job's submit time (from squeue) on its submission and its attempts, in
        one transaction; only where none is recorded yet. Returns the attempts changed.

        OR IGNORE, as in `set_submit_times`: an attempt whose (cluster, job key, submit time)
        another attempt already holds keeps no time rather than failing the others.
        """
        with self.transaction():
            sub = self._submission(sub_id)
            # By the job's (cluster, job_id) index, then its submission: sub_id alone has no
            # index, and this runs once a chunk of every launch, whatever the ledger's history.
            n = self.db.execute(
                "UPDATE OR IGNORE attempts SET submit_time = ?, updated = ? WHERE cluster IS ? "
                "AND job_id = ? AND sub_id = ? AND submit_time IS NULL",
                [submit_time, _now(), sub["cluster"], sub["job_id"], sub_id]).rowcount
            self.db.execute("UPDATE submissions SET submit_time = ? WHERE sub_id = ? AND "
                            "submit_time IS NULL", [submit_time, sub_id])
        return n

    def submissions(self, exp_id: str, state: str | None = None) -> list[dict]:
        sql, params = "SELECT * FROM submissions WHERE exp_id = ?", [exp_id]
        if state:
            sql, params = sql + " AND state = ?", params + [state]
        return self._rows(sql + " ORDER BY sub_id", params)

    def _submission_rows(self, where: str, params: list) -> list[Submission]:
        return Submission.from_cursor(self.db.execute(
            f"SELECT {Submission.select_list('s')} FROM submissions s WHERE {where} "
            "ORDER BY s.sub_id", params))

    def intents(self, exp_id: str | None = None) -> list[Submission]:
        """Submissions still INTENT (sbatch's outcome unknown), oldest first."""
        if exp_id is None:
            return self._submission_rows("s.state = 'INTENT'", [])
        return self._submission_rows("s.state = 'INTENT' AND s.exp_id = ?", [exp_id])

    def recorded_submissions(self, exp_id: str) -> list[Submission]:
        """The experiment's submissions that have their job (submitted or adopted)."""
        return self._submission_rows(
            "s.exp_id = ? AND s.state IN ('SUBMITTED', 'ADOPTED') AND s.job_id IS NOT NULL",
            [exp_id])

    def first_chunk_submission(self, exp_id: str, chunk: int | None) -> Submission | None:
        """The chunk's first submission that names a script (the script launch rendered)."""
        rows = Submission.from_cursor(self.db.execute(
            f"SELECT {Submission.select_list('s')} FROM submissions s WHERE s.exp_id = ? "
            "AND s.chunk IS ? AND s.script_path IS NOT NULL ORDER BY s.sub_id LIMIT 1",
            [exp_id, chunk]))
        return rows[0] if rows else None
