"""The Slurm backend: builds each command (`commands`), runs it through `run_slurm` over a
transport, and reads the output with the pure parsers in `parse`.

Every Slurm command goes through `run_slurm`, so that one function decides what a daemon that
does not answer looks like (SlurmUnavailable: retry later, never a job failure), what a refusal
looks like (SlurmCommandError with Slurm's own words), and which time format the output is in;
it also keeps the call log (`CALLS`, `CALL_COUNTS`) that tests and diagnostics read. The command
itself runs wherever the backend's transport runs it: this machine (`LocalTransport`, the
default) or a login node over SSH.

Queries are batched: one sacct/squeue call for all the jobs asked about, since a login node
shared by hundreds of users is where per-job polling hurts the scheduler most.
"""
from __future__ import annotations

import getpass
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import PurePath
from typing import Sequence

from slurmexp.backends.facts import ClusterFacts, SacctRow, SqueueRow, SubmitResult
from slurmexp.backends.slurm import commands, facts_cache, failures
from slurmexp.backends.slurm import parse as sp
from slurmexp.errors import SlurmCommandError, SlurmUnavailable
from slurmexp.transport.base import (
    CommandNotFound,
    CommandResult,
    CommandTimeout,
    Transport,
    TransportError,
    TransportUnreachable,
)

# Linux allows ~2 MB of arguments, but a single argument is capped at 128 KiB and some sites wrap
# Slurm commands in shell scripts; a joined -j list stays well under both.
MAX_ARG_BYTES = 100_000
# Added to every Slurm command's environment: ISO timestamps, which the parsers expect.
SLURM_ENV = {"SLURM_TIME_FORMAT": "standard"}


@dataclass
class CallRecord:
    command: str          # argv[0], e.g. "sacct"
    seconds: float
    returncode: int | None  # None: did not finish (timeout) or could not start


# Cheap diagnostics: how many Slurm calls a command made and how long they took. Bounded, so a
# long-running watcher does not grow it forever.
CALLS: list[CallRecord] = []
CALL_COUNTS: dict[str, int] = {}
_MAX_RECORDS = 1000
_default_transport: Transport | None = None
_CALLS_LOCK = threading.Lock()   # validation runs its fact queries in threads


def _record(command: str, started: float, returncode: int | None) -> None:
    with _CALLS_LOCK:
        CALL_COUNTS[command] = CALL_COUNTS.get(command, 0) + 1
        CALLS.append(CallRecord(command, time.monotonic() - started, returncode))
        if len(CALLS) > _MAX_RECORDS:
            del CALLS[: len(CALLS) - _MAX_RECORDS]


def reset_call_log() -> None:
    CALLS.clear()
    CALL_COUNTS.clear()


def default_transport() -> Transport:
    """The transport of a backend made without one: this machine, one object per process."""
    global _default_transport
    if _default_transport is None:
        from slurmexp.transport.local import LocalTransport

        _default_transport = LocalTransport()
    return _default_transport


def run_slurm(argv: Sequence[str], *, timeout: float = 60, check: bool = True,
              cwd: str | PurePath | None = None, transport: Transport | None = None,
              stdin: str | None = None, stop_on: Sequence[str] = ()) -> CommandResult:
    """Run one Slurm command (argv, no shell) through `transport` (default: this machine),
    with ISO timestamps in its output.

    Raises SlurmUnavailable when the command is missing, times out, or says a daemon did not
    answer; when `check`, SlurmQueueLimit for a queue limit (MaxJobCount, MaxSubmitJobs) and
    SlurmCommandError for any other non-zero exit; the transport's own TransportError when it
    could not run the command at all (e.g. `cwd` does not exist). `stop_on`: stderr phrases
    at which the command is killed and judged on what it printed so far (`Transport.run`).
    """
    argv = list(argv)
    transport = transport or default_transport()
    command = os.path.basename(argv[0]) if argv else "?"
    where = "here" if transport.name == "local" else f"on {transport.name}"
    if transport.name == "local":
        failures.check_slurm_conf(command)
    started = time.monotonic()
    extra = {"stop_on": tuple(stop_on)} if stop_on else {}
    try:
        proc = transport.run(argv, timeout=timeout, cwd=cwd, stdin=stdin, env=SLURM_ENV, **extra)
    except CommandNotFound:
        _record(command, started, None)
        raise SlurmUnavailable(
            f"{command}: command not found; Slurm is not installed or not on PATH {where} "
            f"(this is not a job failure)") from None
    except CommandTimeout:
        _record(command, started, None)
        exc = SlurmUnavailable(
            f"{command} did not answer within {timeout:g}s; the Slurm controller or database "
            f"may be overloaded or down (this is not a job failure)")
        exc.timed_out = True
        raise exc from None
    except TransportUnreachable as exc:
        # The cluster's machine could not be reached: nothing ran, nothing is known.
        _record(command, started, None)
        raise SlurmUnavailable(f"{exc} (this is not a job failure)") from None
    except TransportError:
        _record(command, started, None)
        raise
    _record(command, started, proc.returncode)
    if proc.returncode != 0:
        error = failures.error_for(command, proc, check=check)
        if error is not None:
            raise error
    return proc


def _chunks(ids: Sequence[str]) -> list[list[str]]:
    return commands.split_ids(ids, MAX_ARG_BYTES)


def _unique(ids: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(str(i) for i in ids if str(i)))


_CLUSTER_NAME = re.compile(r"^\s*ClusterName\s*=\s*(\S+)", re.IGNORECASE | re.MULTILINE)


def local_cluster_name(transport: Transport) -> str | None:
    """ClusterName from the slurm.conf the commands on `transport` read ($SLURM_CONF, else
    /etc/slurm/slurm.conf); None when it cannot be read (then --clusters is always passed)."""
    path = os.environ.get("SLURM_CONF") or "/etc/slurm/slurm.conf"
    try:
        m = _CLUSTER_NAME.search(transport.read_text(path))
    except Exception:   # noqa: BLE001 - any failure means "not known": the safe answer
        return None
    return m.group(1).lower() if m else None


class SlurmBackend:
    """The `Scheduler` of a Slurm cluster (see `backends.base`), reached through `transport`.

    `cluster` is the cluster the jobs go to (what the experiment's row records). Commands carry
    --clusters=<cluster> only when it is not the cluster this machine's slurm.conf names: with
    -M every command goes through slurmdbd (about 90 ms instead of 5 per sbatch/squeue here,
    and no queue at all while slurmdbd is down), which the local cluster never needs.
    """

    kind = "slurm"

    def __init__(self, cluster: str | None = None, user: str | None = None,
                 transport: Transport | None = None):
        self.cluster = cluster or None
        self._user = user or None
        self.transport = transport or default_transport()

    @property
    def user(self) -> str:
        """Whose jobs these are (sacct -u, squeue -u): the login on the transport's machine.
        Over SSH that is the cluster's user (asked once), never this machine's $USER."""
        if self._user is None:
            whoami = getattr(self.transport, "whoami", None)
            if self.transport.name != "local" and whoami is not None:
                self._user = whoami()
            else:
                self._user = os.environ.get("USER") or getpass.getuser()
        return self._user

    @user.setter
    def user(self, value: str) -> None:
        self._user = value

    def assume_local_cluster(self, name: str, *, user: str | None = None) -> None:
        """Take `name` as the cluster the transport's slurm.conf names (and `user` as the login)
        without asking: a `[remote]` site was discovered there, and over SSH asking costs a
        round trip."""
        self._local = name.lower()
        if user:
            self._user = user

    @property
    def cluster_flag(self) -> str | None:
        """The cluster to name with --clusters: ours unless it is the local one."""
        if self.cluster is None:
            return None
        if not hasattr(self, "_local"):
            self._local = local_cluster_name(self.transport)
        return None if self._local == self.cluster.lower() else self.cluster

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.cluster}" if self.cluster else self.kind

    def __repr__(self) -> str:
        return f"SlurmBackend(cluster={self.cluster!r}, user={self.user!r}, transport={self.transport!r})"

    def _run(self, argv: list[str], **kw) -> CommandResult:
        return run_slurm(argv, transport=self.transport, **kw)

    # --- submission ---------------------------------------------------------------------
    def submit(self, script: str | PurePath, *, extra_args: Sequence[str] = (),
               cwd: str | PurePath | None = None, timeout: float = 60) -> SubmitResult:
        """sbatch --parsable. A timeout raises SlurmUnavailable although the job may exist:
        the caller finds it later by its tag (job name / comment) instead of submitting twice."""
        argv = commands.sbatch(script, cluster=self.cluster_flag, extra_args=extra_args)
        # sbatch retries a full queue by itself for two minutes (sleeping 1, 2, ... 15 s) with
        # nothing to show for it; it is stopped at its first "sleeping and retrying", while it
        # sleeps and before it asks again, so no job can have been created.
        proc = self._run(argv, timeout=timeout, cwd=cwd, stop_on=sp.SBATCH_RETRYING)
        result = sp.parse_sbatch_parsable(proc.stdout)
        if result.cluster is None and self.cluster:
            result.cluster = self.cluster
        return result

    def test_only(self, script: str | PurePath, extra_args: Sequence[str] = (),
                  timeout: float = 60) -> tuple[bool, str]:
        """sbatch --test-only: (True, "Job N to start at ...") or (False, Slurm's refusal).

        The controller checks the request against partitions, QOS and associations without
        creating a job, so validation can quote exactly what Slurm would say."""
        argv = commands.sbatch(script, cluster=self.cluster_flag, extra_args=extra_args, test_only=True)
        proc = self._run(argv, timeout=timeout, check=False)
        message = (proc.stderr or "").strip()
        if proc.returncode == 0 and sp.parse_test_only(message):
            return True, message
        if proc.returncode == 0:
            return True, message or (proc.stdout or "").strip()
        if sp.classify_error(message) == "queue_full":
            message = ("the cluster's queue is full (MaxJobCount reached; every job the controller "
                       f"holds counts, other users' and those ended in the last MinJobAge too): {message}")
        return False, message or f"sbatch --test-only exited {proc.returncode}"

    def cancel(self, job_ids: list[str], timeout: float = 60) -> None:
        ids = _unique(job_ids)
        if not ids:
            return
        for chunk in _chunks(ids):
            self._run(commands.scancel(chunk, cluster=self.cluster_flag), timeout=timeout)

    # --- queue and accounting -----------------------------------------------------------
    def queue(self, job_ids: list[str] | None = None, *, name_prefix: str | None = None,
              timeout: float = 60, per_task: bool = True) -> list[SqueueRow]:
        """One squeue call (-r: one row per array task). squeue --name matches whole names only,
        so a name prefix is filtered here.

        With job ids, `-t all` is passed: the controller still knows a finished job for
        MinJobAge (Slurm's default 300 s; 60 s on the test cluster) and says COMPLETED/FAILED/... at once, while
        sacct can lag behind by seconds. Without ids only pending and running jobs are listed.
        """
        if job_ids is not None:
            ids = _unique(job_ids)
            if not ids:
                return []
            rows: list[SqueueRow] = []
            for chunk in _chunks(ids):
                proc = self._run(commands.squeue(cluster=self.cluster_flag, job_ids=chunk, per_task=per_task),
                                 timeout=timeout, check=False)
                if proc.returncode != 0:
                    # squeue fails with "Invalid job id specified" only when none of the ids is
                    # known to the controller (one unknown among known ones is ignored): those
                    # jobs have simply left the queue.
                    if "invalid job id" in (proc.stderr or "").lower():
                        continue
                    raise SlurmCommandError(f"squeue failed (exit {proc.returncode}): "
                                            f"{(proc.stderr or '').strip()}")
                rows += sp.parse_squeue(proc.stdout)
        else:
            proc = self._run(commands.squeue(cluster=self.cluster_flag, user=self.user), timeout=timeout)
            rows = sp.parse_squeue(proc.stdout)
        if name_prefix is not None:
            rows = [r for r in rows if r.name.startswith(name_prefix)]
        return rows

    def start_queue(self, timeout: float = 60):
        """`queue()` started now; `.rows()` reads it (`started`): sacct runs meanwhile."""
        from slurmexp.backends.slurm.started import StartedQueue
        return StartedQueue(commands.squeue(cluster=self.cluster_flag, user=self.user),
                            timeout=timeout, transport=self.transport)

    def submit_times(self, job_ids: list[str], *, since: str = "now-7days",
                     timeout: float = 60) -> dict[str, str]:
        """Submit time per job id: the (cluster, job id, submit time) key of an attempt, since
        job ids are reused after a controller reset. squeue first (exact and cheap), then one
        sacct call for the ids that already left the queue."""
        ids = _unique(job_ids)
        out: dict[str, str] = {}
        if not ids:
            return out
        for row in self.queue(ids, timeout=timeout, per_task=False):   # a pending array: one row
            if row.submit is None:
                continue
            for key in (row.job_id, row.array_job_id):
                if key in ids and key not in out:
                    out[key] = row.submit
        missing = [j for j in ids if j not in out]
        if missing:
            for row in self.accounting(missing, since=since, timeout=timeout):
                if row.submit is None:
                    continue
                for key in (row.job_id, row.job_id_raw, row.array_job_id):
                    if key in missing and key not in out:
                        out[key] = row.submit
        return out

    def accounting(self, job_ids: list[str], *, since: str, user: str | None = None,
                   names: list[str] | None = None, array_ids: Sequence[str] = (),
                   timeout: float = 60) -> list[SacctRow]:
        """Accounting rows (steps folded, -D keeps requeued attempts) in one sacct call.

        `since` is required: without -S, sacct with -j searches all history, where reused job
        ids from before a controller reset would be mistaken for ours. `names` selects by job
        name instead of id (finding the jobs of a launch that crashed before recording them).
        """
        user = user or self.user
        if names is not None:
            argvs = [commands.sacct(since=since, cluster=self.cluster_flag, user=user, names=chunk)
                     for chunk in _chunks(_unique(names))]
        else:
            argvs = [commands.sacct(since=since, cluster=self.cluster_flag, user=user, job_ids=chunk)
                     for chunk in _chunks(_unique(job_ids))]
        rows: list[SacctRow] = []
        for argv in argvs:
            proc = self._run(argv, timeout=timeout)
            rows += sp.parse_sacct(proc.stdout, sp.DELIMITER, array_ids=array_ids)
        return rows

    # The Slurm names of `queue` and `accounting`, as tests and older callers use them.
    def squeue_rows(self, job_ids: list[str] | None = None, **kw) -> list[SqueueRow]:
        return self.queue(job_ids, **kw)

    def sacct_rows(self, job_ids: list[str], **kw) -> list[SacctRow]:
        return self.accounting(job_ids, **kw)

    # --- cluster facts ------------------------------------------------------------------
    def cluster_facts(self, user: str | None = None, timeout: float = 60, *,
                      max_age_s: float | None = None) -> ClusterFacts:
        """Everything validation and `site discover` read, one command per part, all at once
        (they are independent; one after another they took twice as long). A part whose command
        fails is left None and named in `skipped`: a missing slurmdbd must not stop validation
        from checking partitions.

        With `max_age_s` the sacctmgr parts (QOS, associations) may come from a cache no older
        than that (`facts_cache`; `cached_age_s` then says how old they are), and what is read
        fresh refills it; 0 reads fresh and refills. None (the default) leaves the cache alone.
        A controller not answering (scontrol, squeue) raises SlurmUnavailable naming the first
        such command: nothing more is asked. slurmdbd's (sacctmgr) only skips QOS and assocs."""
        user = user or self.user
        queries = commands.cluster_facts(user, self.cluster_flag)
        # The cache's key (a PATH lookup among others) only when a caller uses the cache.
        cache_path = self._facts_cache_path(user) if max_age_s is not None else None
        cached = facts_cache.load(cache_path, queries, max_age_s) if max_age_s else None
        texts: dict[str, str | None] = dict(cached[0]) if cached else {}
        failed: dict[str, str] = {}
        down: dict[str, SlurmUnavailable] = {}            # the controller's, by query

        def attempt(what: str) -> str | None:
            try:
                return self._run(queries[what], timeout=timeout).stdout
            except (SlurmUnavailable, SlurmCommandError) as exc:
                if isinstance(exc, SlurmUnavailable) and queries[what][0] != "sacctmgr":
                    down[what] = exc
                failed[what] = f"{what}: {exc.message}"
                return None

        todo = [what for what in queries if what not in texts]
        from concurrent.futures import ThreadPoolExecutor  # validation's, not a pass's
        with ThreadPoolExecutor(max_workers=len(todo) or 1) as pool:
            texts.update(zip(todo, pool.map(attempt, todo)))
        if down:                                          # the first in command order
            raise next(down[what] for what in queries if what in down)
        if cached is None and max_age_s is not None:   # only callers that use the cache fill it
            facts_cache.store(cache_path, queries, texts)
        skipped = [failed[what] for what in queries if what in failed]   # in command order
        facts = sp.cluster_facts_from(user=user, cluster=self.cluster, skipped=skipped,
                                      **{what: texts[what] for what in queries})
        facts.cached_age_s = cached[1] if cached else None
        return facts

    def _facts_cache_path(self, user: str):
        # Everything that decides which slurmdbd answers: the machine, the slurm.conf, the
        # sacctmgr found on PATH (the test roots put their own first), the cluster and the user.
        here = shutil.which("sacctmgr") if self.transport.name == "local" else None
        return facts_cache.path_for(self.transport.name, os.environ.get("SLURM_CONF"), here, self.cluster, user)
