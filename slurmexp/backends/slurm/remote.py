"""The Slurm backend of experiments launched over SSH (`[remote]` in site.toml).

Such an experiment has two folders: the local one the ledger's paths name (written at launch,
then the mirror of the result files reconcile fetches, so `status`, `report` and `show` work
with the cluster unreachable), and its copy on the cluster under `<root>/experiments/<id>/`,
where the jobs read and write. `RemoteScheduler` is a `SlurmBackend` over the SSH transport
that submits a local path by its cluster side, so launch, due retries and `slurmexp retry`
submit through `launch.submission` unchanged. Everything else is the backend's own.
"""
from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Sequence
from pathlib import PurePath, PurePosixPath
from typing import Any

from slurmexp.settings import RemoteSettings

EXPERIMENTS_DIR = "experiments"      # under the remote root: one folder per experiment
SRC_DIR = "src"                      # under the remote root: synced sources by content hash


def remote_exp_dir(root: str | PurePosixPath, exp_id: str) -> PurePosixPath:
    return PurePosixPath(root) / EXPERIMENTS_DIR / exp_id


class RemoteScheduler:
    """A SlurmBackend over SSH whose script and cwd paths are this machine's: each is sent as
    its cluster side (the mirror of an experiment -> its folder there, the sweep's workdir ->
    the synced sources). Any other attribute is the backend's."""

    def __init__(self, backend: Any, remote: RemoteSettings | None = None):
        self.backend = backend
        self.remote = remote
        self._maps: list[tuple[str, str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["backend"], name)

    def __repr__(self) -> str:
        return f"RemoteScheduler({self.backend!r})"

    def add_experiment(self, local_exp_dir: str | os.PathLike, remote: RemoteSettings) -> None:
        """Map this experiment's local folder (and its sweep's workdir) to the cluster's."""
        pairs = [(os.fspath(local_exp_dir), remote.exp_dir)]
        if remote.local_workdir and remote.src_dir:
            pairs.append((remote.local_workdir, remote.src_dir))
        for pair in pairs:
            if pair not in self._maps:
                self._maps.append(pair)
        # The longest prefix first: an experiment folder inside the workdir maps as itself.
        self._maps.sort(key=lambda p: -len(p[0]))

    def to_remote(self, path: str | PurePath) -> PurePosixPath:
        """The cluster side of a local path under a mapped folder; any other path as given."""
        text = os.fspath(path)
        for local, remote in self._maps:
            if text == local or text.startswith(local.rstrip("/") + "/"):
                return PurePosixPath(remote + text[len(local):])
        return PurePosixPath(text)

    def submit(self, script: str | PurePath, *, extra_args: Sequence[str] = (),
               cwd: str | PurePath | None = None, timeout: float = 60):
        return self.backend.submit(self.to_remote(script), extra_args=extra_args,
                                   cwd=None if cwd is None else self.to_remote(cwd), timeout=timeout)

    def test_only(self, script: str | PurePath, extra_args: Sequence[str] = (),
                  timeout: float = 60) -> tuple[bool, str]:
        """sbatch --test-only on the cluster; a script that exists only here (validation
        renders it into a temporary folder) is copied to `<root>/tmp/` first."""
        mapped = self.to_remote(script)
        if mapped != PurePosixPath(os.fspath(script)):
            return self.backend.test_only(mapped, extra_args, timeout)
        transport = self.backend.transport
        tmp = transport.path(PurePosixPath("tmp") / f"test-only-{secrets.token_hex(6)}.sbatch")
        transport.makedirs(tmp.parent)
        with open(script, encoding="utf-8") as fh:
            transport.write_text(tmp, fh.read())
        return self.backend.test_only(tmp, extra_args, timeout)


def transport_of(remote: RemoteSettings):
    """The SSH transport of a `[remote]` table as an experiment recorded it (one per process)."""
    from slurmexp.transport.remote_site import transport_for_remote

    return transport_for_remote(remote)


def scheduler_for_remote(remote: RemoteSettings, cluster: str | None,
                         experiments: Iterable[tuple[str, RemoteSettings]] = ()) -> RemoteScheduler:
    """The scheduler of experiments launched through `remote`'s login node: a SlurmBackend
    over its SSH transport (the login's own cluster, its user as recorded) with each
    (local experiment folder, its RemoteSettings) mapped."""
    from slurmexp.backends.slurm.backend import SlurmBackend

    backend = SlurmBackend(cluster=cluster or None, transport=transport_of(remote))
    if cluster:
        backend.assume_local_cluster(cluster, user=remote.user)
    sched = RemoteScheduler(backend, remote)
    for local_exp_dir, settings in experiments:
        sched.add_experiment(local_exp_dir, settings)
    return sched


def remote_settings_of(exp: Any) -> RemoteSettings | None:
    """The RemoteSettings an experiment row carries (None: launched on local Slurm)."""
    from slurmexp.settings import ExperimentSettings

    text = exp.get("settings_json") if hasattr(exp, "get") else None
    return ExperimentSettings.from_json(text).remote if text else None
