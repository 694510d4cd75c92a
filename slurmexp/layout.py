"""The on-disk layout of an experiment, as submitit's `JobPaths` owns a job's paths.

Everything that builds a path of an experiment asks this module (launch, the file writers, the
task script's templates, reconcile, show/logs, the metrics files), so a name changes in one
place and two readers never disagree about where a file is::

    <output_dir>/.gitignore                   "*", written when slurmexp creates output_dir
    <output_dir>/.sweeps/<name>-<hash>.toml   the sweep.toml a Python sweep stands for
    <output_dir>/.functions/<hash>.pkl        a swept function pickled by value
    <output_dir>/<experiment id>/  = <exp_dir>
      sweep.toml  site.toml          copies of what was launched
      provenance/                    git.diff, environment.txt (ledger.provenance)
      scripts/chunk-NNN.sbatch       one sbatch script per array chunk
      manifests/chunk-NNN.txt        line i+1: array task i's run id and where its files lie
      manifests/chunk-NNN.files      the chunk's runs' command.sh and params.json texts, end to end
      logs/<job>_<task>.out|.err     Slurm's own output of the task script (--output=%A_%a.out)
      runs/<run id>/
        params.json  command.sh      written by the run's first task, from its chunk's manifest
        metrics.json  metrics.jsonl  written by the run (slurmexp.log_metrics)
        call.pkl  result.pkl         a Python-function run: the pickled call, its outcome
        checkpoint/                  $SLURMEXP_CHECKPOINT_DIR: the run's own, kept across attempts
        attempts/<job>_<task>[.r<N>]/  one per attempt, written by the task script:
          stdout  stderr             the command's own output
          host  started  ended       where and when
          exit_code                  the command's exit code
          wrapper_failed             "<status> <phase>" when the script ended without one
          heartbeat                  the time of the task script's last heartbeat (every
                                     [liveness] heartbeat while the command runs)
          signalled                  "<SIGNAL> <time>" per signal a [checkpoint] task received
          not_continued              a reason, from a command that got the signal but must
                                     not be continued (the function runner writes it)

A requeued task keeps its job and task ids, and Slurm counts its restarts in
SLURM_RESTART_COUNT; the task script appends ".r<count>" to the attempt folder from the first
restart on. The ledger makes one attempt per requeue it sees, so an attempt's restart number is
how many attempts of the same submission and job key came before it (`restart_numbers`), and
`find_attempt` turns that number into the folder the task script writes. (The ledger counts the
requeues it saw: should a requeue record leave sacct's window before a pass reads it, later
numbers fall behind Slurm's count. The rule stays the count; `restarts_on_disk` shows what is
really there.)

Imports nothing of slurmexp, and nothing slow: `slurmexp.log_metrics` in a training script uses it.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

# --- names ------------------------------------------------------------------------------

SWEEP_COPY = "sweep.toml"
SITE_COPY = "site.toml"
PROVENANCE_DIR = "provenance"
SCRIPTS_DIR = "scripts"
MANIFESTS_DIR = "manifests"
LOGS_DIR = "logs"
RUNS_DIR = "runs"
SWEEPS_DIR = ".sweeps"             # under output_dir: Python sweeps' sweep.toml files
FUNCTIONS_DIR = ".functions"       # under output_dir: functions pickled by value
# Written into an output_dir slurmexp creates, so that the run folders stay out of the user's
# `git status` (and of the provenance's untracked files) when output_dir is inside a repository.
OUTPUT_GITIGNORE = ".gitignore"
OUTPUT_GITIGNORE_TEXT = "# written by slurmexp: its run folders are not source\n*\n"

PARAMS_FILE = "params.json"
COMMAND_FILE = "command.sh"
METRICS_FILE = "metrics.json"
METRICS_HISTORY_FILE = "metrics.jsonl"
CALL_FILE = "call.pkl"             # a Python-function run's call (slurmexp.functions)
RESULT_FILE = "result.pkl"         # its outcome, ("success", value) or ("error", traceback)
ATTEMPTS_DIR = "attempts"
CHECKPOINT_DIR = "checkpoint"      # $SLURMEXP_CHECKPOINT_DIR: one per run, kept across attempts
RESTART_SUFFIX = ".r"

# What the task script writes into an attempt folder.
STDOUT = "stdout"
STDERR = "stderr"
HOST = "host"
STARTED = "started"
ENDED = "ended"
EXIT_CODE = "exit_code"
WRAPPER_FAILED = "wrapper_failed"
# The time of the last heartbeat ("%Y-%m-%dT%H:%M:%SZ", replaced by rename): the task script
# writes it every [liveness] heartbeat while the command runs; reconcile calls a RUNNING attempt
# whose heartbeat is stale STALLED (reconcile.liveness).
HEARTBEAT = "heartbeat"
# A sweep with [checkpoint]: the task script writes one line per signal it received (the
# checkpoint signal, or the SIGTERM of a preemption or a time limit); reconcile reads it to
# continue the run. A command that got the signal but must not be continued writes its reason
# into NOT_CONTINUED.
SIGNALLED = "signalled"
NOT_CONTINUED = "not_continued"
# Over SSH, by the pass's mirror: when the output last changed on the cluster (epoch s).
OUTPUT_CHANGED = "output_changed"
ATTEMPT_OUTPUT_FILES = (STDOUT, STDERR)
ATTEMPT_RECORD_FILES = (HOST, STARTED, ENDED, EXIT_CODE, WRAPPER_FAILED, HEARTBEAT, SIGNALLED,
                        NOT_CONTINUED)

# Slurm's log of a task, named as sbatch expands --output: %A = array job id, %a = task.
SLURM_LOG_PATTERN = "%A_%a"
LOG_SUFFIXES = {"out": ".out", "err": ".err"}

# A run id or attempt id becomes a folder name: it must not be able to leave its folder.
# The task script applies the same rule to what it reads from a manifest.
SAFE_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_SAFE_NAME_RE = re.compile(SAFE_NAME + r"\Z")


def is_safe_name(name: object) -> bool:
    return isinstance(name, str) and bool(_SAFE_NAME_RE.match(name))


def chunk_stem(chunk: int) -> str:
    return f"chunk-{chunk:03d}"


def script_name(chunk: int) -> str:
    return f"{chunk_stem(chunk)}.sbatch"


def manifest_name(chunk: int) -> str:
    return f"{chunk_stem(chunk)}.txt"


MANIFEST_FILES_SUFFIX = ".files"


def manifest_files_of(manifest: str | os.PathLike) -> Path:
    """The `.files` beside a chunk's manifest (where the manifest's offsets point)."""
    return Path(manifest).with_suffix(MANIFEST_FILES_SUFFIX)


def log_name(job_key: str, stream: str = "out") -> str:
    """"77_3.out" ("out" or "err"); `job_key` may be SLURM_LOG_PATTERN for the #SBATCH line."""
    return f"{job_key}{LOG_SUFFIXES[stream]}"


def attempt_name(job_key: str, restart: int = 0) -> str:
    """"77_3" for a first run of the task, "77_3.r2" after Slurm requeued it twice."""
    return f"{job_key}{RESTART_SUFFIX}{restart}" if restart else job_key


def script_names() -> dict[str, str]:
    """The names the task script uses, for the templates (which spell none of their own)."""
    return {
        "command": COMMAND_FILE, "params": PARAMS_FILE, "attempts": ATTEMPTS_DIR, "restart_suffix": RESTART_SUFFIX,
        "safe_name": SAFE_NAME, "stdout": STDOUT, "stderr": STDERR, "host": HOST,
        "started": STARTED, "ended": ENDED, "exit_code": EXIT_CODE,
        "wrapper_failed": WRAPPER_FAILED, "checkpoint": CHECKPOINT_DIR, "signalled": SIGNALLED,
        "heartbeat": HEARTBEAT,
        "log_out": log_name(SLURM_LOG_PATTERN, "out"),
        "log_err": log_name(SLURM_LOG_PATTERN, "err"),
    }


# --- paths ------------------------------------------------------------------------------


class RunPaths:
    """The folder of one run, `<exp_dir>/runs/<run id>`."""

    __slots__ = ("run_dir",)

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)

    def __repr__(self) -> str:
        return f"RunPaths({str(self.run_dir)!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.run_dir == self.run_dir

    def __hash__(self) -> int:
        return hash(self.run_dir)

    @property
    def params(self) -> Path:
        return self.run_dir / PARAMS_FILE

    @property
    def command(self) -> Path:
        return self.run_dir / COMMAND_FILE

    @property
    def metrics(self) -> Path:
        return self.run_dir / METRICS_FILE

    @property
    def metrics_history(self) -> Path:
        return self.run_dir / METRICS_HISTORY_FILE

    @property
    def call(self) -> Path:
        return self.run_dir / CALL_FILE

    @property
    def result(self) -> Path:
        return self.run_dir / RESULT_FILE

    @property
    def attempts_dir(self) -> Path:
        return self.run_dir / ATTEMPTS_DIR

    @property
    def checkpoint_dir(self) -> Path:
        """`$SLURMEXP_CHECKPOINT_DIR`: the run's own folder, the same for every attempt."""
        return self.run_dir / CHECKPOINT_DIR

    def attempt(self, job_key: str, restart: int = 0) -> Path:
        """Where the task script writes attempt `restart` of job key `job_key`."""
        return self.attempts_dir / attempt_name(job_key, restart)

    def restarts_on_disk(self, job_key: str) -> dict[int, Path]:
        """The attempt folders of `job_key` that exist, by restart number."""
        found: dict[int, Path] = {}
        base = self.attempts_dir
        if (base / job_key).is_dir():
            found[0] = base / job_key
        pattern = re.compile(re.escape(job_key + RESTART_SUFFIX) + r"(\d+)")
        try:
            entries = list(os.scandir(base))
        except OSError:
            return found
        for entry in entries:
            m = pattern.fullmatch(entry.name)
            if m and int(m.group(1)) > 0 and entry.is_dir():
                found[int(m.group(1))] = Path(entry.path)
        return found

    def find_attempt(self, job_key: str, restart: int | None = None) -> Path:
        """The folder of an attempt: the one rule every reader uses.

        With its restart number (see `restart_numbers`) an attempt's folder is exactly
        `attempt(job_key, restart)`, whether or not the task script has written it yet: a
        requeued task that has not started never shows its predecessor's files. Without one
        (a caller that knows only the job key) it is the newest folder of the job key on disk,
        else where the first attempt will be.
        """
        if restart is not None:
            return self.attempt(job_key, restart)
        found = self.restarts_on_disk(job_key)
        return found[max(found)] if found else self.attempt(job_key)


class ExperimentPaths:
    """Every path of one experiment, from its folder."""

    __slots__ = ("exp_dir",)

    def __init__(self, exp_dir: str | os.PathLike) -> None:
        self.exp_dir = Path(exp_dir)

    @classmethod
    def under(cls, output_dir: str | os.PathLike, exp_id: str) -> ExperimentPaths:
        """An experiment's folder is named by its id, in the sweep's output_dir."""
        return cls(Path(output_dir) / exp_id)

    def __repr__(self) -> str:
        return f"ExperimentPaths({str(self.exp_dir)!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.exp_dir == self.exp_dir

    def __hash__(self) -> int:
        return hash(self.exp_dir)

    @property
    def sweep_copy(self) -> Path:
        return self.exp_dir / SWEEP_COPY

    @property
    def site_copy(self) -> Path:
        return self.exp_dir / SITE_COPY

    @property
    def provenance_dir(self) -> Path:
        return self.exp_dir / PROVENANCE_DIR

    @property
    def scripts_dir(self) -> Path:
        return self.exp_dir / SCRIPTS_DIR

    @property
    def manifests_dir(self) -> Path:
        return self.exp_dir / MANIFESTS_DIR

    @property
    def logs_dir(self) -> Path:
        return self.exp_dir / LOGS_DIR

    @property
    def runs_dir(self) -> Path:
        return self.exp_dir / RUNS_DIR

    def script(self, chunk: int) -> Path:
        return self.scripts_dir / script_name(chunk)

    def manifest(self, chunk: int) -> Path:
        return self.manifests_dir / manifest_name(chunk)

    def manifest_files(self, chunk: int) -> Path:
        return manifest_files_of(self.manifest(chunk))

    def log(self, job_key: str, stream: str = "out") -> Path:
        """Slurm's own output of a task (`stream` "out" or "err")."""
        return self.logs_dir / log_name(job_key, stream)

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def run(self, run_id: str) -> RunPaths:
        return RunPaths(self.run_dir(run_id))


def signals_received(attempt: Path | None) -> list[str]:
    """The signals an attempt's task script recorded (SIGNALLED), oldest first; [] when none."""
    if attempt is None:
        return []
    try:
        text = (Path(attempt) / SIGNALLED).read_text(errors="replace")
    except OSError:
        return []
    return [line.split()[0] for line in text.splitlines() if line.split()]


def exit_code_written(attempt: Path | None) -> int | None:
    """The command's exit code as the task script wrote it (EXIT_CODE); None when it did not."""
    if attempt is None:
        return None
    try:
        text = (Path(attempt) / EXIT_CODE).read_text(errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def not_continued(attempt: Path | None) -> str | None:
    """Why an attempt that received the signal must not be continued (NOT_CONTINUED), if it said."""
    if attempt is None:
        return None
    try:
        text = (Path(attempt) / NOT_CONTINUED).read_text(errors="replace").strip()
    except OSError:
        return None
    return text or "the command asked not to be continued"


def time_written(attempt: Path | None, name: str) -> str | None:
    """The first line of a time file the task script writes (STARTED, ENDED, HEARTBEAT), as
    written; None when it is missing, unreadable or empty."""
    if attempt is None:
        return None
    try:
        text = (Path(attempt) / name).read_text(errors="replace").strip()
    except OSError:
        return None
    return text.splitlines()[0] if text else None


def last_output(attempt: Path | None, run_dir: str | os.PathLike | None) -> float | None:
    """The newest modification time (epoch seconds) of what a running command writes: the
    attempt's stdout and stderr and the run's metrics files; None when none of them exists."""
    paths = [Path(attempt) / n for n in ATTEMPT_OUTPUT_FILES] if attempt is not None else []
    if run_dir:
        paths += [RunPaths(run_dir).metrics, RunPaths(run_dir).metrics_history]
    times = []
    for path in paths:
        try:
            times.append(path.stat().st_mtime)
        except OSError:
            continue
    return max(times, default=None)


def attempt_dir(run_dir: str | os.PathLike | None, job_key: str | None,
                restart: int | None = None) -> Path | None:
    """`RunPaths(run_dir).find_attempt(job_key, restart)`; None without a run dir or job key."""
    if not run_dir or not job_key:
        return None
    return RunPaths(run_dir).find_attempt(job_key, restart)


def restart_numbers(attempts: Iterable[dict]) -> dict[int, int]:
    """attempt_id -> restart number: how many attempts of the same submission with the same job
    key came before it (Slurm's requeues of one job; a job id reused by another submission
    starts again at 0, as its task script does)."""
    seen: dict[tuple, int] = {}
    out: dict[int, int] = {}
    for a in sorted(attempts, key=lambda a: a["attempt_id"]):
        key = (a.get("sub_id"), a.get("job_key"))
        out[a["attempt_id"]] = seen.get(key, 0)
        seen[key] = out[a["attempt_id"]] + 1
    return out


# --- the user's slurmexp home -----------------------------------------------------------

CACHE_DIR = "cache"                # under the home: short-lived copies of cluster facts


def home_dir() -> Path:
    """$SLURMEXP_HOME, else ~/.slurmexp: the ledger, site.toml and caches of one user."""
    home = os.environ.get("SLURMEXP_HOME")
    return Path(home).expanduser() if home else Path.home() / ".slurmexp"


def facts_cache_file(key: str) -> Path:
    """The cached sacctmgr answers of one cluster, user and command set (`key`: a hash)."""
    return home_dir() / CACHE_DIR / f"facts-{key}.json"
