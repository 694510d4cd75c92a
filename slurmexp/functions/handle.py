"""An experiment as a Python object: `slurmexp.experiment(id)` reattaches to one from any
process (a notebook, another script) by its id in the ledger; `slurmexp.sweep` returns one.

Everything it says comes from the ledger; waiting refreshes the ledger with the shared,
rate-limited reconcile pass of `waiting` (never a sacct per process).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slurmexp import layout
from slurmexp.backends import base
from slurmexp.functions import waiting
from slurmexp.ledger import Ledger
from slurmexp.states import TERMINAL_STATES

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

FINAL = TERMINAL_STATES


class Experiment:
    """Handle on one experiment of a ledger (`.id`, `.wait()`, `.status()`, `.results()`...)."""

    def __init__(self, exp_id: str, ledger: Ledger | str | os.PathLike | None = None):
        if isinstance(ledger, Ledger):
            path = ledger.path
        elif ledger is None:
            from slurmexp.ledger.connection import default_ledger_path

            path = default_ledger_path()
        else:
            path = Path(ledger)
        self.ledger_path = os.fspath(Path(path).expanduser().absolute())
        self.id = self.ledger.get_experiment(exp_id, required=True)["exp_id"]

    @property
    def ledger(self) -> Ledger:
        return waiting.ledger_at(self.ledger_path)

    @property
    def info(self) -> dict:
        return self.ledger.get_experiment(self.id, required=True)

    @property
    def cluster(self) -> str | None:
        return self.info["cluster"]

    def __repr__(self) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in self.status().items())
        return f"Experiment<{self.id}: {counts or 'no runs'}>"

    # --- state ---------------------------------------------------------------------------
    def status(self) -> dict[str, int]:
        """Runs per state, as the ledger has them now."""
        return self.ledger.counts_by_state(self.id)

    def done(self) -> bool:
        counts = self.status()
        return bool(counts) and set(counts) <= FINAL

    def refresh(self, force: bool = False) -> bool:
        """One shared reconcile pass unless a recent one (anyone's) makes it pointless."""
        return waiting.refresh(self.ledger, self.cluster, min_interval_s=0 if force else None)

    def wait(self, timeout: float | None = None, poll_s: float = waiting.POLL_S) -> Experiment:
        """Until every run is final (failures being retried are not); TimeoutError after
        `timeout` seconds."""
        if not waiting.wait_until(self.done, self.ledger, self.cluster, timeout_s=timeout,
                                  poll_s=poll_s):
            raise TimeoutError(f"{self.id} not finished after {timeout}s: {self.status()}")
        return self

    # --- results -------------------------------------------------------------------------
    def results(self) -> pd.DataFrame:
        """One row per run: run_id, state, reason, `param.*`, `metric.*` and the report's
        other columns (what `slurmexp report` shows)."""
        from slurmexp.report.build import build_report

        return build_report(self.ledger, [self.id]).runs

    def report(self, fmt: str = "table", **options: Any) -> str:
        from slurmexp.report.build import build_report, render_report

        return render_report(build_report(self.ledger, [self.id]), fmt, **options)

    def values(self) -> list[Any]:
        """Each run's return value, in run order (None where there is none; a run whose
        function raised gives its traceback text wrapped in a RuntimeError)."""
        from submitit.core.utils import pickle_load

        out: list[Any] = []
        for run in self.ledger.run_views(self.id).values():
            path = layout.RunPaths(run["run_dir"] or "").result
            if not run["run_dir"] or not path.exists():
                out.append(None)
                continue
            outcome, value = pickle_load(path)
            out.append(value if outcome == "success" else RuntimeError(value))
        return out

    def jobs(self, folder: str | os.PathLike | None = None) -> list:
        """The runs as submitit-style jobs (`slurmexp.submitit.SlurmJob`)."""
        from slurmexp.submitit.job import SlurmJob

        folder = folder or self.info["exp_dir"]
        return [SlurmJob(folder, v["job_key"], exp_id=self.id, run_id=rid,
                         ledger_path=self.ledger_path)
                for rid, v in self.ledger.run_views(self.id).items()]

    # --- control -------------------------------------------------------------------------
    def cancel(self, reason: str = "cancelled by user") -> int:
        from slurmexp.reconcile.cancel import cancel_experiment

        return cancel_experiment(self.ledger, base.scheduler_for_experiment(self.info), self.id, reason)

    def retry(self, which: str = "failed") -> list[int]:
        from slurmexp.reconcile.retry import retry_experiment

        return retry_experiment(self.ledger, base.scheduler_for_experiment(self.info), self.id, which)


def experiment(exp_id: str, ledger: Ledger | str | os.PathLike | None = None) -> Experiment:
    """Reattach to an experiment by id (or unique prefix, as the CLI takes it)."""
    return Experiment(exp_id, ledger)
