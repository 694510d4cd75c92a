"""What a scheduler backend is (`Scheduler`), which kinds exist (`KINDS`), and the one factory
that builds one (`scheduler_for`, `scheduler_for_experiment`).

As in aiida-core, a scheduler builds commands and reads their output, and a transport runs
them (`slurmexp.transport`): the Slurm backend is the same over a local shell or SSH. The local
backend runs a chunk's script on this machine instead, synchronously.

Code that treats backends differently asks the registry what the experiment's kind does
(`backend_kind(exp["backend"]).reconciled`, `.retried`, ...), never compares kind strings; and
gets its scheduler from the factory with the experiment's own cluster, so reconcile, retry and
cancel ask the cluster the jobs were submitted to.
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from slurmexp.backends.facts import ClusterFacts, SacctRow, SqueueRow, SubmitResult
from slurmexp.errors import Problem, SlurmexpError

if TYPE_CHECKING:
    from slurmexp.transport.base import Transport


@runtime_checkable
class Scheduler(Protocol):
    """A place jobs run: builds its commands, reads their answers, and says what it knows.

    Rows are the plain data of `backends.facts`, so reconcile and validation never read a
    command's text. A scheduler that cannot do something raises SlurmexpError saying so;
    a daemon that does not answer raises SlurmUnavailable (not a job failure).
    """

    kind: str                       # the registry key: "slurm", "local"
    cluster: str | None             # the cluster addressed (None: the default one)

    @property
    def name(self) -> str:
        """For messages: the kind, and the cluster when there is one ("slurm:minicluster")."""
        ...

    def submit(self, script: str | PurePath, *, extra_args: Sequence[str] = (),
               cwd: str | PurePath | None = None, timeout: float = 60) -> SubmitResult:
        """Submit a script (sbatch semantics: `extra_args` override its #SBATCH lines)."""
        ...

    def test_only(self, script: str | PurePath, extra_args: Sequence[str] = (),
                  timeout: float = 60) -> tuple[bool, str]:
        """Would the scheduler accept the script? (ok, its message); creates nothing."""
        ...

    def queue(self, job_ids: list[str] | None = None, *, name_prefix: str | None = None,
              timeout: float = 60) -> list[SqueueRow]:
        """What waits or runs now (squeue rows): these jobs, or all of the user's."""
        ...

    def accounting(self, job_ids: list[str], *, since: str, user: str | None = None,
                   names: list[str] | None = None, array_ids: Sequence[str] = (),
                   timeout: float = 60) -> list[SacctRow]:
        """What happened to these jobs (sacct rows) since `since`; by job name with `names`."""
        ...

    def submit_times(self, job_ids: list[str], *, since: str = "now-7days",
                     timeout: float = 60) -> dict[str, str]:
        """Submit time per job id (with the cluster and job id, an attempt's key)."""
        ...

    def cancel(self, job_ids: list[str], timeout: float = 60) -> None:
        ...

    def cluster_facts(self, user: str | None = None, timeout: float = 60, *,
                      max_age_s: float | None = None) -> ClusterFacts:
        """Partitions, nodes, QOS, reservations, associations; unreadable parts in `skipped`.
        Parts that change rarely may come from a cache no older than `max_age_s` (None: no cache)."""
        ...


@dataclass(frozen=True)
class BackendKind:
    """What slurmexp does with the experiments of one backend kind."""

    kind: str
    implementation: str             # "module:Class" of its Scheduler, imported when first built
    description: str
    reconciled: bool                # reconcile asks its accounting (sacct) about active attempts
    retried: bool                   # failed runs are resubmitted (reconcile, `slurmexp retry`)
    cancellable: bool               # `slurmexp cancel` asks the scheduler to cancel the jobs
    live_checks: bool               # validation asks the scheduler (cluster_facts, test_only)
    in_process: bool                # runs in the launching process and is over when launch returns


KINDS: dict[str, BackendKind] = {k.kind: k for k in (
    BackendKind("slurm", "slurmexp.backends.slurm.backend:SlurmBackend",
                "job arrays on a Slurm cluster, reconciled against sacct",
                reconciled=True, retried=True, cancellable=True, live_checks=True,
                in_process=False),
    BackendKind("local", "slurmexp.backends.local:LocalBackend",
                "the same scripts run on this machine, in the launching process",
                reconciled=False, retried=False, cancellable=False, live_checks=False,
                in_process=True),
)}
DEFAULT_KIND = "slurm"


def kind_names(**where: bool) -> tuple[str, ...]:
    """The registered kinds, e.g. kind_names(reconciled=True) -> ("slurm",)."""
    return tuple(k.kind for k in KINDS.values()
                 if all(getattr(k, prop) == value for prop, value in where.items()))


def find_kind(kind: str | None) -> BackendKind | None:
    return KINDS.get(kind or "")


def backend_kind(kind: str | None, *, key: str = "backend") -> BackendKind:
    """The registry entry of `kind`; a clear error naming the kinds there are when unknown.

    `key` names where the word came from in the error (e.g. "--backend")."""
    found = find_kind(kind)
    if found is None:
        raise SlurmexpError(f"unknown backend {kind!r}", [Problem(
            "", key, f"{kind!r} is not a backend slurmexp knows",
            f"use one of: {', '.join(KINDS)}")])
    return found


def scheduler_for(kind: str, cluster: str | None = None,
                  transport: Transport | None = None, *, site: Any = None) -> Scheduler:
    """The scheduler of backend `kind` for `cluster` (None: the default one), running its
    commands through `transport` (None: this machine, or the SSH transport of `site`'s
    `[remote]` table when it has one). The one place a scheduler is built."""
    entry = backend_kind(kind)
    if transport is None and getattr(site, "remote", None) is not None and entry.live_checks:
        from slurmexp.transport.remote_site import transport_for_remote

        transport = transport_for_remote(site.remote)
        sched: Any = getattr(importlib.import_module(entry.implementation.partition(":")[0]),
                             entry.implementation.partition(":")[2])(cluster=cluster or None,
                                                                     transport=transport)
        # What discovery read on the login node: its own cluster (no --clusters needed) and the
        # login's user, so a pass costs no extra round trip to ask again.
        sched.assume_local_cluster(site.cluster, user=site.remote.user)
        from slurmexp.backends.slurm.remote import RemoteScheduler

        return RemoteScheduler(sched)     # --test-only of a script rendered here copies it there
    module_name, _, class_name = entry.implementation.partition(":")
    cls: Any = getattr(importlib.import_module(module_name), class_name)
    return cls(cluster=cluster or None, transport=transport)


def scheduler_for_experiment(exp: Mapping[str, Any], transport: Transport | None = None) -> Scheduler:
    """The scheduler an experiment's jobs went to: its row's `backend` and `cluster`, through
    the login node its settings name when it was launched over SSH."""
    if transport is None and exp.get("settings_json") and backend_kind(exp["backend"]).live_checks:
        from slurmexp.backends.slurm.remote import remote_settings_of, scheduler_for_remote

        remote = remote_settings_of(exp)
        if remote is not None:
            return scheduler_for_remote(remote, exp.get("cluster"), [(exp["exp_dir"], remote)])
    return scheduler_for(exp["backend"], exp.get("cluster"), transport)
