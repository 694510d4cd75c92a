"""The few calls the data layer makes on its SQLite connection, over the standard sqlite3 module.

The ledger stores plain Python values (text, numbers, NULL; JSON is serialised by the caller),
so it needs no type mapping: rows go in with `executemany` and come out as tuples or dicts.
This replaced sqlite-utils, whose import (~70 ms, more when pandas is installed, which it
imports) every slurmexp process paid, and whose `insert_all` walked every value to decide
whether to serialise it (1.3 s of an 8,000-run launch; `executemany` of the same rows ~0.1 s).
"""
from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any


def _quoted(name: str) -> str:
    """A table or column name in SQL; names here are the schema's own, quoting guards a typo."""
    return '"' + name.replace('"', '""') + '"'


class Database:
    """One open ledger connection. `conn` is the sqlite3 connection itself, opened with
    `isolation_level=None`: transactions are the ledger's own (`LedgerConnection.transaction`)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] | dict = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def executescript(self, sql: str) -> sqlite3.Cursor:
        return self.conn.executescript(sql)

    def query(self, sql: str, params: Sequence[Any] | dict = ()) -> Iterator[dict]:
        """Rows as dicts of column name -> value."""
        cursor = self.conn.execute(sql, params)
        keys = [d[0] for d in cursor.description or ()]
        for row in cursor:
            yield dict(zip(keys, row))

    def close(self) -> None:
        self.conn.close()

    def table_exists(self, table: str) -> bool:
        return self.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                 [table]).fetchone() is not None

    def columns(self, table: str) -> list[str]:
        """The table's column names in their order (empty for a table that does not exist)."""
        return [r[1] for r in self.conn.execute(f"PRAGMA table_info({_quoted(table)})")]

    def insert(self, table: str, row: dict) -> None:
        self.insert_rows(table, list(row), [list(row.values())])

    def insert_rows(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """One prepared INSERT run over every row (sqlite3 steps it without building SQL)."""
        names = ", ".join(_quoted(c) for c in columns)
        marks = ", ".join("?" * len(columns))
        self.conn.executemany(f"INSERT INTO {_quoted(table)} ({names}) VALUES ({marks})", rows)
