"""Whether a ledger file can be used as a command asks, how SQLite should open it, and what to
tell the user when it cannot.

SQLite itself is no help here: it creates any missing file it is given (so a mistyped
`--ledger` became a new empty ledger), treats a 0-byte file as a new database (so a ledger
emptied by a full quota looked like one with nothing tracked), and says only "file is not a
database" or "database disk image is malformed" at the first query, as a traceback. So the file
is looked at before SQLite opens it, and every SQLite error about the file becomes a
`LedgerError` (exit 4) that names the file and what to do.

Three modes: `read` (status, report, show, logs, health) never creates or changes anything and
works on a ledger the user cannot write (archived, shared); `write` (reconcile, retry, cancel)
needs an existing, writable ledger; `create` (launch, `cron --install`) may also make a new one
where no file exists, but never reuses an existing empty file: slurmexp creates a ledger
complete or not at all (`connection.create_ledger_file`), so an empty file at the path means
its content was lost.
"""
from __future__ import annotations

import os
import shlex
import sqlite3
import urllib.parse
from pathlib import Path

from slurmexp.errors import LedgerError, Problem

READ, WRITE, CREATE = "read", "write", "create"
MODES = (READ, WRITE, CREATE)
SQLITE_MAGIC = b"SQLite format 3\x00"
HEADER_SIZE = 100


def _q(path: Path | str) -> str:
    return shlex.quote(str(path))


def sidecars(path: Path) -> dict[str, Path]:
    return {s: Path(f"{path}-{s}") for s in ("wal", "shm", "journal")}


def recover_fix(path: Path) -> str:
    salvaged = path.with_name(path.stem + ".recovered.db")
    return (f"restore {path} from a backup (e.g. the file system's snapshots); or salvage what "
            f"SQLite can still read into a new file: sqlite3 {_q(path)} .recover | sqlite3 "
            f"{_q(salvaged)} (where .recover fails, use .dump), check it with "
            f"`slurmexp --ledger {_q(salvaged)} status`, then move it into place")


def missing(path: Path) -> LedgerError:
    where = "its folder does not exist" if not path.parent.is_dir() else "there is no such file"
    return LedgerError(f"no ledger at {path}", [Problem(
        str(path), "", where,
        fix="check the path (--ledger, $SLURMEXP_LEDGER, $SLURMEXP_HOME); a ledger is created "
            "by the first `slurmexp launch` (or `slurmexp cron --install`), never by this command",
        check="ledger-missing")])


def empty(path: Path) -> LedgerError:
    return LedgerError(f"ledger {path} is empty (0 bytes): it is not a new ledger", [Problem(
        str(path), "", "slurmexp never leaves an empty ledger file, so what it held was lost "
                       "(a full disk or quota, a failed copy, a truncation?)",
        fix=f"restore it from a backup; to start a new ledger there instead, remove it "
            f"(rm {_q(path)}) and launch again",
        check="ledger-empty")])


def not_sqlite(path: Path, head: bytes) -> LedgerError:
    shown = head[:16].decode("ascii", "replace")
    shown = "".join(c if c.isprintable() else "." for c in shown)
    return LedgerError(f"{path} is not a ledger: not an SQLite database", [Problem(
        str(path), "", f"it starts with {shown!r}, not with SQLite's header",
        fix="point --ledger (or $SLURMEXP_LEDGER, $SLURMEXP_HOME) at a slurmexp ledger; if this "
            "file was the ledger, " + recover_fix(path),
        check="ledger-not-sqlite")])


def damaged(path: Path, why: str) -> LedgerError:
    return LedgerError(f"ledger {path} is damaged", [Problem(
        str(path), "", why, fix=recover_fix(path), check="ledger-damaged")])


def not_a_ledger(path: Path, tables: list[str]) -> LedgerError:
    what = (f"an SQLite database with tables {', '.join(tables[:5])}" if tables
            else "an SQLite database with no tables")
    return LedgerError(f"{path} is not a slurmexp ledger", [Problem(
        str(path), "meta.schema_version", f"it is {what} and no slurmexp schema version",
        fix="point --ledger (or $SLURMEXP_LEDGER, $SLURMEXP_HOME) at a slurmexp ledger",
        check="ledger-not-slurmexp")])


def newer(path: Path, version: int, known: int) -> LedgerError:
    return LedgerError(
        f"ledger {path} has schema version {version}, newer than this slurmexp understands "
        f"({known})",
        [Problem(str(path), "meta.schema_version", "written by a newer slurmexp",
                 fix="upgrade slurmexp (pip install -U slurmexp), or point --ledger at another "
                     "ledger; this one is left as it is",
                 check="ledger-newer")])


def older_read_only(path: Path, version: int, known: int) -> LedgerError:
    return LedgerError(
        f"ledger {path} has schema version {version}, older than this slurmexp's ({known}), "
        f"and cannot be upgraded: it is read-only",
        [Problem(str(path), "meta.schema_version", "an upgrade writes to the file",
                 fix=f"work on a copy: cp {_q(path)} ~/ledger-copy.db && "
                     f"slurmexp --ledger ~/ledger-copy.db status",
                 check="ledger-old-read-only")])


def _not_writable(path: Path) -> str | None:
    """Why this process cannot change the ledger, or None. SQLite needs the file and, for its
    journal or WAL files, the folder."""
    if not os.access(path, os.W_OK):
        return "the file is not writable"
    if not os.access(path.parent, os.W_OK | os.X_OK):
        return f"its folder {path.parent} is not writable (SQLite writes its journal there)"
    return None


def read_only(path: Path, why: str) -> LedgerError:
    return LedgerError(f"ledger {path} is read-only: {why}", [Problem(
        str(path), "", why,
        fix="status, report, show, logs and health read it as it is; to launch, reconcile, "
            "retry or cancel, make it writable (chmod u+w) or work on a copy: "
            f"cp {_q(path)} ~/ledger-copy.db && slurmexp --ledger ~/ledger-copy.db ...",
        check="ledger-read-only")])


def cannot_create(path: Path, exc: BaseException) -> LedgerError:
    why = getattr(exc, "strerror", None) or str(exc)
    return LedgerError(f"cannot create a ledger at {path}: {why}", [Problem(
        str(path), "", why, fix="choose a folder you can write to (--ledger, $SLURMEXP_HOME), "
        "or check the free space there (df -h)", check="ledger-create")])


def header_problem(head: bytes, size: int) -> str | None:
    """Why the first bytes and the size of a file cannot be a whole SQLite database, or None.
    Pure, for tests. The header's page count is trusted only when its version-valid-for
    number matches the change counter, as SQLite itself does."""
    if len(head) < HEADER_SIZE:
        return f"truncated: {size} bytes, shorter than SQLite's {HEADER_SIZE}-byte header"
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(head[28:32], "big")
    if head[24:28] == head[92:96] and pages and size < pages * page_size:
        return f"truncated: {size} bytes where its header says {pages * page_size}"
    return None


def check_file(path: Path, mode: str) -> None:
    """Raise the LedgerError that says why `path` cannot be opened in `mode`; nothing else.

    A missing file is an error here in every mode: `create` makes it before calling this.
    The truncation check is skipped while a journal or WAL file exists: a writer may then be
    growing the file, and SQLite checks it itself.
    """
    if not path.exists():
        raise missing(path)
    if path.is_dir():
        raise LedgerError(f"ledger {path} is a folder", [Problem(
            str(path), "", "a ledger is one file", fix=f"give its file, e.g. --ledger "
            f"{_q(path / 'ledger.db')}", check="ledger-folder")])
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER_SIZE)
            size = os.fstat(f.fileno()).st_size
    except OSError as exc:
        raise LedgerError(f"cannot read ledger {path}: {exc.strerror or exc}", [Problem(
            str(path), "", exc.strerror or str(exc),
            fix="check its permissions (ls -l) and the folders above it", check="ledger-unreadable")]
        ) from None
    if size == 0:
        raise empty(path)
    if head[:16] != SQLITE_MAGIC and not (len(head) < 16 and SQLITE_MAGIC.startswith(head)):
        raise not_sqlite(path, head)
    files = sidecars(path)
    busy = files["wal"].exists() or files["journal"].exists()
    why = header_problem(head, size)
    if why and (not busy or len(head) < HEADER_SIZE):
        raise damaged(path, why)
    if mode != READ:
        why = _not_writable(path)
        if why:
            raise read_only(path, why)


def uri(path: Path, mode: str) -> tuple[str, bool]:
    """(the SQLite URI to open `path` with, whether that connection may write).

    Never one that creates the file (`mode=rw`/`mode=ro`). A read where the ledger is
    writable opens it read-write (the caller then sets `query_only`): SQLite then removes its
    -wal/-shm files at close, rolls back a crashed writer's journal, and reads safely beside a
    running reconcile. Where it is not writable, `mode=ro`; and where no writer is active
    (no -wal, no -journal) `immutable=1` too, because a read-only WAL database can otherwise
    be opened only by creating its -shm and -wal files, which a read-only folder forbids and
    which, left in a shared folder owned by the reader, would lock out the owner's writes.
    """
    name = "file:" + urllib.parse.quote(os.path.abspath(path))
    if mode != READ or _not_writable(path) is None:
        return f"{name}?mode=rw", True
    files = sidecars(path)
    if not files["wal"].exists() and not files["journal"].exists():
        return f"{name}?mode=ro&immutable=1", False
    return f"{name}?mode=ro", False


def ledger_error(exc: sqlite3.Error, path: Path) -> LedgerError:
    """The LedgerError for an SQLite error met while using the ledger at `path`."""
    text = str(exc)
    code = getattr(exc, "sqlite_errorname", "") or ""
    if code in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or "malformed" in text or "not a database" in text:
        return damaged(path, text)
    if code.startswith("SQLITE_READONLY") or "readonly database" in text:
        why = _not_writable(path) or text
        return read_only(path, why)
    if code.startswith("SQLITE_CANTOPEN") or "unable to open" in text:
        files = [str(p) for p in sidecars(path).values() if p.exists()]
        why = (f"SQLite cannot open {' and '.join(files)} beside it" if files
               else "SQLite cannot open it")
        return LedgerError(f"cannot open ledger {path}: {why}", [Problem(
            str(path), "", text, fix="check the permissions of the file, the files beside it "
            "and its folder (ls -la); if another user's reconcile has it open, try again later",
            check="ledger-cantopen")])
    if code in ("SQLITE_BUSY", "SQLITE_LOCKED") or "locked" in text:
        return LedgerError(f"ledger {path} is busy: {text}", [Problem(
            str(path), "", "another slurmexp process held it longer than the busy timeout",
            fix="try again; `slurmexp health` says whether a reconcile pass is stuck",
            check="ledger-busy")])
    return LedgerError(f"ledger {path}: {text}", [Problem(
        str(path), "", text, fix="nothing was changed by the failed statement; try again, and "
        "check the disk holding the ledger (df -h) if it says so", check="ledger-sqlite")])
