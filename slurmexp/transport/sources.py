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
- Incremental: each copy keeps a `.manifest` (sha256, mode and path of every file). The round
  trip that looks for the copy also reads the manifest of the newest complete copy; only files
  that differ from it travel, the others are copied from it on the cluster. Whole files, not
  rsync's deltas within a file: sources are many small files, and this needs nothing on the
  cluster but bash, coreutils and tar, over the one connection the transport already holds
  (rsync is neither assumed there nor a second session).
- The copy is a gzipped tar over the transport's own connection, unpacked beside its final name
  and renamed into place with a `.complete` mark: a copy cut half-way is never taken for a
  finished one, and never serves as another's base.
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
MANIFEST = ".manifest"
KEEP = ".sx-keep"       # in the archive only: the files to take from the base copy


@dataclass(frozen=True)
class SourceSync:
    hash: str                 # sha256 of the file list, modes and contents
    remote_dir: PurePosixPath
    files: int
    sent: bool                # False: that copy was already on the cluster
    round_trips: int
    files_sent: int = 0       # files that travelled (the rest came from an earlier copy there)


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


def file_digests(workdir: Path, files: Sequence[str]) -> dict[str, str]:
    """path -> "<sha256> <x or ->" of each file (its content and whether it is executable)."""
    return {rel: hashlib.sha256((workdir / rel).read_bytes()).hexdigest() + " "
            + ("x" if os.access(workdir / rel, os.X_OK) else "-") for rel in files}


def content_hash(workdir: Path, files: Sequence[str], digests: dict[str, str] | None = None) -> str:
    digests = digests if digests is not None else file_digests(workdir, files)
    h = hashlib.sha256()
    for rel in files:
        sha, mode = digests[rel].split(" ")
        h.update(rel.encode(errors="surrogateescape") + b"\0")
        h.update(mode.encode())
        h.update(bytes.fromhex(sha))
    return h.hexdigest()


def manifest_text(digests: dict[str, str]) -> str:
    """The `.manifest` of a copy: "<sha256> <x|-> <path>" per file, sorted by path."""
    return "".join(f"{digests[rel]} {rel}\n" for rel in sorted(digests))


def parse_manifest(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and len(parts[0]) == 64 and parts[1] in ("x", "-"):
            out[parts[2]] = f"{parts[0]} {parts[1]}"
    return out


def _tarball(workdir: Path, files: Sequence[str], extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for rel in files:
            info = tar.gettarinfo(str(workdir / rel), arcname=rel)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0      # the same sources give the same archive
            with open(workdir / rel, "rb") as f:
                tar.addfile(info, f)
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# The first round trip: "present" when the copy is there; else the newest complete copy's
# folder and its manifest, as the base of an incremental copy ("none" without one).
_LOOK = ('if [ -e "$1/' + COMPLETE + '" ]; then echo present; exit 0; fi; '
         'b=$(ls -1td -- "$2"/*/' + COMPLETE + ' 2>/dev/null | head -n 1); b=${b%/' + COMPLETE + '}; '
         'if [ -n "$b" ] && [ -f "$b/' + MANIFEST + '" ]; then echo "base $b"; cat -- "$b/' + MANIFEST + '"; '
         'else echo none; fi')
# The second: unpack what was sent, copy the unchanged files from the base (listed NUL-separated
# in KEEP), mark it complete, rename it into place. Exit 97: the base went away meanwhile.
_UNPACK = ('set -e -o pipefail; rm -rf "$1"; mkdir -p "$1"; base64 -d | tar -xzf - -C "$1"; '
           'if [ -s "$1/' + KEEP + '" ]; then (cd "$3" && tar -cf - --null -T "$1/' + KEEP + '") '
           '| tar -xf - -C "$1" || { rm -rf "$1"; exit 97; }; fi; rm -f "$1/' + KEEP + '"; '
           ': >"$1/' + COMPLETE + '"; if ! mv -T "$1" "$2" 2>/dev/null; then rm -rf "$1"; '
           'test -e "$2/' + COMPLETE + '"; fi')


def source_dir(root: str | PurePosixPath, digest: str) -> PurePosixPath:
    """Where the copy of sources with content hash `digest` lives under a remote root."""
    return PurePosixPath(os.fspath(root)) / "src" / digest[:20]


def planned_sync(root: str | PurePosixPath, workdir: Path, *, exclude: Sequence[Path] = ()) -> SourceSync:
    """What `sync_sources` would make of `workdir`, computed here without reaching the cluster
    (render, explain and --dry-run show the paths the runs would have)."""
    workdir = Path(workdir).resolve()
    files = source_files(workdir, exclude)
    digest = content_hash(workdir, files)
    return SourceSync(digest, source_dir(root, digest), len(files), False, 0)


def sync_sources(transport: SshTransport, workdir: Path, *, exclude: Sequence[Path] = ()) -> SourceSync:
    """Make `root/src/<hash>/` on the cluster hold the workdir's sources; send only when absent,
    and then only the files the newest copy there does not already hold."""
    workdir = Path(workdir).resolve()
    if not workdir.is_dir():
        raise SlurmexpError(f"workdir {workdir} is not a folder on this machine")
    files = source_files(workdir, exclude)
    digests = file_digests(workdir, files)
    digest = content_hash(workdir, files, digests)
    final = source_dir(transport.root, digest)
    trips = transport.round_trips
    look = transport.run(["bash", "-c", _LOOK, "sx", str(final), str(final.parent)], timeout=60,
                         cwd=PurePosixPath("/"))
    first, _, rest = look.stdout.partition("\n")
    if look.returncode == 0 and first.strip() == "present":
        return SourceSync(digest, final, len(files), False, transport.round_trips - trips)
    base = first[5:].strip() if look.returncode == 0 and first.startswith("base ") else None
    have = parse_manifest(rest) if base else {}
    keep = [rel for rel in files if have.get(rel) == digests[rel]]
    done = _send(transport, workdir, digests, keep, final, base)
    if done.returncode == 97:       # the base copy vanished under us: send everything
        keep = []
        done = _send(transport, workdir, digests, keep, final, None)
    if done.returncode != 0:
        raise SlurmexpError(f"could not unpack the sources in {transport.target}:{final}: "
                            f"{done.stderr.strip() or f'exit {done.returncode}'}")
    return SourceSync(digest, final, len(files), True, transport.round_trips - trips,
                      len(files) - len(keep))


def _send(transport: SshTransport, workdir: Path, digests: dict[str, str], keep: Sequence[str],
          final: PurePosixPath, base: str | None):
    kept = set(keep)
    data = _tarball(workdir, [rel for rel in digests if rel not in kept], {
        MANIFEST: manifest_text(digests).encode(errors="surrogateescape"),
        KEEP: b"".join(rel.encode(errors="surrogateescape") + b"\0" for rel in keep)})
    tmp = f"{final}.part-{os.getpid()}"
    res = transport.batch([Op("mkdirs", path=str(final.parent)),
                           Op("run", argv=("bash", "-c", _UNPACK, "sx", tmp, str(final), base or "/"),
                              stdin=base64.b64encode(data).decode(), timeout=600)])
    transport.check_file(Op("mkdirs", path=str(final.parent)), res[0])
    return transport.check_run(res[1], 600)
