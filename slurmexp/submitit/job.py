"""`SlurmJob`: submitit's Job, with its state from the ledger instead of a sacct poll.

A job is one run of an experiment. Its `job_id` is the run's newest attempt
(`<array id>_<task>`; a retry gets a new one), its `state` the run's state in the ledger
(kept current by `slurmexp reconcile` from cron, or by the rate-limited shared pass of
`slurmexp.functions.waiting` while someone waits), and its result the run's `result.pkl`,
which the task runner also writes where plain submitit looks for it (`job.paths.result_pickle`).
"""
from __future__ import annotations

import os
import time
import typing as tp
from pathlib import Path

from submitit.core import utils
from submitit.slurm import slurm as _slurm

from slurmexp import layout
from slurmexp.functions import waiting
from slurmexp.states import NO_STATE, PLANNED, SUBMITTED, TERMINAL_STATES

FINAL = TERMINAL_STATES
# Ledger words that are not Slurm's: a run waiting to be (re)submitted is PENDING to a user.
_AS_SLURM = {PLANNED: "PENDING", SUBMITTED: "PENDING"}


class _Views:
    """The runs of one experiment as this process last read them (one query per second)."""

    _cache: dict[tuple[str, str, int], "_Views"] = {}

    def __init__(self, ledger_path: str, exp_id: str):
        self.ledger_path, self.exp_id = ledger_path, exp_id
        self.read_at = float("-inf")
        self.rows: dict[str, dict] = {}

    @classmethod
    def of(cls, ledger_path: str, exp_id: str) -> _Views:
        key = (ledger_path, exp_id, os.getpid())
        if key not in cls._cache:
            cls._cache[key] = cls(ledger_path, exp_id)
        return cls._cache[key]

    def get(self, run_id: str, max_age_s: float = waiting.READ_INTERVAL_S) -> dict:
        if time.monotonic() - self.read_at > max_age_s or run_id not in self.rows:
            self.rows = waiting.ledger_at(self.ledger_path).run_views(self.exp_id)
            self.read_at = time.monotonic()
        return self.rows.get(run_id) or {}

    def cluster(self) -> str | None:
        exp = waiting.ledger_at(self.ledger_path).get_experiment(self.exp_id)
        return exp["cluster"] if exp else None


class SlurmJob(_slurm.SlurmJob[tp.Any]):
    """A run of a slurmexp experiment, behaving as submitit's SlurmJob."""

    def __init__(self, folder: tp.Union[Path, str], job_id: str | None, tasks: tp.Sequence[int] = (0,), *,
                 exp_id: str, run_id: str, ledger_path: str | os.PathLike) -> None:
        self._exp_id = exp_id
        self._run_id = run_id
        self._ledger_path = os.fspath(Path(ledger_path).absolute())
        self._first_job_id = job_id
        super().__init__(folder=folder, job_id=job_id or "", tasks=(0,))

    # --- identity ---------------------------------------------------------------------
    def _register_in_watcher(self) -> None:
        pass        # no sacct watcher: the ledger is the source

    @property
    def experiment_id(self) -> str:
        return self._exp_id

    @property
    def run_id(self) -> str:
        return self._run_id

    def _view(self, max_age_s: float = waiting.READ_INTERVAL_S) -> dict:
        return _Views.of(self._ledger_path, self._exp_id).get(self._run_id, max_age_s)

    @property
    def job_id(self) -> str:
        key = self._view().get("job_key")
        return key or self._first_job_id or ""

    @property
    def paths(self) -> utils.JobPaths:
        return utils.JobPaths(self._paths._folder, job_id=self.job_id or None, task_id=0)

    @property
    def run_dir(self) -> Path | None:
        d = self._view().get("run_dir")
        return Path(d) if d else None

    # --- state --------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """The run's state in the ledger (does not ask Slurm)."""
        state = self._view().get("state") or NO_STATE
        return _AS_SLURM.get(state, state)

    @property
    def reason(self) -> str | None:
        return self._view().get("reason")

    def _result_path(self) -> Path | None:
        d = self.run_dir
        return layout.RunPaths(d).result if d else None

    def _finished(self, max_age_s: float = waiting.READ_INTERVAL_S) -> bool:
        path = self._result_path()
        if path is not None and path.exists():
            return True
        return self._view(max_age_s).get("state") in FINAL

    def done(self, force_check: bool = False) -> bool:
        """Whether the run is over: its result is written, or the ledger says it ended for
        good (a failure being retried is not over). May run a shared, rate-limited reconcile
        pass; `force_check` runs one unless another process is running one now."""
        if self._finished():
            return True
        ledger = waiting.ledger_at(self._ledger_path)
        ran = waiting.refresh(ledger, _Views.of(self._ledger_path, self._exp_id).cluster(),
                              min_interval_s=0 if force_check else None)
        return self._finished(0 if ran else waiting.READ_INTERVAL_S)

    def wait(self) -> None:
        while not self.done():
            time.sleep(waiting.POLL_S)

    # --- results ------------------------------------------------------------------------
    def _outcome(self) -> tuple[str, tp.Any] | None:
        path = self._result_path()
        if path is None or not path.exists():
            return None
        return utils.pickle_load(path)

    def _get_outcome_and_result(self) -> tuple[str, tp.Any]:
        outcome = self._outcome()
        if outcome is None:
            view = self._view(0)
            raise utils.UncompletedJobError(
                f"Job {self.job_id} (run {self._run_id} of experiment {self._exp_id}) has not "
                f"produced any output (state: {view.get('state') or NO_STATE}"
                + (f": {view['reason']}" if view.get("reason") else "") + ")"
                + f"\nSee `slurmexp show {self._exp_id}/{self._run_id}`")
        return outcome

    def submission(self) -> utils.DelayedSubmission:
        d = self.run_dir
        call = layout.RunPaths(d).call if d is not None else None
        if call is None or not call.exists():
            raise FileNotFoundError(f"run {self._run_id} has no {layout.CALL_FILE}")
        data = utils.pickle_load(call)
        if isinstance(data, dict):
            return utils.DelayedSubmission(data["function"], *data.get("args", ()), **data.get("kwargs", {}))
        return data

    # --- logs and control ----------------------------------------------------------------
    def _attempt_dir(self) -> Path | None:
        """The newest attempt folder of the run's newest job key (`layout.attempt_dir`)."""
        return layout.attempt_dir(self.run_dir, self._view().get("job_key"))

    def _get_logs_string(self, name: str) -> str | None:
        if name not in layout.ATTEMPT_OUTPUT_FILES:
            raise ValueError(f'Unknown "{name}", available are {list(layout.ATTEMPT_OUTPUT_FILES)}')
        d = self._attempt_dir()
        if d is None or not (d / name).exists():
            return None
        return (d / name).read_text(errors="replace")

    def cancel(self, check: bool = True) -> None:
        """scancel this run's job (through the Slurm backend); reconcile records CANCELLED."""
        key = self._view(0).get("job_key")
        if not key:
            return
        from slurmexp.errors import SlurmexpError
        from slurmexp.functions.launch import scheduler

        try:
            scheduler(self._view().get("cluster")).cancel([key])
        except SlurmexpError:
            if check:
                raise

    def get_info(self, mode: str = "force") -> dict[str, str]:
        v = self._view(0)
        return {"JobID": v.get("job_key") or "", "State": self.state, "NodeList": v.get("node") or ""}

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}<job_id={self.job_id}, experiment={self._exp_id}, "
                f"run={self._run_id}, state=\"{self.state}\">")

    def __del__(self) -> None:
        if getattr(self, "_cancel_at_deletion", False) and not self._finished():
            self.cancel(check=False)

    def __setstate__(self, state: dict[str, tp.Any]) -> None:
        self.__dict__.update(state)
