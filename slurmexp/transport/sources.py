"""Source synchronisation: a sweep's workdir, as it is on this machine, copied once to
`<remote root>/src/<content hash>/` on the cluster, where the runs then execute.

Why so:
- Content-addressed: the folder name is the hash of what is in it, so a run's provenance names
  exactly the code it ran, two sweeps of the same code share one copy, and unchanged sources are
  never sent again (one round trip to see the copy is there).
- Git-aware: in a git work tree the files are git's tracked plus untracked-not-ignored ones
  (`git ls-files --cached --others --exclude-standard`), so data, checkpoints and virtual
  environments a .gitignore names stay at home; outside git, every file. Never `.git` itself
  nor the experiment folders (`exclude`).
- The copy is a gzipped tar over the transport's own connection (no rsync or scp needed there),
  unpacked beside its final name and renamed into place with a `.complete` mark: a copy cut
  half-way is never taken for a finished one.
"""
from __future__ import annotations

import base64
import hashlib
import io
import os
import subprocess
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from slurmexp.errors import SlurmexpError
from slurmexp.transport.ssh import Op, SshTransport

COMPLETE = ".complete"


@dataclass(frozen=True)
class SourceSync:
    hash: str                 # sha256 of the file list, modes and contents
    remote_dir: PurePosixPath
    files: int
    sent: bool                # False: that copy was already on the cluster
    round_trips: int


def source_files(workdir: Path, exclude: Sequence[Path] = ()) -> list[str]:
    """The files to send, relative to `workdir`, sorted."""
    workdir = workdir.resolve()
    skip = [p.resolve() for p in exclude]
    listed = _git_files(workdir)
    if listed is None:
        listed = []
        for dirpath, dirnames, filenames in os.walk(workdir):
            dirnames[:] = sorted(d for d in dirnames if d != ".git")
            listed += [os.path.relpath(os.path.join(dirpath, f), workdir) for f in filenames]
    out = []
    for rel in listed:
        full = workdir / rel
        if ".git" in Path(rel).parts or not full.is_file() or full.is_symlink():
            continue
        if any(full.resolve().is_relative_to(s) for s in skip):
            continue
        out.append(rel)
    return sorted(set(out))


def _git_files(workdir: Path) -> list[str] | None:
    try:
        proc = subprocess.run(["git", "-C", str(workdir), "ls-files", "-z", "--cached", "--others",
                               "--exclude-standard"], capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None     # not a git work tree (or no git): every file
    return [p for p in proc.stdout.decode(errors="surrogateescape").split("\0") if p]


def content_hash(workdir: Path, files: Sequence[str]) -> str:
    h = hashlib.sha256()
    for rel in files:
        full = workdir / rel
        h.update(rel.encode(errors="surrogateescape") + b"\0")
        h.update(b"x" if os.access(full, os.X_OK) else b"-")
        h.update(hashlib.sha256(full.read_bytes()).digest())
    return h.hexdigest()


def _tarball(workdir: Path, files: Sequence[str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for rel in files:
            info = tar.gettarinfo(str(workdir / rel), arcname=rel)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0      # the same sources give the same archive
            with open(workdir / rel, "rb") as f:
                tar.addfile(info, f)
    return buf.getvalue()


def sync_sources(transport: SshTransport, workdir: Path, *, exclude: Sequence[Path] = ()) -> SourceSync:
    """Make `root/src/<hash>/` on the cluster hold the workdir's sources; send only when absent."""
    workdir = Path(workdir).resolve()
    if not workdir.is_dir():
        raise SlurmexpError(f"workdir {workdir} is not a folder on this machine")
    files = source_files(workdir, exclude)
    digest = content_hash(workdir, files)
    final = transport.path(PurePosixPath("src") / digest[:20])
    trips = transport.round_trips
    if transport.exists(final / COMPLETE):
        return SourceSync(digest, final, len(files), False, transport.round_trips - trips)
    data = _tarball(workdir, files)
    tmp = f"{final}.part-{os.getpid()}"
    script = ('set -e; rm -rf "$1"; mkdir -p "$1"; base64 -d | tar -xzf - -C "$1"; : >"$1/' + COMPLETE
              + '"; if ! mv -T "$1" "$2" 2>/dev/null; then rm -rf "$1"; test -e "$2/' + COMPLETE + '"; fi')
    res = transport.batch([Op("mkdirs", path=str(final.parent)),
                           Op("run", argv=("bash", "-c", script, "sx", tmp, str(final)),
                              stdin=base64.b64encode(data).decode(), timeout=600)])
    transport.check_file(Op("mkdirs", path=str(final.parent)), res[0])
    done = transport.check_run(res[1], 600)
    if done.returncode != 0:
        raise SlurmexpError(f"could not unpack the sources in {transport.target}:{final}: "
                            f"{done.stderr.strip() or f'exit {done.returncode}'}")
    return SourceSync(digest, final, len(files), True, transport.round_trips - trips)
