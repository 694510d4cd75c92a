"""Run a chunk's sbatch script on this machine, for users without a cluster (and for tests).

It runs the very script sbatch would get, once per array task, with the SLURM_* variables a
task would see; so a sweep that works locally exercises the same manifest, run folders and
attempt records as on the cluster, and there is no second code path to keep in sync.

Waiting: the main thread blocks on a queue that one small waiter thread per *running* process
(at most `max_parallel`) fills when `Popen.wait()` returns. Nothing polls, no process of the
caller is reaped by accident (as `os.wait()` would), and `on_event` always runs on the caller's
thread, so it may write to an SQLite connection opened there.
"""
from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from slurmexp import layout
from slurmexp.arrays import task_key
from slurmexp.errors import SlurmexpError

EventCallback = Callable[[int, str, dict[str, Any]], None]

# Inherited values that would make a task believe it is some other Slurm job (when the local
# backend is used inside an salloc shell, say).
_INHERITED_SLURM = re.compile(r"SLURM_(ARRAY_\w+|JOB_?ID|JOB_NAME|RESTART_COUNT|CPUS_PER_TASK"
                              r"|SUBMIT_DIR|TASK_PID|PROCID|LOCALID|NODEID|STEP_\w+)\Z")
_DIRECTIVE = re.compile(r"^#SBATCH\s+--(job-name|cpus-per-task)=(\S+)\s*$", re.MULTILINE)
_TERM_GRACE_S = 10.0


@dataclass
class LocalTaskResult:
    task_index: int
    state: str                  # COMPLETED | FAILED | CANCELLED
    exit_code: int              # 128 + n when killed by signal n, as a shell reports it
    elapsed_s: float
    started_at: float           # epoch seconds
    ended_at: float
    job_id: str                 # the SLURM_JOB_ID the task saw: "<array job id>_<task>"
    stdout_path: Path           # the wrapper's own output (the command's is in its attempt dir)
    stderr_path: Path


def new_array_job_id() -> str:
    """A job id no real Slurm job has, unique per call, readable in file names."""
    return f"local-{os.getpid()}-{time.time_ns() // 1_000_000}"


def _script_directives(script_path: Path) -> dict[str, str]:
    # Only plain words are read back: enough to give tasks SLURM_JOB_NAME and
    # SLURM_CPUS_PER_TASK as on the cluster, where many programs size their thread pools by it.
    head = script_path.read_text(encoding="utf-8", errors="replace")[:20000]
    return {key: value for key, value in _DIRECTIVE.findall(head)}


def _task_env(base: dict[str, str], array_job_id: str, index: int, n_tasks: int,
              directives: dict[str, str], env_extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in base.items()
           if not (_INHERITED_SLURM.match(k) or k.startswith("SLURMEXP_"))}
    env.update(
        SLURM_ARRAY_JOB_ID=array_job_id,
        SLURM_ARRAY_TASK_ID=str(index),
        SLURM_ARRAY_TASK_COUNT=str(n_tasks),
        SLURM_ARRAY_TASK_MIN="0",
        SLURM_ARRAY_TASK_MAX=str(max(n_tasks - 1, 0)),
        SLURM_ARRAY_TASK_STEP="1",
        SLURM_JOB_ID=f"{array_job_id}_{index}",
        SLURMEXP_BACKEND="local",
    )
    if "job-name" in directives:
        env["SLURM_JOB_NAME"] = directives["job-name"]
    if "cpus-per-task" in directives:
        env["SLURM_CPUS_PER_TASK"] = directives["cpus-per-task"]
    if env_extra:
        env.update({str(k): str(v) for k, v in env_extra.items()})
    return env


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def run_local(
    script_path: Path,
    n_tasks: int,
    max_parallel: int,
    env_extra: dict[str, str] | None = None,
    on_event: EventCallback | None = None,
    *,
    array_job_id: str | None = None,
    log_dir: Path | None = None,
    tasks: Iterable[int] | None = None,
) -> list[LocalTaskResult]:
    """Run array tasks `tasks` (default 0..n_tasks-1) of `script_path`, `max_parallel` at once.

    The wrapper's output goes to `<log_dir>/<array_job_id>_<task>.out|.err` (log_dir defaults to
    the experiment's logs/, the script being `<exp_dir>/scripts/chunk-NNN.sbatch`), named like
    Slurm's `%A_%a` so that two chunks or two local launches never share a log.
    On an exception in the caller's thread (Ctrl-C, on_event failing), running tasks are sent
    SIGTERM (SIGKILL after a grace period), reported CANCELLED, and the exception propagates.
    Returns one result per task, in task order.
    """
    script_path = Path(script_path).absolute()
    if not script_path.is_file():
        raise SlurmexpError(f"local backend: script {script_path} does not exist")
    if max_parallel < 1:
        raise ValueError("max_parallel must be at least 1")
    bash = shutil.which("bash")
    if bash is None:
        raise SlurmexpError("local backend: bash is not installed or not on PATH")
    indices = list(range(n_tasks)) if tasks is None else sorted(set(tasks))
    bad = [i for i in indices if not 0 <= i < n_tasks]
    if bad:
        raise ValueError(f"task indices {bad} are outside 0..{n_tasks - 1}")

    array_job_id = array_job_id or new_array_job_id()
    log_dir = Path(log_dir) if log_dir is not None else script_path.parent.parent / layout.LOGS_DIR
    log_dir.mkdir(parents=True, exist_ok=True)
    directives = _script_directives(script_path)
    base_env = dict(os.environ)
    emit = on_event or (lambda i, event, info: None)

    pending = list(reversed(indices))            # pop() from the end = lowest index first
    running: dict[int, tuple[subprocess.Popen, float, float, Path, Path]] = {}
    done: "queue.Queue[tuple[int, float]]" = queue.Queue()   # (task, monotonic end time)
    results: dict[int, LocalTaskResult] = {}

    def start(index: int) -> None:
        out = log_dir / layout.log_name(task_key(array_job_id, index), "out")
        err = log_dir / layout.log_name(task_key(array_job_id, index), "err")
        env = _task_env(base_env, array_job_id, index, n_tasks, directives, env_extra)
        with open(out, "ab") as fout, open(err, "ab") as ferr:
            proc = subprocess.Popen(
                [bash, str(script_path)], env=env, stdin=subprocess.DEVNULL,
                stdout=fout, stderr=ferr,
                start_new_session=True,      # own process group: cancel reaches the command too
            )
        started_wall, started_mono = time.time(), time.monotonic()
        running[index] = (proc, started_wall, started_mono, out, err)
        threading.Thread(target=lambda: (proc.wait(), done.put((index, time.monotonic()))),
                         daemon=True,
                         name=f"slurmexp-local-wait-{index}").start()
        emit(index, "RUNNING", {"pid": proc.pid, "array_job_id": array_job_id,
                                "job_id": f"{array_job_id}_{index}", "started_at": started_wall,
                                "stdout": str(out), "stderr": str(err)})

    def finish(index: int, ended_mono: float | None = None, state: str | None = None) -> None:
        proc, started_wall, started_mono, out, err = running.pop(index)
        returncode = proc.returncode if proc.returncode is not None else -signal.SIGKILL
        rc = _exit_code(returncode)
        elapsed = (ended_mono or time.monotonic()) - started_mono
        final = state or ("COMPLETED" if rc == 0 else "FAILED")
        result = LocalTaskResult(index, final, rc, elapsed, started_wall,
                                 started_wall + elapsed, f"{array_job_id}_{index}", out, err)
        results[index] = result
        info: dict[str, Any] = {"exit_code": rc, "elapsed_s": elapsed,
                                "job_id": result.job_id, "ended_at": result.ended_at}
        if returncode < 0:
            info["signal"] = -returncode
        emit(index, final, info)

    try:
        while pending or running:
            while pending and len(running) < max_parallel:
                start(pending.pop())
            finish(*done.get())
    except BaseException:
        _cancel(running)
        for index in sorted(running):
            try:
                finish(index, state="CANCELLED")
            except Exception:        # the original exception matters more than a failing report
                running.pop(index, None)
        raise
    return [results[i] for i in sorted(results)]


def _cancel(running: dict[int, tuple]) -> None:
    procs = [entry[0] for entry in running.values()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for proc in procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + _TERM_GRACE_S
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        if all(proc.poll() is not None for proc in procs):
            return
