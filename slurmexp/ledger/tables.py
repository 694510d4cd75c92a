"""Whole tables for reports, as pandas frames: one `read_sql_query` each, on the ledger's own
connection, so 100,000 runs cost one query per table (see bench/README.md).

pandas is imported inside the methods: opening a ledger must not import it.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

# What a report reads of each table (not the raw sacct record, not bookkeeping times).
RUN_TABLE_COLUMNS = ("exp_id, run_id, idx, params_json, seed, source, state, reason, run_dir, "
                     "chunk, task_index, n_attempts, reused_from, reused_attempt")
ATTEMPT_TABLE_COLUMNS = (
    "attempt_id, exp_id, run_id, attempt_no, sub_id, cluster, job_id, task_index, job_key, "
    "submit_time, state, reason, node, partition, qos, account, start_time, end_time, "
    "elapsed_s, exit_code, alloc_tres, req_mem, max_rss, total_cpu_s, failure_class")
# The run table's CSV without frames (report.csv_rows): each run with each of its attempts.
REPORT_ROW_COLUMNS = (
    "r.exp_id, r.run_id, r.idx, r.params_json, r.seed, r.source, r.state, r.reason, r.run_dir, "
    "r.n_attempts, r.reused_from, a.attempt_id, a.job_key, a.submit_time, a.state, a.node, "
    "a.partition, a.qos, a.start_time, a.end_time, a.elapsed_s, a.exit_code, a.alloc_tres, "
    "a.req_mem, a.max_rss, a.total_cpu_s, a.failure_class, a.metrics_json")


class TablesMixin:
    def _frame(self, columns: str, table: str, exp_ids: Sequence[str] | None,
               order: str) -> pd.DataFrame:
        import pandas as pd
        sql, params = f"SELECT {columns} FROM {table}", []
        if exp_ids is not None:
            sql += f" WHERE exp_id IN ({', '.join('?' * len(exp_ids))})"
            params = list(exp_ids)
        return pd.read_sql_query(f"{sql} ORDER BY {order}", self.db.conn, params=params)

    def runs_table(self, exp_ids: Sequence[str] | None = None) -> pd.DataFrame:
        """The runs of `exp_ids` (all when None), by experiment and index; params as JSON."""
        return self._frame(RUN_TABLE_COLUMNS, "runs", exp_ids, "exp_id, idx")

    def stored_metrics(self, exp_ids: Sequence[str] | None = None) -> dict[tuple[str, str], str]:
        """{(exp_id, run_id): metrics_json} of the runs of `exp_ids` (all when None) whose
        newest attempt (highest attempt_no, then attempt_id: the row `attempts_table` lists
        last) has its metrics summary stored (schema 7); the other runs' are in their files."""
        sql, params = "SELECT exp_id, run_id, metrics_json FROM attempts", []
        if exp_ids is not None:
            sql += f" WHERE exp_id IN ({', '.join('?' * len(exp_ids))})"
            params = list(exp_ids)
        rows = self.db.execute(f"{sql} ORDER BY exp_id, run_id, attempt_no, attempt_id", params)
        newest = {(e, r): m for e, r, m in rows}           # each run's last row wins
        return {k: m for k, m in newest.items() if m is not None}

    def attempts_table(self, exp_ids: Sequence[str] | None = None) -> pd.DataFrame:
        """The attempts of `exp_ids` (all when None), by experiment, run and attempt number."""
        return self._frame(ATTEMPT_TABLE_COLUMNS, "attempts", exp_ids,
                           "exp_id, run_id, attempt_no, attempt_id")

    def report_rows(self, exp_ids: Sequence[str]) -> list[tuple]:
        """The runs of `exp_ids` joined with their attempts (REPORT_ROW_COLUMNS): one row per
        attempt, one with the attempt's columns NULL for a run without any; by experiment and
        index (as `runs_table`), then attempt number and id (as `attempts_table`), so a run's
        rows are consecutive and its newest attempt is its last row."""
        marks = ", ".join("?" * len(exp_ids))
        return self.db.conn.execute(
            f"SELECT {REPORT_ROW_COLUMNS} FROM runs r LEFT JOIN attempts a "
            "ON a.exp_id = r.exp_id AND a.run_id = r.run_id "
            f"WHERE r.exp_id IN ({marks}) ORDER BY r.exp_id, r.idx, a.attempt_no, a.attempt_id",
            list(exp_ids)).fetchall()
