"""Waiting on runs from Python without a sacct poll per process (submitit #1759).

A waiting process reads the ledger. When what it waits for is not final, it may run one
reconcile pass (`reconcile_pass`: one batched sacct and one squeue for every active attempt
of the ledger) but only when no pass of anyone (cron, `slurmexp reconcile`, another waiting
process) has ended within `interval_s`, as the ledger's heartbeats show, and only when no
other waiting process is running one now: a non-blocking lock next to the ledger's own pass
lock decides who. So ten notebooks waiting on the same ledger cost one sacct per interval,
not ten, and a cron reconcile makes them cost nothing.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from datetime import datetime, timezone
from pathlib import Path

from slurmexp.ledger import Ledger

WAIT_LOCK_SUFFIX = ".wait.lock"
DEFAULT_INTERVAL_S = 10.0
READ_INTERVAL_S = 1.0       # how often one process re-reads the ledger while it waits
POLL_S = 1.0                # how often a waiting loop looks again


def interval_s() -> float:
    try:
        return float(os.environ.get("SLURMEXP_WAIT_INTERVAL_S", DEFAULT_INTERVAL_S))
    except ValueError:
        return DEFAULT_INTERVAL_S


_LEDGERS: dict[tuple[str, int], Ledger] = {}


def ledger_at(path: str | os.PathLike) -> Ledger:
    """One open Ledger per file per process (a Ledger must not cross a fork)."""
    key = (os.fspath(Path(path).expanduser().absolute()), os.getpid())
    if key not in _LEDGERS:
        _LEDGERS[key] = Ledger(key[0])
    return _LEDGERS[key]


def last_pass_age_s(ledger: Ledger) -> float | None:
    hb = ledger.last_heartbeat("reconcile")
    if not hb:
        return None
    try:
        ts = datetime.fromisoformat(hb["ts"])
    except (TypeError, ValueError):
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return (datetime.now(timezone.utc) - ts).total_seconds()


@contextlib.contextmanager
def _gate(ledger: Ledger):
    fd = os.open(f"{ledger.path}{WAIT_LOCK_SUFFIX}", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            yield False
            return
        yield True
    finally:
        os.close(fd)


def refresh(ledger: Ledger, cluster: str | None, *, min_interval_s: float | None = None) -> bool:
    """Run one reconcile pass unless a recent one makes it pointless; True when this process
    ran it. Never raises for Slurm being down (the pass records that in its heartbeat)."""
    wait = interval_s() if min_interval_s is None else min_interval_s
    with _gate(ledger) as got:
        if not got:
            return False
        age = last_pass_age_s(ledger)
        if age is not None and age < wait:
            return False
        from slurmexp.functions.launch import scheduler
        from slurmexp.reconcile.one_pass import reconcile_pass

        summary = reconcile_pass(ledger, scheduler(cluster))
        return not summary.skipped


def wait_until(done, ledger: Ledger, cluster: str | None, *, timeout_s: float | None = None,
               poll_s: float = POLL_S) -> bool:
    """Poll `done()` (which reads the ledger or files), refreshing the ledger between polls;
    False if `timeout_s` passed first."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while not done():
        if deadline is not None and time.monotonic() >= deadline:
            return False
        refresh(ledger, cluster)
        if done():
            return True
        time.sleep(poll_s)
    return True
