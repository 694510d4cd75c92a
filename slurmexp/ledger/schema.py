"""The ledger's tables and how a ledger file of any older version is brought up to date.

Version N of the schema is what MIGRATIONS[0..N-1] build; the version is kept in the `meta`
table. Each migration runs in its own BEGIN IMMEDIATE transaction, together with the version
bump, so a ledger is always at exactly one version, and concurrent openers migrate once.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import slurmexp.ledger.opening as opening
from slurmexp.errors import Problem, SlurmexpError
from slurmexp.states import REQUEUES_STATES_AT_SCHEMA_8, TERMINAL_STATES_AT_SCHEMA_8

if TYPE_CHECKING:  # pragma: no cover
    from slurmexp.ledger.connection import LedgerConnection
    from slurmexp.ledger.sql import Database


def _migration_1(db: Database) -> None:
    db.executescript("""
    CREATE TABLE experiments (
        exp_id TEXT PRIMARY KEY, name TEXT NOT NULL, fingerprint TEXT NOT NULL,
        created TEXT NOT NULL, cluster TEXT,
        backend TEXT NOT NULL CHECK (backend IN ('slurm', 'local')),
        state TEXT NOT NULL, reason TEXT, updated TEXT,
        sweep_path TEXT, exp_dir TEXT, sweep_copy_path TEXT, site_path TEXT, site_hash TEXT,
        template_hash TEXT, provenance_json TEXT, n_runs INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX experiments_fingerprint ON experiments (fingerprint);
    CREATE TABLE runs (
        exp_id TEXT NOT NULL REFERENCES experiments (exp_id), run_id TEXT NOT NULL,
        idx INTEGER NOT NULL, params_json TEXT NOT NULL, seed INTEGER, source TEXT,
        state TEXT NOT NULL, reason TEXT, run_dir TEXT, chunk INTEGER, task_index INTEGER,
        n_attempts INTEGER NOT NULL DEFAULT 0, updated TEXT,
        PRIMARY KEY (exp_id, run_id)
    );
    CREATE INDEX runs_exp_state ON runs (exp_id, state);
    CREATE INDEX runs_exp_chunk ON runs (exp_id, chunk, task_index);
    CREATE TABLE submissions (
        sub_id INTEGER PRIMARY KEY, exp_id TEXT NOT NULL REFERENCES experiments (exp_id),
        chunk INTEGER, array_spec TEXT, n_tasks INTEGER, script_path TEXT,
        script_sha256 TEXT, state TEXT NOT NULL, job_id TEXT, cluster TEXT,
        submit_time TEXT, created TEXT NOT NULL, error TEXT
    );
    CREATE INDEX submissions_exp ON submissions (exp_id, chunk);
    CREATE TABLE attempts (
        attempt_id INTEGER PRIMARY KEY, exp_id TEXT NOT NULL, run_id TEXT NOT NULL,
        attempt_no INTEGER NOT NULL, sub_id INTEGER REFERENCES submissions (sub_id),
        cluster TEXT, job_id TEXT, task_index INTEGER, job_key TEXT, slurm_job_id TEXT,
        submit_time TEXT, state TEXT NOT NULL, reason TEXT, node TEXT, partition TEXT,
        qos TEXT, account TEXT, start_time TEXT, end_time TEXT, elapsed_s REAL,
        exit_code INTEGER, alloc_tres TEXT, req_mem TEXT, max_rss REAL, total_cpu_s REAL,
        failure_class TEXT, updated TEXT, sacct_json TEXT,
        FOREIGN KEY (exp_id, run_id) REFERENCES runs (exp_id, run_id),
        UNIQUE (cluster, job_key, submit_time)
    );
    CREATE INDEX attempts_exp_state ON attempts (exp_id, state);
    CREATE INDEX attempts_cluster_job ON attempts (cluster, job_id);
    CREATE INDEX attempts_run ON attempts (exp_id, run_id, attempt_no);
    CREATE TABLE events (
        event_id INTEGER PRIMARY KEY, ts TEXT NOT NULL,
        exp_id TEXT REFERENCES experiments (exp_id), run_id TEXT, attempt_id INTEGER,
        kind TEXT NOT NULL, from_state TEXT, to_state TEXT, reason TEXT
    );
    CREATE INDEX events_exp_run ON events (exp_id, run_id);
    CREATE TABLE heartbeats (
        id INTEGER PRIMARY KEY, ts TEXT NOT NULL, kind TEXT NOT NULL,
        ok INTEGER NOT NULL, summary_json TEXT
    );
    CREATE INDEX heartbeats_kind ON heartbeats (kind, id);
    """)


def _migration_2(db: Database) -> None:
    # What reconcile needs to retry without the sweep file: the retry policy, the partition's
    # limits and the requested resources, as JSON (see launch.settings_for).
    db.execute("ALTER TABLE experiments ADD COLUMN settings_json TEXT")


def _migration_3(db: Database) -> None:
    # When the controller was first seen not listing a job that sacct says is still going (a
    # runaway record after a controller state loss becomes LOST after the grace period).
    # A column, so that what the reason text says can change without breaking that clock.
    db.execute("ALTER TABLE attempts ADD COLUMN unlisted_since TEXT")


def _rebuilds_tables(migration: Callable[[Database], None]):
    """Marks a migration that drops and recreates a table: `migrate` runs it with foreign keys
    off (a DROP TABLE would otherwise delete through them) and checks them before commit."""
    migration.rebuilds_tables = True  # type: ignore[attr-defined]
    return migration


_EXPERIMENTS_V4 = """
CREATE TABLE experiments_v4 (
    exp_id TEXT PRIMARY KEY, name TEXT NOT NULL, fingerprint TEXT NOT NULL,
    created TEXT NOT NULL, cluster TEXT, backend TEXT NOT NULL,
    state TEXT NOT NULL, reason TEXT, updated TEXT,
    sweep_path TEXT, exp_dir TEXT, sweep_copy_path TEXT, site_path TEXT, site_hash TEXT,
    template_hash TEXT, provenance_json TEXT, n_runs INTEGER NOT NULL DEFAULT 0,
    settings_json TEXT
)"""
_EXPERIMENTS_COLUMNS = (
    "exp_id, name, fingerprint, created, cluster, backend, state, reason, updated, sweep_path, "
    "exp_dir, sweep_copy_path, site_path, site_hash, template_hash, provenance_json, n_runs, "
    "settings_json")


@_rebuilds_tables
def _migration_4(db: Database) -> None:
    # The backend kinds are the backends' registry's business (slurmexp/backends/base.py);
    # the ledger stores the name. SQLite cannot drop a CHECK constraint, so the table is
    # rebuilt as https://www.sqlite.org/lang_altertable.html#otheralter says: new table, copy,
    # drop, rename (the other tables' foreign keys name `experiments`, and find it again),
    # then its indexes.
    db.execute(_EXPERIMENTS_V4)
    db.execute(f"INSERT INTO experiments_v4 ({_EXPERIMENTS_COLUMNS}) "
               f"SELECT {_EXPERIMENTS_COLUMNS} FROM experiments")
    db.execute("DROP TABLE experiments")
    db.execute("ALTER TABLE experiments_v4 RENAME TO experiments")
    db.execute("CREATE INDEX experiments_fingerprint ON experiments (fingerprint)")


def _migration_5(db: Database) -> None:
    # An experiment's tags (a JSON list, `launch --tag`, [meta] tags) and note (`launch --note`,
    # [meta] description), which `status --tag` filters on; when `slurmexp archive` hid it.
    db.execute("ALTER TABLE experiments ADD COLUMN tags_json TEXT")
    db.execute("ALTER TABLE experiments ADD COLUMN note TEXT")
    db.execute("ALTER TABLE experiments ADD COLUMN archived TEXT")


def _migration_6(db: Database) -> None:
    # `launch --skip-completed`: a run's reuse key (its command and resources, hashed), and for
    # a run reused from another experiment, that experiment and the attempt that completed it.
    # `[notify]`: whether the experiment's command is still due ('pending'), and when it ran
    # with what outcome (a JSON object), so that it never runs twice.
    db.execute("ALTER TABLE runs ADD COLUMN reuse_key TEXT")
    db.execute("ALTER TABLE runs ADD COLUMN reused_from TEXT")
    db.execute("ALTER TABLE runs ADD COLUMN reused_attempt INTEGER")
    db.execute("CREATE INDEX runs_reuse ON runs (reuse_key, state)")
    db.execute("ALTER TABLE experiments ADD COLUMN notify_state TEXT")
    db.execute("ALTER TABLE experiments ADD COLUMN notified_json TEXT")


def _migration_7(db: Database) -> None:
    # The run's metrics summary (metrics_json: the flat {name: value} read_metrics gives, as
    # JSON; "{}" when the run had none) as reconcile read it when it recorded the attempt's
    # final state, in that transaction: a report of a finished sweep reads it here instead of
    # opening every run's metrics file. NULL: not stored (active attempts, ledgers before this
    # version), and the report reads the files.
    db.execute("ALTER TABLE attempts ADD COLUMN metrics_json TEXT")


# A query uses a partial index only when its WHERE holds the index's term as written, literals
# and all: `ledger.attempts` writes these lists (frozen in `states` when migration 8 was written)
# into its queries, and tests/test_ledger_schema.py fails when the live sets drift from them.
TERMINAL_STATES_V8 = TERMINAL_STATES_AT_SCHEMA_8
ACTIVE_ATTEMPT_SQL = f"state NOT IN ({', '.join(repr(s) for s in TERMINAL_STATES_V8)})"
# The failed attempts a pass watches while their run's retry waits (Ledger.requeue_watch).
REQUEUES_STATES_V8 = REQUEUES_STATES_AT_SCHEMA_8
REQUEUE_WATCH_SQL = f"state IN ({', '.join(repr(s) for s in REQUEUES_STATES_V8)})"


def _migration_8(db: Database) -> None:
    # What a reconcile pass reads (its active attempts, cancels awaiting their final record, the
    # PLANNED runs it may submit, failed attempts Slurm may still requeue) without a scan of
    # every finished attempt and run in history.
    db.execute(f"CREATE INDEX attempts_active ON attempts (attempt_id) WHERE {ACTIVE_ATTEMPT_SQL}")
    db.execute("CREATE INDEX attempts_cancel_open ON attempts (attempt_id) "
               "WHERE state = 'CANCELLED' AND end_time IS NULL")
    db.execute("CREATE INDEX runs_planned ON runs (exp_id, chunk, task_index) WHERE state = 'PLANNED'")
    db.execute(f"CREATE INDEX attempts_requeue_watch ON attempts (attempt_id) WHERE {REQUEUE_WATCH_SQL}")


# The runs `launch --skip-completed` may take over (`ReuseMixin.completed_by_reuse_key`): its
# query writes this term as it stands, so that SQLite uses migration 9's partial index.
REUSABLE_RUN_SQL = "state = 'COMPLETED' AND reused_from IS NULL"


def _migration_9(db: Database) -> None:
    # Schema 6's (reuse_key, state) index held every run: a reuse key is a hash, so each run's
    # insert and each state change went to a random page of an index as large as the ledger's
    # history, and a launch's rows cost more with every earlier experiment (bench/
    # bench_ledger_rows.py, 8,000 runs beside 48,000 earlier ones: 55.7 us a run, 25.9 us with
    # this index; 24.3 and 19.0 us in an empty ledger). Only completed runs that ran are ever
    # looked up by key (`ReuseMixin.completed_by_reuse_key`); they alone are indexed.
    db.execute("DROP INDEX IF EXISTS runs_reuse")
    db.execute(f"CREATE INDEX runs_reusable ON runs (reuse_key) WHERE {REUSABLE_RUN_SQL}")


# Version N is MIGRATIONS[N-1]. Append only: a released migration never changes.
MIGRATIONS: list[Callable[[Database], None]] = [
    _migration_1, _migration_2, _migration_3, _migration_4, _migration_5,
    _migration_6, _migration_7, _migration_8, _migration_9]


def schema_version(db: Database) -> int:
    if not db.table_exists("meta"):
        return 0
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def build_new(db: Database) -> None:
    """The current schema in an empty database that nobody else sees yet (a new ledger's
    temporary file): every migration in order, as an old ledger would have got them."""
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value)")
    for migration in MIGRATIONS:
        migration(db)
    db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", [str(len(MIGRATIONS))])


def migrate(ledger: LedgerConnection) -> None:
    # The version is re-read inside each transaction: another process may have migrated
    # while this one waited for the lock.
    for version, migration in enumerate(MIGRATIONS, start=1):
        if ledger.schema_version >= version:
            continue
        rebuild = getattr(migration, "rebuilds_tables", False)
        if rebuild:
            # Only outside a transaction does this pragma take effect.
            ledger.db.execute("PRAGMA foreign_keys = OFF")
        try:
            with ledger.transaction():
                ledger.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value)")
                if ledger.schema_version >= version:
                    continue
                broken = _foreign_key_violations(ledger) if rebuild else set()
                migration(ledger.db)
                if rebuild:
                    _check_foreign_keys(ledger, version, broken)
                ledger.db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                    [str(version)])
        finally:
            if rebuild:
                ledger.db.execute("PRAGMA foreign_keys = ON")
    if ledger.schema_version > len(MIGRATIONS):
        raise opening.newer(ledger.path, ledger.schema_version, len(MIGRATIONS))


def _foreign_key_violations(ledger: LedgerConnection) -> set[tuple]:
    return {tuple(r) for r in ledger.db.execute("PRAGMA foreign_key_check").fetchall()}


def _check_foreign_keys(ledger: LedgerConnection, version: int, before: set[tuple]) -> None:
    """A rebuild must not break a reference that held before it (the transaction rolls back)."""
    new = sorted(_foreign_key_violations(ledger) - before, key=str)
    if new:
        table, rowid, parent, _ = new[0]
        raise SlurmexpError(
            f"ledger {ledger.path}: migration to schema version {version} would break "
            f"{len(new)} foreign key reference(s); nothing was changed",
            [Problem(str(ledger.path), table, f"row {rowid} would refer to a missing {parent} row",
                     fix="keep a copy of the file and report this; the slurmexp that wrote it "
                         "still reads it")])
