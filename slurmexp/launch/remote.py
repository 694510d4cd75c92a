"""Launch handoff over SSH: what `launch` does differently for a site with a `[remote]` table.

1. The sweep's workdir is synced to `<root>/src/<content hash>/` (`transport.sources`; sent
   only when that copy is not there yet), and the runs execute there.
2. The experiment is written here first, as on a login node, but with the cluster's paths in
   its commands and scripts (`RemoteSettings`: the experiment's folder `<root>/experiments/<id>/`
   and the sources' folder); this local folder is what the ledger names, and later the mirror
   of the result files reconcile fetches.
3. The whole folder goes to the cluster in one round trip (`publish`: a gzipped tar over the
   transport's connection, unpacked beside and renamed into place), before the ledger records
   the experiment: reconcile never submits runs whose files are not on the cluster.
4. Submission is the usual intent -> sbatch -> record (`launch.submission`), through a
   `RemoteScheduler` that gives sbatch the cluster's paths. The ledger stays on this machine.
"""
from __future__ import annotations

import base64
import io
import os
import tarfile
from pathlib import Path, PurePosixPath
from typing import Any

from slurmexp.backends.slurm.remote import remote_exp_dir, scheduler_for_remote, transport_of
from slurmexp.errors import SlurmexpError, SlurmUnavailable
from slurmexp.settings import RemoteSettings
from slurmexp.transport.base import TransportUnreachable
from slurmexp.transport.sources import SourceSync, planned_sync, sync_sources
from slurmexp.transport.ssh import Op


def remote_of_site(site: Any, exp_id: str, workdir: Path, sync: SourceSync | None = None) -> RemoteSettings:
    """The RemoteSettings an experiment launched through `site`'s `[remote]` table records."""
    r = site.remote
    return RemoteSettings(
        host=r.host, user=r.user, port=r.port, identity_file=r.identity_file,
        ssh_options=tuple(r.ssh_options), root=r.root,
        exp_dir=str(remote_exp_dir(r.root, exp_id)),
        src_dir=str(sync.remote_dir) if sync else "", src_hash=sync.hash if sync else "",
        local_workdir=os.fspath(Path(workdir).resolve()))


def planned_remote(site: Any, exp_id: str, workdir: Path, output_dir: Path) -> RemoteSettings:
    """The RemoteSettings a launch through `site`'s `[remote]` table would record, without
    reaching the cluster: the paths render, explain and --dry-run show."""
    sync = planned_sync(site.remote.root, Path(workdir), exclude=[Path(output_dir)])
    return remote_of_site(site, exp_id, workdir, sync)


def sync_workdir(site: Any, workdir: Path, output_dir: Path) -> SourceSync:
    """The sweep's sources on the cluster (never its experiment folders); unreachable is
    SlurmUnavailable (exit 3), with nothing written to the ledger."""
    try:
        return sync_sources(transport_of(RemoteSettings(**_table(site.remote))), Path(workdir),
                            exclude=[Path(output_dir)])
    except TransportUnreachable as exc:
        raise SlurmUnavailable(f"{exc} (nothing was launched)") from None


def _table(r: Any) -> dict:
    return {"host": r.host, "user": r.user, "port": r.port, "identity_file": r.identity_file,
            "ssh_options": tuple(r.ssh_options), "root": r.root}


def scheduler(remote: RemoteSettings, cluster: str | None, local_exp_dir: Path):
    return scheduler_for_remote(remote, cluster, [(os.fspath(local_exp_dir), remote)])


def provenance_entry(remote: RemoteSettings, sync: SourceSync) -> dict:
    """What the provenance says of the code the runs executed."""
    target = f"{remote.user}@{remote.host}" if remote.user else remote.host
    return {"hash": sync.hash, "remote_dir": str(sync.remote_dir), "files": sync.files,
            "sent": sync.sent, "host": target, "exp_dir": remote.exp_dir}


def _tarball(folder: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, folder)
            for name in [*dirnames, *sorted(filenames)]:
                full = os.path.join(dirpath, name)
                if os.path.islink(full):
                    continue
                info = tar.gettarinfo(full, arcname=os.path.normpath(os.path.join(rel_dir, name)))
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if info.isfile():
                    with open(full, "rb") as fh:
                        tar.addfile(info, fh)
                else:
                    tar.addfile(info)
    return buf.getvalue()


def publish(remote: RemoteSettings, local_exp_dir: Path) -> None:
    """Copy the experiment folder to `remote.exp_dir` in one round trip. Unpacked beside and
    renamed in, so a task never reads half a folder; an existing copy (a launch that died after
    publishing) is replaced. Unreachable is SlurmUnavailable: nothing is in the ledger yet."""
    transport = transport_of(remote)
    final = PurePosixPath(remote.exp_dir)
    data = _tarball(Path(local_exp_dir))
    script = ('set -e; tmp="$1.part-$$"; rm -rf "$tmp"; mkdir -p "$tmp"; '
              'base64 -d | tar -xzf - -C "$tmp"; rm -rf "$1"; mv -T "$tmp" "$1"')
    try:
        res = transport.batch([Op("mkdirs", path=str(final.parent)),
                               Op("run", argv=("bash", "-c", script, "sx", str(final)),
                                  stdin=base64.b64encode(data).decode(), timeout=600)])
    except TransportUnreachable as exc:
        raise SlurmUnavailable(f"{exc} (nothing was launched)") from None
    transport.check_file(Op("mkdirs", path=str(final.parent)), res[0])
    done = transport.check_run(res[1], 600)
    if done.returncode != 0:
        raise SlurmexpError(f"could not write the experiment folder {transport.target}:{final}: "
                            f"{done.stderr.strip() or f'exit {done.returncode}'}")
