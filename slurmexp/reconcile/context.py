"""What every ledger-changing pass shares: the lock, the pass's context, and its summary.

A reconcile pass (`reconcile`), a manual retry (`retry`) and a cancel (`operate`) all change
runs that the others may be changing too, so they take one lock next to the ledger; the retry
steps run inside a reconcile pass and on their own, so the context they work in and the summary
they report into live here, below both.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from slurmexp.backends.base import DEFAULT_KIND, scheduler_for
from slurmexp.errors import Problem, SlurmexpError
from slurmexp.ledger import Ledger

LOCK_SUFFIX = ".reconcile.lock"
EXIT_OK = 0
EXIT_ERROR = 1
MAX_ACTIONS_KEPT = 200


# ------------------------------------------------------------------------------------------
# Summary


@dataclass
class PassSummary:
    """What a pass did: printed by the CLI, and kept (lists trimmed) in the heartbeat."""

    started: str = ""
    dry_run: bool = False
    skipped: bool = False            # another pass held the lock: nothing done
    error: str | None = None         # the pass stopped (e.g. sacct did not answer)
    exit_code: int = EXIT_OK
    seconds: float = 0.0
    sacct_s: float = 0.0
    squeue_s: float = 0.0
    sbatch_s: float = 0.0
    active: int = 0                  # attempts looked at
    moved: dict[str, int] = field(default_factory=dict)   # new state -> attempts moved there
    moved_by_experiment: dict[str, dict[str, int]] = field(default_factory=dict)
    requeued: int = 0                # new attempts from Slurm's own requeues
    adopted: int = 0                 # INTENT submissions whose job was found
    intents_failed: int = 0          # INTENT submissions proven never to have made a job
    lost: int = 0
    flagged: list[str] = field(default_factory=list)      # unknown Slurm states
    retries_scheduled: int = 0       # runs moved back to PLANNED for a retry
    retries_submitted: int = 0       # runs resubmitted in this pass
    retry_jobs: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)     # experiments that finished
    warnings: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)      # what was (or, dry run, would be) done

    @property
    def ok(self) -> bool:
        return self.error is None

    def act(self, text: str) -> None:
        if len(self.actions) < MAX_ACTIONS_KEPT:
            self.actions.append(text)
        elif len(self.actions) == MAX_ACTIONS_KEPT:
            self.actions.append("... (more actions not listed)")

    def moved_to(self, state: str, exp_id: str | None = None) -> None:
        self.moved[state] = self.moved.get(state, 0) + 1
        if exp_id is not None:
            per = self.moved_by_experiment.setdefault(exp_id, {})
            per[state] = per.get(state, 0) + 1

    def to_dict(self, list_limit: int | None = None) -> dict[str, Any]:
        """Plain data (for --format json and the heartbeat); `list_limit` trims long lists."""
        data = dataclasses.asdict(self)
        data["ok"] = self.ok
        for key in ("sacct_s", "squeue_s", "sbatch_s", "seconds"):
            data[key] = round(data[key], 3)
        if list_limit is not None:
            for key in ("actions", "flagged", "warnings", "retry_jobs", "finished"):
                if len(data[key]) > list_limit:
                    data[key] = data[key][:list_limit] + [f"... {len(data[key]) - list_limit} more"]
        return data

    def format(self, verbose: bool = False) -> str:
        if self.skipped:
            return "reconcile: another pass is running; nothing done"
        head = "reconcile (dry run)" if self.dry_run else "reconcile"
        lines = []
        if self.error:
            lines.append(f"{head}: FAILED: {self.error}")
            if not self.moved and not self.retries_submitted:
                lines.append("  nothing was changed; the next pass catches up")
        if not self.error or self.moved:
            moved = ", ".join(f"{n} {s}" for s, n in sorted(self.moved.items())) or "none"
            lines += [f"{head}: {self.active} active attempt(s) checked in {self.seconds:.1f}s "
                      f"(sacct {self.sacct_s:.1f}s, squeue {self.squeue_s:.1f}s)",
                      f"  moved: {moved}"]
            # One line per experiment, not per run: a 2,500-run sweep is one line.
            for exp_id, per in sorted(self.moved_by_experiment.items()):
                counts = ", ".join(f"{n:,} {s}" for s, n in sorted(per.items(),
                                                                  key=lambda kv: -kv[1]))
                lines.append(f"    {exp_id}: {counts}")
        extra = [(self.requeued, "requeued by Slurm (new attempts)"),
                 (self.adopted, "orphaned submission(s) adopted"),
                 (self.intents_failed, "dead intent(s) closed"),
                 (self.lost, "attempt(s) LOST"),
                 (self.retries_scheduled, "run(s) scheduled for retry"),
                 (self.retries_submitted, "run(s) resubmitted")]
        for n, text in extra:
            if n:
                lines.append(f"  {n} {text}")
        if self.retry_jobs:
            lines.append(f"  retry jobs: {', '.join(self.retry_jobs)}")
        if self.finished:
            lines.append(f"  finished: {', '.join(self.finished)}")
        for text in self.flagged:
            lines.append(f"  flagged: {text}")
        for text in self.warnings:
            lines.append(f"  warning: {text}")
        if verbose:
            lines += [f"  - {a}" for a in self.actions]
        elif self.actions:
            lines.append(f"  ({len(self.actions)} action(s) not listed; -v lists them)")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# Lock


def lock_path(ledger: Ledger) -> Path:
    return Path(f"{ledger.path}{LOCK_SUFFIX}")


@contextlib.contextmanager
def pass_lock(ledger: Ledger, wait_s: float | None = None) -> Iterator[bool]:
    """flock on `<ledger>.reconcile.lock`; yields False when another process holds it.

    With `wait_s`, waits that long for it first (retry and cancel wait; cron passes do not).
    The lock goes with the process: a killed pass never leaves it held.
    """
    path = lock_path(ledger)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + (wait_s or 0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                got = True
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                if wait_s is None or time.monotonic() >= deadline:
                    got = False
                    break
                time.sleep(0.2)
        if got:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
        yield got
    finally:
        os.close(fd)


def require_lock(got: bool, ledger: Ledger, what: str) -> None:
    """For callers that must act (retry, cancel): a lock still held after waiting is an error."""
    if not got:
        raise SlurmexpError(
            f"{what}: a reconcile pass on {ledger.path} is still running",
            [Problem(str(lock_path(ledger)), "", "the reconcile lock is held",
                     fix="try again in a minute")])


# ------------------------------------------------------------------------------------------
# Context


def remote_key(remote: Any) -> tuple | None:
    """Which login node an experiment's settings say it went through (None: this machine's
    Slurm); experiments of one cluster reached two ways are asked about separately."""
    if remote is None:
        return None
    return (remote.host, remote.user, remote.port, remote.root)


@dataclass
class PassContext:
    """What one pass (or manual retry) works with.

    A pass works on the experiments of one (backend kind, cluster) at a time: `kind`, `cluster`
    and `exps` say which. `backend` is a scheduler the caller gave (tests, tools); without one,
    `scheduler()` builds the one for (kind, cluster) through the factory, once per pass.
    """

    ledger: Ledger
    backend: Any
    summary: PassSummary
    now: datetime
    grace_s: float
    dry_run: bool
    exps: dict[str, dict] = field(default_factory=dict)
    queue_ok: bool = True
    kind: str = DEFAULT_KIND
    cluster: str | None = None
    transport: Any = None
    schedulers: dict[tuple, Any] = field(default_factory=dict)
    # Array jobs this pass already cancelled (reconcile.dependency: one scancel per array).
    cancelled_jobs: set[str] = field(default_factory=set)
    # squeue's pending reason per job key, this pass (sacct keeps the reason of the submission).
    queue_reasons: dict[str, str | None] = field(default_factory=dict)
    # (attempt, reason, fields) changes with nothing to decide in their transaction, written
    # together after the pass's transitions (reconcile.transitions.write_transitions).
    writes: list[tuple[Any, str | None, dict]] = field(default_factory=list)

    def scheduler(self) -> Any:
        """The scheduler of the experiments worked on now, made on first use (most passes never
        call Slurm)."""
        if self.backend is not None:
            return self.backend
        remotes = [(e["exp_dir"], e["settings"].remote) for e in self.exps.values()
                   if e.get("settings") is not None and e["settings"].remote is not None]
        key = (self.kind, self.cluster, remote_key(remotes[0][1]) if remotes else None)
        if key not in self.schedulers:
            if remotes:   # launched over SSH: that login node, with each experiment's paths
                from slurmexp.backends.slurm.remote import scheduler_for_remote

                self.schedulers[key] = scheduler_for_remote(remotes[0][1], self.cluster, remotes)
            else:
                self.schedulers[key] = scheduler_for(self.kind, self.cluster, self.transport)
        return self.schedulers[key]

    def slurm(self) -> Any:
        """`scheduler()`, by the name the submission path calls it."""
        return self.scheduler()
