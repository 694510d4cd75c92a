"""`slurmexp reconcile --loop SECONDS`: reconcile passes in the foreground, for clusters whose
login nodes have no cron (run it in tmux, or under a supervisor such as systemd --user).

Each pass is `one_pass.reconcile_pass`, so it takes the same non-blocking lock as a cron pass:
a loop beside a crontab line (or a second loop) never acts twice, it skips the pass the other
holds. A pass that finds Slurm unavailable (exit 3), or that fails for any other reason, is
reported and the loop goes on: a supervisor should not have to restart it because slurmctld
restarted. SIGINT and SIGTERM end the loop between passes: a pass in progress finishes first
(its Slurm commands run in their own process group, so a Ctrl-C in the terminal does not reach
them), and the loop returns normally (exit 0). A second signal during a pass stops at once
(KeyboardInterrupt); every write of a pass is its own transaction, so that is safe too.
"""
from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from typing import Any

from slurmexp.errors import Problem, SlurmexpError
from slurmexp.ledger import Ledger
from slurmexp.reconcile.context import EXIT_ERROR, PassSummary
from slurmexp.reconcile.one_pass import reconcile_pass
from slurmexp.timeutil import utc_iso

MIN_INTERVAL_S = 5.0


def check_interval(seconds: float) -> float:
    """Refuse intervals so short that the loop would hammer slurmctld and slurmdbd."""
    if not seconds >= MIN_INTERVAL_S:
        raise SlurmexpError(f"reconcile: --loop {seconds:g} is too short", [Problem(
            "", "--loop", f"{seconds:g} seconds between passes",
            fix=f"use at least {MIN_INTERVAL_S:g} seconds (the cron line runs a pass every 300)")])
    return seconds


def run_loop(ledger: Ledger, interval_s: float, *, report: Callable[[PassSummary], None],
             max_passes: int | None = None, stop: threading.Event | None = None,
             announce: Callable[[str], None] | None = None,
             pass_fn: Callable[..., PassSummary] = reconcile_pass, **pass_kwargs: Any) -> int:
    """Run a pass every `interval_s` seconds until SIGINT/SIGTERM (or `stop` is set, or
    `max_passes` ran). Returns the number of passes run.

    `report` gets every pass's summary (the CLI prints it), `announce` one line at the start.
    A pass that raised (a bug, a disk error) is reported as a failed summary and the loop goes
    on. The interval is counted from the end of a pass, so slow passes never pile up.
    """
    check_interval(interval_s)
    stop = stop or threading.Event()
    previous: dict[int, Any] = {}

    def on_signal(signum, _frame) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    if announce:
        announce(f"reconcile: a pass every {interval_s:g}s on {ledger.path} (pid {os.getpid()}); "
                 f"SIGINT (Ctrl-C) or SIGTERM stops after the current pass")
    n = 0
    try:
        while not stop.is_set():
            try:
                summary = pass_fn(ledger, **pass_kwargs)
            except Exception as exc:  # noqa: BLE001 - the loop must outlive a failed pass
                summary = PassSummary(started=utc_iso(None), error=f"{type(exc).__name__}: {exc}",
                                      exit_code=EXIT_ERROR)
            n += 1
            report(summary)
            if max_passes is not None and n >= max_passes:
                break
            stop.wait(interval_s)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return n
