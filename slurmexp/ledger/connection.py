"""Opening a ledger file: created 0600, journal mode chosen for its file system, transactions.

Every write is a `BEGIN IMMEDIATE` transaction (a savepoint when nested), so several slurmexp
processes (a launch, a cron reconcile, a report) touching the file at once are serialised by
the busy timeout instead of failing. WAL is used on local disks and DELETE on network file
systems, where WAL's shared-memory index cannot work across hosts.
"""
from __future__ import annotations

import contextlib
import json
import os
import posixpath
import re
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Self

import slurmexp.ledger.opening as opening
import slurmexp.ledger.schema as schema
from slurmexp.errors import Problem, SlurmexpError
from slurmexp.ledger.schema import build_new, migrate, schema_version
from slurmexp.ledger.sql import Database

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


def _in_list(column: str, values: str | Iterable[str]) -> tuple[str, list[str]]:
    """(`column IN (?, ...)`, its parameters) for one value or several."""
    values = [values] if isinstance(values, str) else list(values)
    return f"{column} IN ({', '.join('?' * len(values))})", values


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


# --- making a new ledger file ------------------------------------------------------------


def _private(path: Path) -> None:
    """Ledger, WAL and shared-memory files 0600: sweeps and provenance can be private."""
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        with contextlib.suppress(OSError):
            if p.stat().st_mode & 0o077:
                os.chmod(p, 0o600)


def create_ledger_file(path: Path) -> bool:
    """Make a complete, empty ledger at `path` if no file is there; True when this call did.

    The schema is built in a private temporary file beside it and hard-linked into place, so
    the path holds either nothing or a whole ledger, never an empty file a crash left (an
    empty file at the path therefore means lost content, and is refused). The link also
    settles a race: when two launches create the same ledger, the one whose link fails uses
    the other's.
    """
    if os.path.lexists(path):
        return False
    parent = path.parent
    try:
        os.makedirs(parent, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".new", dir=parent)  # 0600
    except OSError as exc:
        raise opening.cannot_create(path, exc) from None
    os.close(fd)
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            db = Database(conn)
            build_new(db)
        finally:
            conn.close()
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:
            # A file system without hard links: rename, unless someone was faster.
            if os.path.lexists(path):
                return False
            os.replace(tmp, path)
        return True
    except (sqlite3.Error, OSError) as exc:
        raise opening.cannot_create(path, exc) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


# --- the connection ----------------------------------------------------------------------


# (st_dev, st_ino) of the ledger files this process has open -> how many Ledgers hold each.
_OPEN_FILES: dict[tuple[int, int], int] = {}


def _file_key(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class LedgerConnection:
    """One SQLite ledger file. Not shared across threads or forks: open one per process.

    `mode` (see ledger.opening): "read" never creates or changes anything and works on a
    ledger this process cannot write; "write" needs an existing, writable ledger; "create"
    (the default, for the library) also makes a new one where no file exists. A file that is
    not a whole slurmexp ledger is refused in every mode with a `LedgerError`.
    """

    def __init__(self, path: str | os.PathLike | None = None, *, journal_mode: str | None = None,
                 mode: str = opening.CREATE):
        if mode not in opening.MODES:
            raise ValueError(f"mode must be one of {opening.MODES}, not {mode!r}")
        self.path = Path(path).expanduser() if path is not None else default_ledger_path()
        self.mode = mode
        self._depth = 0
        self._attempt_cols: list[str] | None = None
        # Whether this call made the file (launch says so: a mistyped path shows at once).
        self.created = mode == opening.CREATE and create_ledger_file(self.path)
        # The raw header read opens and closes the file, and closing any descriptor of a file
        # drops every POSIX lock this process holds on it: a Ledger already open here (in a
        # transaction) would lose its locks to another writer. So only the first Ledger of a
        # file in a process reads the header; later ones rely on that check and on SQLite's.
        self._key: tuple[int, int] | None = None
        opening.check_file(self.path, mode, read_header=not _OPEN_FILES.get(_file_key(self.path)))
        self.fs_type = detect_fs_type(self.path.parent)
        wanted = choose_journal_mode(
            self.fs_type, journal_mode or os.environ.get("SLURMEXP_JOURNAL_MODE"))
        uri, can_write = opening.uri(self.path, mode)
        try:
            # isolation_level=None: no implicit transactions; every write transaction is ours.
            conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise opening.ledger_error(exc, self.path) from None
        self.db = Database(conn)
        try:
            self._set_up(conn, wanted, can_write)
        except sqlite3.Error as exc:
            self.db.close()
            raise opening.ledger_error(exc, self.path) from None
        except BaseException:
            self.db.close()
            raise
        self._key = _file_key(self.path)
        if self._key is not None:
            _OPEN_FILES[self._key] = _OPEN_FILES.get(self._key, 0) + 1

    def _set_up(self, conn: sqlite3.Connection, wanted: str, can_write: bool) -> None:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
        version = self.schema_version  # the first read: SQLite's own check of the file
        known = len(schema.MIGRATIONS)
        if version == 0:
            tables = [r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
            # Only an SQLite file with nothing in it that launch was pointed at becomes a
            # ledger; never another program's database.
            if tables or self.mode != opening.CREATE:
                raise opening.not_a_ledger(self.path, tables)
        if version > known:
            raise opening.newer(self.path, version, known)
        if self.mode == opening.READ:
            if version < known:
                if not can_write:
                    raise opening.older_read_only(self.path, version, known)
                conn.execute("PRAGMA foreign_keys = ON")
                migrate(self)  # an upgrade is the one write a read makes, as any newer code would
            self.journal_mode = conn.execute("PRAGMA journal_mode").fetchone()[0].upper()
            conn.execute("PRAGMA query_only = ON")
            return
        self.journal_mode = conn.execute(f"PRAGMA journal_mode = {wanted}").fetchone()[0].upper()
        sync = "NORMAL" if self.journal_mode == "WAL" else "FULL"
        conn.execute(f"PRAGMA synchronous = {sync}")
        conn.execute("PRAGMA foreign_keys = ON")
        migrate(self)
        _private(self.path)

    def close(self) -> None:
        self.db.close()
        if self._key is not None:
            _OPEN_FILES[self._key] -= 1
            self._key = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Self]:
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

    @property
    def schema_version(self) -> int:
        return schema_version(self.db)

    # --- helpers --------------------------------------------------------------------------

    def _rows(self, sql: str, params: Iterable[Any] | Mapping[str, Any] = ()) -> list[dict]:
        """Rows as dicts; `params` positional (any iterable) or named (a mapping)."""
        return list(self.db.query(sql, params if isinstance(params, Mapping) else list(params)))

    def _insert_rows(self, table: str, columns: list[str], rows: Iterable[list]) -> None:
        self.db.insert_rows(table, columns, rows)
