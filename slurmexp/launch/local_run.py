"""The local backend's launch: every chunk runs here, now, through the same ledger rows and
states a Slurm launch goes through (intent -> "submitted" -> attempts), by `backends.local`."""
from __future__ import annotations

import os
import socket
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

from slurmexp import layout
from slurmexp.backends.facts import SubmitResult
from slurmexp.errors import SlurmexpWarning
from slurmexp.launch.submission import ChunkRequest, submit_chunk
from slurmexp.ledger import Ledger
from slurmexp.timeutil import sacct_time

# [resources] keys only a scheduler acts on: an in-process backend runs the tasks as they are.
SCHEDULER_ONLY_KEYS = ("gpus", "gpu_type", "partition", "qos", "reservation", "account",
                       "constraint", "nodes", "sbatch")


def warn_ignored_resources(sweep: Any, kind: str) -> None:
    """One warning (SlurmexpWarning; the CLI prints it as one line on stderr) naming the
    [resources] keys the sweep sets that backend `kind` does not act on."""
    res = sweep.resources
    keys = [k for k in SCHEDULER_ONLY_KEYS if k in res.model_fields_set and getattr(res, k)]
    if keys:
        warnings.warn(SlurmexpWarning(
            f"{sweep.path}: the {kind} backend ignores [resources] {', '.join(keys)}: the tasks "
            "run on this machine as they are (no GPUs assigned, no queue)"), stacklevel=3)


class _LocalArrays:
    """The local backend's answer to a submission: a fresh array id of `local`, submitted now.
    The tasks then run here, in `run_local`, through the same ledger rows."""

    def __init__(self, local):
        self.local = local

    def submit(self, script: Path, *, extra_args=(), cwd=None) -> SubmitResult:
        return SubmitResult(self.local.new_job_id(), self.local.cluster, submit_time=_now())


def run_local(prep: Any, exp_id: str, ledger: Ledger, scripts: dict[int, Path],
              max_parallel: int | None, result: Any, local) -> Any:
    """Run every chunk here, now, through the same ledger states as on Slurm (`local`: an
    in-process scheduler, the local backend's)."""
    parallel = max_parallel or prep.sweep.resources.array_parallelism or os.cpu_count() or 1
    ledger.set_experiment_state(exp_id, "RUNNING", f"local backend, {parallel} at once")
    host = socket.gethostname()
    failed = 0
    for chunk in prep.plan.chunks:
        script = scripts[chunk.chunk]
        outcome = submit_chunk(ledger, _LocalArrays(local), ChunkRequest(
            exp_id, chunk.chunk, chunk.array_spec, chunk.size, script, local.cluster))
        array_id = outcome.job_id
        attempt_of = {a["task_index"]: a["attempt_id"] for a in ledger.attempts(sub_id=outcome.sub_id)}
        result.job_ids.append(array_id)

        def on_event(task: int, event: str, info: dict, attempt_of=attempt_of) -> None:
            nonlocal failed
            if event == "RUNNING":
                ledger.update_attempt(attempt_of[task], state="RUNNING", start_time=_now(), node=host)
                return
            failed += event != "COMPLETED"
            reason = None if event == "COMPLETED" else f"exit code {info.get('exit_code')}"
            ledger.update_attempt(attempt_of[task], state=event, end_time=_now(),
                                  exit_code=info.get("exit_code"), elapsed_s=info.get("elapsed_s"),
                                  reason=reason, failure_class=None if event == "COMPLETED" else "user")

        local.run_array(script, chunk.size, parallel, on_event=on_event, array_job_id=array_id,
                        log_dir=layout.ExperimentPaths(prep.exp_dir(exp_id)).logs_dir)
    state = "FINISHED" if not failed else "FINISHED_WITH_FAILURES"
    ledger.set_experiment_state(exp_id, state, f"{failed} run(s) failed" if failed else None)
    result.message = f"{len(prep.plan.runs)} runs finished locally, {failed} failed"
    return result


def _now() -> str:
    """Local wall-clock time in the form Slurm prints, so local attempts read like Slurm's."""
    return sacct_time(datetime.now().astimezone())
