"""Run a chunk's sbatch script on this machine, for users without a cluster (and for tests).

`LocalBackend` is the `Scheduler` of this machine (see `backends.base`); `run_local` is the
blocking run of one chunk's tasks it is built on.

It runs the very script sbatch would get, once per array task, with the SLURM_* variables a
task would see; so a sweep that works locally exercises the same manifest, run folders and
attempt records as on the cluster, and there is no second code path to keep in sync.

Waiting: the main thread blocks on a queue that one small waiter thread per *running* process
(at most `max_parallel`) fills when `Popen.wait()` returns. Nothing polls, no process of the
caller is reaped by accident (as `os.wait()` would), and `on_event` always runs on the caller's
thread, so it may write to an SQLite connection opened there.
"""
from __future__ import annotations

import getpass
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePath
from typing import Any, Callable, Iterable, Sequence

from slurmexp import arrays, layout
from slurmexp.arrays import task_key
from slurmexp.backends.facts import ClusterFacts, SacctRow, SqueueRow, SubmitResult
from slurmexp.errors import Problem, SlurmexpError

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
    cwd: str | os.PathLike | None = None,
) -> list[LocalTaskResult]:
    """Run array tasks `tasks` (default 0..n_tasks-1) of `script_path`, `max_parallel` at once.

    The wrapper's output goes to `<log_dir>/<array_job_id>_<task>.out|.err` (log_dir defaults to
    the experiment's logs/, the script being `<exp_dir>/scripts/chunk-NNN.sbatch`), named like
    Slurm's `%A_%a` so that two chunks or two local launches never share a log. Tasks start in
    `cwd` (default: the current directory), as sbatch starts them in the directory it ran in.
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
                stdout=fout, stderr=ferr, cwd=cwd,
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


# --------------------------------------------------------------------------------------------
# The Scheduler of this machine

LOCAL_CLUSTER = "local"      # the cluster name local submissions and attempts are recorded with
_ARRAY_ARG = re.compile(r"^(?:--array=|-a=?)(\S+)$")
_ARRAY_DIRECTIVE = re.compile(r"^#SBATCH\s+(?:--array=|-a\s*)(\S+)\s*$", re.MULTILINE)


@dataclass
class _LocalJob:
    name: str | None
    submitted: float                 # epoch seconds
    results: list[LocalTaskResult]


def _iso(epoch: float) -> str:
    """Local wall-clock time without offset, as sacct prints it."""
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%dT%H:%M:%S")


def _array_spec(script: Path, extra_args: Sequence[str]) -> str:
    """--array from the arguments (they override the script, as for sbatch), else the script's."""
    for arg in extra_args:
        match = _ARRAY_ARG.match(arg)
        if match:
            return match.group(1)
    match = _ARRAY_DIRECTIVE.search(script.read_text(encoding="utf-8", errors="replace")[:20000])
    return match.group(1) if match else "0"


class LocalBackend:
    """The `Scheduler` of this machine: `submit` runs the script's array tasks here and returns
    when they have ended, so there is never anything queued, and nothing to reconcile.

    What local runs can say, they say: `accounting` and `submit_times` answer for the jobs this
    object ran (in this process; the ledger has the rest), `queue` is always empty, `cancel`
    has nothing to cancel (Ctrl-C stops a running launch, whose tasks end CANCELLED), and
    `test_only`/`cluster_facts` have no cluster to ask. Resource arguments (--time, --mem) do not
    apply here; only --array does.
    """

    kind = "local"
    name = "local"
    cluster = LOCAL_CLUSTER

    def __init__(self, cluster: str | None = None, transport: Any = None,
                 max_parallel: int | None = None):
        # `cluster` is what the experiment's site calls its cluster; local runs are on this
        # machine whatever it says, and are recorded as LOCAL_CLUSTER.
        if transport is not None and getattr(transport, "name", None) != "local":
            raise SlurmexpError("the local backend runs scripts on this machine only", [Problem(
                "", "backend", f"it was given the transport {getattr(transport, 'name', transport)!r}",
                "use the slurm backend to run on another machine")])
        self.max_parallel = max_parallel
        self.user = os.environ.get("USER") or getpass.getuser()
        self._jobs: dict[str, _LocalJob] = {}

    def __repr__(self) -> str:
        return "LocalBackend()"

    @staticmethod
    def new_job_id() -> str:
        return new_array_job_id()

    def run_array(self, script_path: Path, n_tasks: int, max_parallel: int,
                  env_extra: dict[str, str] | None = None, on_event: EventCallback | None = None, *,
                  array_job_id: str | None = None, log_dir: Path | None = None,
                  tasks: Iterable[int] | None = None,
                  cwd: str | os.PathLike | None = None) -> list[LocalTaskResult]:
        """`run_local`, remembered for `accounting` and `submit_times`."""
        array_job_id = array_job_id or self.new_job_id()
        submitted = time.time()
        results = run_local(script_path, n_tasks, max_parallel, env_extra, on_event,
                            array_job_id=array_job_id, log_dir=log_dir, tasks=tasks, cwd=cwd)
        name = _script_directives(Path(script_path).absolute()).get("job-name")
        self._jobs[array_job_id] = _LocalJob(name, submitted, results)
        return results

    # --- Scheduler ----------------------------------------------------------------------
    def submit(self, script: str | PurePath, *, extra_args: Sequence[str] = (),
               cwd: str | PurePath | None = None, timeout: float | None = None) -> SubmitResult:
        """Run the tasks of the script's --array (or of `extra_args`' --array) now, `%N` or
        `max_parallel` or one per CPU at once; return when all have ended. `timeout` does not
        apply: a local run takes as long as it takes."""
        path = Path(script)
        if not path.is_file():
            raise SlurmexpError(f"local backend: script {path} does not exist")
        spec = _array_spec(path, extra_args)
        indices = self._indices(spec)
        parallel = self.max_parallel or arrays.throttle(spec) or os.cpu_count() or 1
        job_id = self.new_job_id()
        self.run_array(path, max(indices) + 1, parallel, array_job_id=job_id, tasks=indices,
                       cwd=os.fspath(cwd) if cwd is not None else None)
        return SubmitResult(job_id, self.cluster, submit_time=_iso(self._jobs[job_id].submitted))

    @staticmethod
    def _indices(spec: str) -> list[int]:
        indices = arrays.indices(spec)
        if not indices:
            raise SlurmexpError(f"local backend: cannot read the array {spec!r}",
                                [Problem("", "--array", spec, "give task indices such as 0-9 or 0,3,5-7%2")])
        return indices

    def test_only(self, script: str | PurePath, extra_args: Sequence[str] = (),
                  timeout: float = 60) -> tuple[bool, str]:
        if not Path(script).is_file():
            return False, f"local backend: script {script} does not exist"
        if shutil.which("bash") is None:
            return False, "local backend: bash is not installed or not on PATH"
        return True, "local backend: runs on this machine (no scheduler to ask)"

    def queue(self, job_ids: list[str] | None = None, *, name_prefix: str | None = None,
              timeout: float = 60) -> list[SqueueRow]:
        return []

    def accounting(self, job_ids: list[str], *, since: str, user: str | None = None,
                   names: list[str] | None = None, array_ids: Sequence[str] = (),
                   timeout: float = 60) -> list[SacctRow]:
        ids = {str(j) for j in job_ids}
        host = socket.gethostname()
        rows = []
        for job_id, job in self._jobs.items():
            if not (job.name in names if names is not None else job_id in ids):
                continue
            for r in job.results:
                rows.append(SacctRow(
                    job_id=task_key(job_id, r.task_index), job_id_raw=r.job_id, array_job_id=job_id,
                    array_task=r.task_index, pending_tasks=None, state=r.state, state_raw=r.state,
                    submit=_iso(job.submitted), start=_iso(r.started_at), end=_iso(r.ended_at),
                    elapsed_s=int(round(r.elapsed_s)), exit_code=r.exit_code, signal=None,
                    node_list=host, partition=None, qos=None, account=None, reason=None,
                    alloc_tres=None, req_mem=None, max_rss_mb=None, total_cpu_s=None,
                    alloc_cpus=None, job_name=job.name, comment=None, cluster=self.cluster))
        return rows

    def submit_times(self, job_ids: list[str], *, since: str = "now-7days",
                     timeout: float = 60) -> dict[str, str]:
        return {j: _iso(self._jobs[j].submitted) for j in map(str, job_ids) if j in self._jobs}

    def cancel(self, job_ids: list[str], timeout: float = 60) -> None:
        """Nothing to do: a local run is over when `submit` returns."""

    def cluster_facts(self, user: str | None = None, timeout: float = 60, *,
                      max_age_s: float | None = None) -> ClusterFacts:
        return ClusterFacts(cluster=self.cluster, user=user or self.user,
                            skipped=["local backend: there is no cluster to ask"])
