"""Slurm commands started now and judged later, so that a caller has two running at once: a
reconcile pass's squeue runs while its sacct does (each still one batched query), and the pass
waits for the slower of the two instead of for both, one after the other.
"""
from __future__ import annotations

import os
import time
from collections.abc import Sequence

from slurmexp.backends.facts import SqueueRow
from slurmexp.backends.slurm import failures
from slurmexp.backends.slurm import parse as sp
from slurmexp.backends.slurm.backend import SLURM_ENV, _record, default_transport, run_slurm
from slurmexp.errors import SlurmUnavailable
from slurmexp.transport.base import CommandResult, Transport


class StartedSlurm:
    """A Slurm command started now and judged by `result()` exactly as `run_slurm` judges it
    (its errors, the call log; the log's seconds are then the wait for it).

    Only a transport that can start a command without waiting for it (`LocalTransport.start`)
    runs it at once; on any other, and when slurm.conf is unusable, the command runs (or is
    refused) when `result()` is called, as `run_slurm` would. `close()` stops a command whose
    answer is not wanted any more (its pass failed first)."""

    def __init__(self, argv: Sequence[str], *, timeout: float = 60, check: bool = True,
                 transport: Transport | None = None):
        self.argv, self.timeout, self.check = list(argv), timeout, check
        self.transport = transport or default_transport()
        self._running = None
        self._done = False
        self._started = time.monotonic()
        start = getattr(self.transport, "start", None)
        if start is None:
            return
        if self.transport.name == "local":
            try:
                failures.check_slurm_conf(os.path.basename(self.argv[0]))
            except SlurmUnavailable:
                return              # result() runs it, and run_slurm says why it cannot
        self._running = start(self.argv, timeout=timeout, env=SLURM_ENV)

    def result(self) -> CommandResult:
        self._done = True
        if self._running is None:
            return run_slurm(self.argv, timeout=self.timeout, check=self.check,
                             transport=self.transport)
        return run_slurm(self.argv, timeout=self.timeout, check=self.check,
                         transport=_Waiting(self.transport.name, self._running))

    def close(self) -> None:
        if not self._done and self._running is not None:
            self._done = True
            self._running.kill()
            _record(os.path.basename(self.argv[0]), self._started, None)


class _Waiting:
    """The transport `run_slurm` judges a started command through: its `run` waits for it."""

    def __init__(self, name: str, running):
        self.name, self._running = name, running

    def run(self, argv, **_kw) -> CommandResult:
        return self._running.wait()


class StartedQueue(StartedSlurm):
    """`SlurmBackend.start_queue()`: `rows()` waits for squeue and reads it, raising what
    `SlurmBackend.queue()` would."""

    def rows(self) -> list[SqueueRow]:
        return sp.parse_squeue(self.result().stdout)
