"""The SQLite ledger: the one place that remembers what was planned, submitted and seen.

Every state change is written together with its event in one `BEGIN IMMEDIATE` transaction,
so a launch that dies between sbatch and the ledger update leaves an `INTENT` row to recover
from rather than jobs nobody knows about, and the event log never disagrees with the tables.
Several slurmexp processes (a launch, a cron reconcile, a report) may touch the file at once;
the busy timeout plus immediate transactions serialise them instead of failing.
"""
from __future__ import annotations

import contextlib
import difflib
import itertools
import json
import os
import posixpath
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from slurmexp.errors import Problem, SlurmexpError
from slurmexp.settings import ExperimentSettings


def _import_sqlite_utils():
    """sqlite-utils imports pandas and numpy at import time when they are installed (~0.4 s).

    The ledger stores plain Python values only, so those type mappings are never needed; block
    the two imports while sqlite-utils loads, so `slurmexp status` stays fast. They are
    unblocked right after: `slurmexp report` imports pandas itself.
    """
    import sys

    if "sqlite_utils" in sys.modules:
        return sys.modules["sqlite_utils"]
    blocked = [name for name in ("pandas", "numpy") if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]  # makes `import name` raise ImportError
    try:
        import sqlite_utils
    finally:
        for name in blocked:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]
    return sqlite_utils


sqlite_utils = _import_sqlite_utils()

TERMINAL_STATES = frozenset({
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
    "PREEMPTED", "BOOT_FAIL", "DEADLINE", "LOST",
})
ACTIVE_STATES = frozenset({"PLANNED", "SUBMITTED", "PENDING", "RUNNING", "REQUEUED", "SUSPENDED"})

# WAL keeps its index in a shared-memory file, which only works when every process using the
# database is on the same host; on these file systems another node can corrupt it.
NETWORK_FS_TYPES = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "fuse.beegfs",
    "fuse.sshfs", "ceph", "fuse.ceph", "glusterfs", "fuse.glusterfs", "afs", "panfs",
})
JOURNAL_MODES = ("WAL", "DELETE", "TRUNCATE", "PERSIST")
BUSY_TIMEOUT_S = 30
# sqlite-utils caps a statement at 999 variables, so it shrinks this to fit the column count.
BATCH_SIZE = 500


def default_ledger_path() -> Path:
    home = os.environ.get("SLURMEXP_HOME")
    base = Path(home).expanduser() if home else Path.home() / ".slurmexp"
    return base / "ledger.db"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _path_str(p: str | os.PathLike | None) -> str | None:
    return None if p is None else os.fspath(p)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


# --- journal mode choice -----------------------------------------------------------------

def _unescape_mount(field: str) -> str:
    # /proc/self/mounts writes space, tab, newline and backslash as octal escapes.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def fs_type_for_path(path: str | os.PathLike, mounts_text: str) -> str | None:
    """File system type of `path` according to a /proc/self/mounts text (pure, for tests).

    The longest mount point containing the path wins; among equal mount points the later
    line wins, because a later mount hides an earlier one at the same place.
    """
    target = posixpath.normpath(os.fspath(path))
    best, best_len = None, -1
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = posixpath.normpath(_unescape_mount(fields[1]))
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= best_len:
            best, best_len = fields[2], len(mount)
    return best


def is_network_fs(fs_type: str | None) -> bool:
    return bool(fs_type) and (fs_type in NETWORK_FS_TYPES or fs_type.startswith("nfs"))


def detect_fs_type(directory: str | os.PathLike) -> str | None:
    """None where /proc/self/mounts is unreadable (not Linux): treated as a local disk."""
    try:
        text = Path("/proc/self/mounts").read_text()
    except OSError:
        return None
    return fs_type_for_path(os.path.realpath(directory), text)


def choose_journal_mode(fs_type: str | None, override: str | None = None) -> str:
    if override:
        mode = override.strip().upper()
        if mode not in JOURNAL_MODES:
            raise SlurmexpError(
                f"unknown SQLite journal mode {override!r}",
                [Problem("", "SLURMEXP_JOURNAL_MODE", f"{override!r} is not a journal mode",
                         fix=f"use one of {', '.join(JOURNAL_MODES)}, or unset it")])
        return mode
    return "DELETE" if is_network_fs(fs_type) else "WAL"


# --- array specs -------------------------------------------------------------------------

def parse_array_spec(spec: str) -> set[int] | None:
    """Task indices named by an sbatch --array spec ("0-9%2", "1,3,5-11:2"); None if empty."""
    spec = (spec or "").split("%", 1)[0].strip()
    if not spec:
        return None
    out: set[int] = set()
    for part in spec.split(","):
        rng, _, step = part.partition(":")
        lo, _, hi = rng.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1, int(step or 1)))
    return out


# --- schema ------------------------------------------------------------------------------

def _migration_1(db: sqlite_utils.Database) -> None:
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


def _migration_2(db: sqlite_utils.Database) -> None:
    # What reconcile needs to retry without the sweep file: the retry policy, the partition's
    # limits and the requested resources, as JSON (see launch.settings_for).
    db.execute("ALTER TABLE experiments ADD COLUMN settings_json TEXT")


# Version N is MIGRATIONS[N-1]. Append only: a released migration never changes.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_migration_1, _migration_2]

_ATTEMPT_FIXED = {"attempt_id", "exp_id", "run_id", "attempt_no"}
_EVENT_COLS = ["exp_id", "run_id", "attempt_id", "kind", "from_state", "to_state", "reason"]
_RUN_COLS = ["exp_id", "run_id", "idx", "params_json", "seed", "source", "state", "reason",
             "run_dir", "chunk", "task_index", "n_attempts", "updated"]
_NEW_ATTEMPT_COLS = ["exp_id", "run_id", "attempt_no", "sub_id", "cluster", "job_id",
                     "task_index", "job_key", "submit_time", "state", "updated"]


class Ledger:
    """One SQLite ledger file. Not shared across threads or forks: open one per process."""

    def __init__(self, path: str | os.PathLike | None = None, *, journal_mode: str | None = None):
        self.path = Path(path).expanduser() if path is not None else default_ledger_path()
        self._depth = 0
        self._attempt_cols: list[str] | None = None
        self._create_file()
        self.fs_type = detect_fs_type(self.path.parent)
        wanted = choose_journal_mode(
            self.fs_type, journal_mode or os.environ.get("SLURMEXP_JOURNAL_MODE"))
        # isolation_level=None: no implicit transactions; every write transaction is ours.
        conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
        self.db = sqlite_utils.Database(conn, execute_plugins=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
        self.journal_mode = conn.execute(f"PRAGMA journal_mode = {wanted}").fetchone()[0].upper()
        sync = "NORMAL" if self.journal_mode == "WAL" else "FULL"
        conn.execute(f"PRAGMA synchronous = {sync}")
        conn.execute("PRAGMA foreign_keys = ON")
        try:
            self._migrate()
        except BaseException:
            self.db.close()
            raise

    def _create_file(self) -> None:
        # Created by us with 0600 before SQLite sees it: sweeps and provenance can be private.
        parent = self.path.parent
        if not parent.exists():
            os.makedirs(parent, mode=0o700, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        for p in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
            with contextlib.suppress(OSError):
                if p.stat().st_mode & 0o077:
                    os.chmod(p, 0o600)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Ledger]:
        """BEGIN IMMEDIATE, so the write lock is taken up front and waits on the busy timeout.

        A deferred transaction that reads first and writes later can fail with SQLITE_BUSY
        without waiting; taking the lock at BEGIN avoids that. Nested use becomes a savepoint,
        so API methods compose inside a caller's larger transaction.
        """
        conn = self.db.conn
        if self._depth:
            name = f"sx_{self._depth}"
            conn.execute(f"SAVEPOINT {name}")
            self._depth += 1
            try:
                yield self
            except BaseException:
                if conn.in_transaction:
                    conn.execute(f"ROLLBACK TO {name}")
                    conn.execute(f"RELEASE {name}")
                raise
            else:
                conn.execute(f"RELEASE {name}")
            finally:
                self._depth -= 1
            return
        conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            self._depth = 0

    # --- schema ---------------------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        if not self.db["meta"].exists():
            return 0
        row = self.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    def _migrate(self) -> None:
        # The version is re-read inside each transaction: another process may have migrated
        # while this one waited for the lock.
        for version, migration in enumerate(MIGRATIONS, start=1):
            if self.schema_version >= version:
                continue
            with self.transaction():
                self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value)")
                if self.schema_version >= version:
                    continue
                migration(self.db)
                self.db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                    [str(version)])
        if self.schema_version > len(MIGRATIONS):
            raise SlurmexpError(
                f"ledger {self.path} has schema version {self.schema_version}, newer than "
                f"this slurmexp understands ({len(MIGRATIONS)})",
                [Problem(str(self.path), "meta.schema_version", "written by a newer slurmexp",
                         fix="upgrade slurmexp, or set SLURMEXP_HOME to use another ledger")])

    # --- helpers --------------------------------------------------------------------------

    def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[dict]:
        return list(self.db.query(sql, list(params)))

    def _event(self, kind: str, exp_id: str | None, run_id: str | None = None,
               attempt_id: int | None = None, from_state: str | None = None,
               to_state: str | None = None, reason: str | None = None) -> None:
        self.db.execute(
            "INSERT INTO events (ts, exp_id, run_id, attempt_id, kind, from_state, to_state, "
            "reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [_now(), exp_id, run_id, attempt_id, kind, from_state, to_state, reason])

    def _insert_rows(self, table: str, columns: list[str], rows: Iterable[list]) -> None:
        # sqlite-utils' list mode (first record = column names): for 100,000 runs it skips a
        # per-value dict walk that otherwise costs more than SQLite's own work.
        self.db[table].insert_all(itertools.chain([columns], rows), batch_size=BATCH_SIZE)

    def _events_bulk(self, events: Iterable[list]) -> None:
        """Rows of (exp_id, run_id, attempt_id, kind, from_state, to_state, reason)."""
        now = _now()
        self._insert_rows("events", ["ts", *_EVENT_COLS], ([now, *e] for e in events))

    # --- experiments ----------------------------------------------------------------------

    def create_experiment(self, exp_id: str, name: str, fingerprint: str, cluster: str | None,
                          backend: str, exp_dir: str | os.PathLike | None,
                          sweep_path: str | os.PathLike | None,
                          sweep_copy_path: str | os.PathLike | None,
                          site_path: str | os.PathLike | None, site_hash: str | None,
                          template_hash: str | None, provenance: dict | None,
                          runs: list[dict]) -> dict:
        """Experiment and all its runs (PLANNED) in one transaction: never half a sweep."""
        now = _now()
        s = _path_str
        rows = [[exp_id, r["run_id"], r.get("idx", r.get("index")), _json(r.get("params", {})),
                 r.get("seed"), r.get("source"), "PLANNED", None, s(r.get("run_dir")),
                 r.get("chunk"), r.get("task_index"), 0, now] for r in runs]
        try:
            with self.transaction():
                self.db["experiments"].insert({
                    "exp_id": exp_id, "name": name, "fingerprint": fingerprint, "created": now,
                    "cluster": cluster, "backend": backend, "state": "PLANNED",
                    "reason": None, "updated": now, "sweep_path": s(sweep_path),
                    "exp_dir": s(exp_dir), "sweep_copy_path": s(sweep_copy_path),
                    "site_path": s(site_path), "site_hash": site_hash,
                    "template_hash": template_hash, "provenance_json": _json(provenance or {}),
                    "n_runs": len(rows)})
                self._insert_rows("runs", _RUN_COLS, rows)
                self._event("created", exp_id, to_state="PLANNED", reason=f"{len(rows)} runs")
        except sqlite3.IntegrityError as e:
            if self.db.execute("SELECT 1 FROM experiments WHERE exp_id = ?", [exp_id]).fetchone():
                what, fix = f"experiment {exp_id!r} already exists", "launch with --new for a copy"
            else:
                what, fix = f"experiment {exp_id!r} could not be recorded", "check the run ids"
            raise SlurmexpError(what, [Problem(str(self.path), "runs", str(e), fix)]) from e
        return self.get_experiment(exp_id, required=True)

    @staticmethod
    def _experiment_dict(row: dict) -> dict:
        row["provenance"] = json.loads(row["provenance_json"] or "{}")
        return row

    def get_experiment(self, exp_id: str, required: bool = False) -> dict | None:
        rows = self._rows("SELECT * FROM experiments WHERE exp_id = ?", [exp_id])
        if rows:
            return self._experiment_dict(rows[0])
        if not required:
            return None
        known = [r["exp_id"] for r in self._rows(
            "SELECT exp_id FROM experiments ORDER BY created DESC")]
        close = [k for k in known if k.startswith(exp_id)] or difflib.get_close_matches(
            exp_id, known, n=3)
        if close:
            fix = f"did you mean {', '.join(close[:5])}?"
        elif known:
            more = f" (and {len(known) - 10} more)" if len(known) > 10 else ""
            shown = ", ".join(known[:10]) + more
            fix = f"known experiments, newest first: {shown}"
        else:
            fix = "this ledger has no experiments yet; launch one first (or check SLURMEXP_HOME)"
        raise SlurmexpError(f"no experiment {exp_id!r} in ledger {self.path}",
                            [Problem(str(self.path), "experiments", f"unknown id {exp_id!r}", fix)])

    def find_experiment_by_fingerprint(self, fingerprint: str) -> list[dict]:
        return [self._experiment_dict(r) for r in self._rows(
            "SELECT * FROM experiments WHERE fingerprint = ? ORDER BY created, exp_id",
            [fingerprint])]

    def experiments(self) -> list[dict]:
        return [self._experiment_dict(r) for r in self._rows(
            "SELECT * FROM experiments ORDER BY created, exp_id")]

    def next_experiment_suffix(self, base_id: str) -> str:
        """"" when `base_id` is free, else "-N" with N one past the highest suffix in use."""
        like = base_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "-%"
        ids = [r[0] for r in self.db.execute(
            "SELECT exp_id FROM experiments WHERE exp_id = ? OR exp_id LIKE ? ESCAPE '\\'",
            [base_id, like])]
        if base_id not in ids:
            return ""
        taken = [int(m.group(1)) for i in ids
                 if (m := re.fullmatch(re.escape(base_id) + r"-(\d+)", i))]
        return f"-{max([1, *taken]) + 1}"

    def experiment_settings(self, exp_id: str) -> ExperimentSettings:
        """The experiment's stored settings (empty ones when none were stored)."""
        row = self.db.execute("SELECT settings_json FROM experiments WHERE exp_id = ?",
                              [exp_id]).fetchone()
        if row is None:
            self.get_experiment(exp_id, required=True)   # raises with the usual hints
        return ExperimentSettings.from_json(row[0] if row else None)

    def set_experiment_settings(self, exp_id: str, settings: ExperimentSettings | dict) -> None:
        if isinstance(settings, dict):      # the version-1 layout, as older callers write it
            settings = ExperimentSettings.from_dict(settings)
        with self.transaction():
            self.get_experiment(exp_id, required=True)
            self.db.execute("UPDATE experiments SET settings_json = ? WHERE exp_id = ?",
                            [settings.to_json(), exp_id])

    def set_experiment_state(self, exp_id: str, state: str, reason: str | None = None) -> None:
        with self.transaction():
            old = self.get_experiment(exp_id, required=True)["state"]
            self.db.execute("UPDATE experiments SET state = ?, reason = ?, updated = ? "
                            "WHERE exp_id = ?", [state, reason, _now(), exp_id])
            self._event("experiment_state", exp_id, from_state=old, to_state=state, reason=reason)

    # --- submissions ----------------------------------------------------------------------

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

    def set_submit_times(self, cluster: str | None, job_id: str | int, submit_time: str, *,
                         sub_id: int | None = None) -> int:
        """Fill in a job's submit time where it is not known yet; returns the attempts changed.

        `sub_id` limits it to one submission's rows (what submitting just created), so an old
        attempt of a reused job id is never given the new job's time. OR IGNORE: if an attempt
        with the same (cluster, job_key, submit_time) already exists the row is left without a
        time rather than failing the whole reconcile.
        """
        where, params = "cluster IS ? AND job_id = ? AND submit_time IS NULL", [cluster, str(job_id)]
        if sub_id is not None:
            where, params = where + " AND sub_id = ?", params + [sub_id]
        with self.transaction():
            n = self.db.execute(f"UPDATE OR IGNORE attempts SET submit_time = ?, updated = ? WHERE {where}",
                                [submit_time, _now(), *params]).rowcount
            self.db.execute(f"UPDATE submissions SET submit_time = ? WHERE {where}",
                            [submit_time, *params])
        return n

    def submissions(self, exp_id: str, state: str | None = None) -> list[dict]:
        sql, params = "SELECT * FROM submissions WHERE exp_id = ?", [exp_id]
        if state:
            sql, params = sql + " AND state = ?", params + [state]
        return self._rows(sql + " ORDER BY sub_id", params)

    # --- runs and attempts ----------------------------------------------------------------

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
        unknown = set(fields) - set(self._attempt_columns()) | (set(fields) & _ATTEMPT_FIXED)
        if unknown:
            raise TypeError(f"update_attempt: cannot set {sorted(unknown)}")
        if isinstance(fields.get("sacct_json"), (dict, list)):
            fields["sacct_json"] = _json(fields["sacct_json"])
        if reason is not None:
            fields["reason"] = reason
        with self.transaction():
            old = self._attempt(attempt_id)
            if fields.get("state", old["state"]) != old["state"]:
                fields.setdefault("reason", None)   # the old state's reason no longer holds
            changed = {k: v for k, v in fields.items() if old[k] != v}
            if not changed:
                return old
            now = _now()
            changed["updated"] = now
            # Column names were checked against the table above, so formatting them is safe.
            assignments = ", ".join(f"{k} = ?" for k in changed)
            self.db.execute(f"UPDATE attempts SET {assignments} WHERE attempt_id = ?",
                            [*changed.values(), attempt_id])
            new_state = changed.get("state")
            if new_state is not None:
                self._event("state", old["exp_id"], old["run_id"], attempt_id,
                            old["state"], new_state, fields["reason"])
                self.db.execute(
                    "UPDATE runs SET state = ?, reason = ?, updated = ? WHERE exp_id = ? AND "
                    "run_id = ? AND n_attempts = ?",
                    [new_state, fields["reason"], now, old["exp_id"], old["run_id"],
                     old["attempt_no"]])
            elif "reason" in changed:
                self.db.execute(
                    "UPDATE runs SET reason = ?, updated = ? WHERE exp_id = ? AND run_id = ? "
                    "AND n_attempts = ?",
                    [changed["reason"], now, old["exp_id"], old["run_id"], old["attempt_no"]])
            return {**old, **changed}

    def _attempt_columns(self) -> list[str]:
        if self._attempt_cols is None:
            self._attempt_cols = [c.name for c in self.db["attempts"].columns]
        return self._attempt_cols

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
            where.append(f"state NOT IN ({', '.join('?' * len(TERMINAL_STATES))})")
            params += sorted(TERMINAL_STATES)
        sql = "SELECT * FROM attempts" + (f" WHERE {' AND '.join(where)}" if where else "")
        return self._rows(sql + " ORDER BY attempt_id", params)

    def events(self, exp_id: str, run_id: str | None = None) -> list[dict]:
        sql, params = "SELECT * FROM events WHERE exp_id = ?", [exp_id]
        if run_id is not None:
            sql, params = sql + " AND run_id = ?", params + [run_id]
        return self._rows(sql + " ORDER BY event_id", params)

    def counts_by_state(self, exp_id: str) -> dict[str, int]:
        return dict(self.db.execute(
            "SELECT state, COUNT(*) FROM runs WHERE exp_id = ? GROUP BY state ORDER BY state",
            [exp_id]).fetchall())

    # --- Python-function experiments (slurmexp.functions, slurmexp.submitit) ------------

    def add_runs(self, exp_id: str, runs: list[dict]) -> int:
        """Append PLANNED runs to an existing experiment (a drop-in executor extending a named
        experiment). Same row shape as `create_experiment`'s runs; one transaction."""
        now = _now()
        s = _path_str
        rows = [[exp_id, r["run_id"], r.get("idx", r.get("index")), _json(r.get("params", {})),
                 r.get("seed"), r.get("source"), "PLANNED", None, s(r.get("run_dir")),
                 r.get("chunk"), r.get("task_index"), 0, now] for r in runs]
        try:
            with self.transaction():
                self.get_experiment(exp_id, required=True)
                self._insert_rows("runs", _RUN_COLS, rows)
                self.db.execute("UPDATE experiments SET n_runs = n_runs + ?, updated = ? "
                                "WHERE exp_id = ?", [len(rows), now, exp_id])
                self._event("extended", exp_id, reason=f"{len(rows)} runs added")
        except sqlite3.IntegrityError as e:
            raise SlurmexpError(f"experiment {exp_id!r}: runs could not be added",
                                [Problem(str(self.path), "runs", str(e), "check the run ids")]) from e
        return len(rows)

    def run_extent(self, exp_id: str) -> tuple[int, int]:
        """(number of runs, number of chunks so far): where new runs and chunks start."""
        n, top = self.db.execute("SELECT COUNT(*), MAX(chunk) FROM runs WHERE exp_id = ?",
                                 [exp_id]).fetchone()
        top_sub = self.db.execute("SELECT MAX(chunk) FROM submissions WHERE exp_id = ?",
                                  [exp_id]).fetchone()[0]
        tops = [t for t in (top, top_sub) if t is not None]
        return int(n or 0), (max(tops) + 1) if tops else 0

    def run_ids(self, exp_id: str) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT run_id FROM runs WHERE exp_id = ? ORDER BY idx",
                                              [exp_id])]

    def run_views(self, exp_id: str, run_ids: Iterable[str] | None = None) -> dict[str, dict]:
        """run_id -> the run's state, reason, run_dir, idx, n_attempts and its newest attempt's
        job_key, job_id, cluster, node and state (None before the first submission), in one
        query: what a waiting Python process reads instead of asking Slurm."""
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
