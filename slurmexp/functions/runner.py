"""The task side of a Python-function run: `python -m slurmexp.functions.runner RUN_DIR`.

The chunk's sbatch script (the same jinja2 templates as command sweeps) runs the run's
command.sh, which runs this module. It finds the call to make:

- `RUN_DIR/call.pkl`: the pickled call, `{"function", "args", "kwargs"}` (the drop-in
  executors; a plain dict, so a task need not import submitit to read it), or
- `--function module:callable` (a sweep.toml `function = ...`), called with the run's
  `params.json` as keyword arguments, or `--pickle FILE`: the pickled callable itself, called
  the same way (`slurmexp.sweep` of a function defined in `__main__` or a notebook).

Then it calls it and writes the outcome where both slurmexp and plain submitit read it:
`RUN_DIR/result.pkl` and, with `--submitit-folder`, submitit's own
`<folder>/<job id>_0_result.pkl` (`("success", value)` or `("error", traceback)`). A return
value that is a mapping of numbers also becomes the run's metrics (metrics.json, the report's
`metric.*` columns). An exception is printed to stderr with its last line last, and the
process exits 1: Slurm records FAILED, and reconcile puts that stderr tail in the reason.

Retries need nothing else: a resubmitted task finds the same RUN_DIR and the same pickle.

submitit's checkpoint protocol, with the sweep's [checkpoint] (the drop-in always sets it:
USR2, `slurm_signal_delay_s` before the limit, requeue): when the task script forwards the
checkpoint signal ($SLURMEXP_CHECKPOINT_SIGNAL), or Slurm sends the SIGTERM of a preemption, a
callable with a `checkpoint()` method (`submitit.helpers.Checkpointable`) is asked for its
next call, `checkpoint(*args, **kwargs)`; the returned DelayedSubmission replaces call.pkl
(and submitit's `<job id>_submitted.pkl`) and the process exits EXIT_CHECKPOINTED, so reconcile
continues the run and the next attempt runs that call. `checkpoint()` returning None ends the
run as submitit does (an UncompletedJobError result). A callable without `checkpoint()`
keeps running on the checkpoint signal (it may still finish) and is not continued if the
limit ends it: starting it again would redo the same work. Either refusal is written to the
attempt's `not_continued` file, which reconcile reads.
Imports stay few (stdlib, cloudpickle, submitit's small utils) so each task starts quickly.
"""
from __future__ import annotations

import argparse
import functools
import json
import numbers
import os
import shlex
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from slurmexp import layout
from slurmexp.atomic import replace_file

RESULT_FILE = layout.RESULT_FILE
CALL_FILE = layout.CALL_FILE
MODULE = "slurmexp.functions.runner"
EXIT_CHECKPOINTED = 75     # EX_TEMPFAIL: the call was checkpointed; its next attempt goes on


def runner_command(python: str, *, function: str | None = None,
                   function_pickle: str | os.PathLike | None = None,
                   submitit_folder: str | os.PathLike | None = None) -> str:
    """The command template (with its `{run_dir}` placeholder) that runs one run's call.

    Literal braces are doubled: the planner formats it like a sweep's command."""
    words = [python, "-u", "-m", MODULE]
    if function:
        words += ["--function", function]
    if function_pickle is not None:
        words += ["--pickle", os.fspath(function_pickle)]
    if submitit_folder is not None:
        words += ["--submitit-folder", os.fspath(submitit_folder)]
    text = " ".join(shlex.quote(w) for w in words)
    return text.replace("{", "{{").replace("}", "}}") + " {run_dir}"


def metrics_of(value: Any) -> dict[str, float] | None:
    """A mapping whose values are all real numbers (bool excluded): the run's metrics."""
    if not isinstance(value, Mapping) or not value:
        return None
    out = {}
    for key, v in value.items():
        if not isinstance(key, str) or isinstance(v, bool) or not isinstance(v, numbers.Real):
            return None
        out[key] = float(v) if not isinstance(v, int) else v
    return out


def _dump(obj: Any, path: Path) -> None:
    import cloudpickle

    replace_file(path, functools.partial(cloudpickle.dump, obj))


def _load(path: Path) -> Any:
    import pickle

    with open(path, "rb") as fh:
        return pickle.load(fh)


def _import(ref: str) -> Any:
    import importlib

    module, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def submitit_result_path(folder: str, job_id: str) -> Path:
    """`submitit.core.utils.JobPaths(folder, job_id, 0).result_pickle`, without importing
    submitit (a task's start-up time is the cost of every run of a sweep)."""
    array, _, index = job_id.partition("_")
    text = folder.replace("%j", job_id).replace("%t", "0").replace("%A", array)
    if "%a" in text:
        text = text.replace("%a", index)
    return Path(os.path.abspath(os.path.expanduser(text))) / f"{job_id}_0_result.pkl"


def _job_id() -> str | None:
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def load_call(run_dir: Path, function: str | None, pickled: str | None = None) -> tuple[Any, tuple, dict]:
    """(callable, args, kwargs) of the run."""
    call = layout.RunPaths(run_dir).call
    if call.exists():
        data = _load(call)
        if isinstance(data, dict):
            return data["function"], tuple(data.get("args") or ()), dict(data.get("kwargs") or {})
        return data.function, tuple(data.args), dict(data.kwargs)     # a DelayedSubmission
    if not function and not pickled:
        raise RuntimeError(f"{run_dir} has no {CALL_FILE} and no --function or --pickle was given")
    fn = _load(Path(pickled)) if pickled else _import(function or "")
    params = json.loads(layout.RunPaths(run_dir).params.read_text())
    return fn, (), params


def _write_call(run_dir: Path, call: Any) -> None:
    """A DelayedSubmission (what `checkpoint()` returns) as the run's call.pkl."""
    _dump({"function": call.function, "args": tuple(call.args), "kwargs": dict(call.kwargs)},
          layout.RunPaths(run_dir).call)


def _not_continued(reason: str) -> None:
    folder = os.environ.get("SLURMEXP_ATTEMPT_DIR")
    if folder:
        try:
            Path(folder, layout.NOT_CONTINUED).write_text(reason + "\n")
        except OSError:
            pass


def _record_signal(name: str) -> None:
    """The signal in the attempt's SIGNALLED file, as the task script's trap writes it. The
    task script records it too, but a preemption's SIGTERM reaches every process of the job at
    once: when this process saves and exits before the script's trap has run, the script may
    be past its wait already, and reconcile would not know the attempt was signalled."""
    folder = os.environ.get("SLURMEXP_ATTEMPT_DIR")
    if folder:
        import time

        try:
            with open(Path(folder, layout.SIGNALLED), "a", encoding="utf-8") as fh:
                fh.write(f"{name.removeprefix('SIG')} {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")
        except OSError:
            pass


class _Checkpointer:
    """The signal handler of one call: submitit's checkpoint protocol (see the module doc)."""

    def __init__(self, run_dir: Path, fn: Any, args: tuple, kwargs: dict,
                 submitit_folder: str | None, job_id: str | None) -> None:
        self.run_dir, self.fn, self.args, self.kwargs = run_dir, fn, args, kwargs
        self.folder, self.job_id = submitit_folder, job_id
        self.done = False

    def install(self) -> None:
        import signal

        name = os.environ.get("SLURMEXP_CHECKPOINT_SIGNAL")
        sig = getattr(signal, f"SIG{name}", None) if name else None
        if sig is None:
            return          # no [checkpoint]: signals keep their default meaning
        signal.signal(sig, self.handle)
        if callable(getattr(self.fn, "checkpoint", None)) and sig != signal.SIGTERM:
            signal.signal(signal.SIGTERM, self.handle)        # a preemption

    def handle(self, signum: int, frame: Any) -> None:
        import signal

        if self.done:
            return
        self.done = True
        name = signal.Signals(signum).name
        print(f"slurmexp: {name} received", file=sys.stderr, flush=True)
        _record_signal(name)
        if not callable(getattr(self.fn, "checkpoint", None)):
            _not_continued(f"{name}: the callable has no checkpoint() method, so another "
                           f"attempt would start it again from the beginning")
            return          # it may still finish before the limit
        following = self.fn.checkpoint(*self.args, **self.kwargs)
        if following is None:
            from submitit.core.utils import UncompletedJobError

            _not_continued("checkpoint() returned None")
            raise UncompletedJobError(f"Job not requeued because: checkpoint function returned "
                                      f"None ({name}).")
        _write_call(self.run_dir, following)
        if self.folder and self.job_id:
            from submitit.core.utils import JobPaths

            following.dump(JobPaths(self.folder, job_id=self.job_id).submitted_pickle)
        print(f"slurmexp: checkpointed on {name}; the next attempt runs checkpoint()'s call",
              file=sys.stderr, flush=True)
        sys.exit(EXIT_CHECKPOINTED)


def run(run_dir: Path, function: str | None = None, submitit_folder: str | None = None,
        pickled: str | None = None) -> int:
    os.environ.setdefault("SUBMITIT_EXECUTOR", "slurm")     # submitit.JobEnvironment() works
    job_id = _job_id()
    sub_result = None
    if submitit_folder and job_id:
        os.environ["SUBMITIT_FOLDER"] = submitit_folder
        sub_result = submitit_result_path(submitit_folder, job_id)
        sub_result.parent.mkdir(parents=True, exist_ok=True)
    try:
        fn, args, kwargs = load_call(run_dir, function, pickled)
        _Checkpointer(run_dir, fn, args, kwargs, submitit_folder, job_id).install()
        value = fn(*args, **kwargs)
        outcome: tuple[str, Any] = ("success", value)
    except Exception:  # the function's own failure: recorded, then a non-zero exit
        outcome = ("error", traceback.format_exc())
    if outcome[0] == "success":
        # metrics first: whoever sees the result file may read the metrics at once
        metrics = metrics_of(outcome[1])
        if metrics:
            from slurmexp.metrics import RESERVED, log_metrics

            kept = {k: v for k, v in metrics.items() if k not in RESERVED}
            if kept:
                log_metrics(run_dir=run_dir, **kept)
    _dump(outcome, layout.RunPaths(run_dir).result)
    if sub_result is not None:
        _dump(outcome, sub_result)
    if outcome[0] == "error":
        trace = outcome[1].rstrip().splitlines()
        sys.stderr.write(outcome[1])
        if trace:       # the exception's own line last: reconcile quotes the stderr tail
            sys.stderr.write(trace[-1] + "\n")
        sys.stderr.flush()
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}")
    parser.add_argument("run_dir")
    parser.add_argument("--function", default=None)
    parser.add_argument("--pickle", default=None)
    parser.add_argument("--submitit-folder", default=None)
    ns = parser.parse_args(argv)
    return run(Path(ns.run_dir), ns.function, ns.submitit_folder, ns.pickle)


if __name__ == "__main__":
    sys.exit(main())
