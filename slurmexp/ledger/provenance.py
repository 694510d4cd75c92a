"""What is needed to reproduce an experiment months later: code version, environment, who/where.

Collected once per launch, so it must be cheap and must never stop a launch: a missing git,
a directory that is not a repository or a slow DNS lookup each become a recorded reason, not
an exception. Distributions come from importlib.metadata rather than a pip subprocess, which
takes seconds on a loaded login node.
"""
from __future__ import annotations

import fnmatch
import getpass
import hashlib
import importlib.metadata
import os
import platform
import posixpath
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

GIT_TIMEOUT_S = 10
FQDN_TIMEOUT_S = 2.0
MAX_UNTRACKED_LISTED = 200   # in the dict; git.diff lists them all
# Changed tracked files whose content stays out of git.diff (only their names and sha256 are
# recorded): shell-style patterns matched, ignoring case, against the file name and against the
# path from the repository root. A sweep replaces the list with [provenance] secret_patterns.
DEFAULT_SECRET_PATTERNS = (".env*", "*.pem", "*.key", "id_*", "*secret*", ".netrc")
FILE_MODE = 0o600            # provenance can hold code and paths that are not for everyone
DIR_MODE = 0o700


class _GitFailed(Exception):
    pass


def _git(workdir: Path, *args: str) -> str:
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"}
    try:
        proc = subprocess.run(["git", "-C", str(workdir), *args], capture_output=True,
                              timeout=GIT_TIMEOUT_S, env=env, stdin=subprocess.DEVNULL)
    except FileNotFoundError as e:
        raise _GitFailed("git is not installed (not on PATH)") from e
    except subprocess.TimeoutExpired as e:
        raise _GitFailed(f"`git {' '.join(args)}` took longer than {GIT_TIMEOUT_S} s") from e
    except OSError as e:
        raise _GitFailed(f"could not run git: {e}") from e
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise _GitFailed(msg[0] if msg else f"`git {args[0]}` exited with {proc.returncode}")
    return proc.stdout.decode(errors="replace")


def _parse_status(out: str) -> tuple[str | None, str | None, bool, list[str]]:
    """(commit, branch, tracked changes?, untracked paths) from `status --porcelain=v2 -z`."""
    commit = branch = None
    dirty = False
    untracked: list[str] = []
    entries = iter(out.split("\0"))
    for entry in entries:
        if entry.startswith("# branch.oid "):
            oid = entry.split(" ", 2)[2]
            commit = None if oid == "(initial)" else oid
        elif entry.startswith("# branch.head "):
            head = entry.split(" ", 2)[2]
            branch = None if head == "(detached)" else head
        elif entry.startswith("? "):
            untracked.append(entry[2:])
        elif entry[:2] in ("1 ", "u "):
            dirty = True
        elif entry.startswith("2 "):
            dirty = True
            next(entries, None)   # a rename's original path is a separate NUL-terminated field
    return commit, branch, dirty, untracked


def is_secret(path: str, patterns: Sequence[str]) -> str | None:
    """The first pattern that `path` (from the repository root) or its file name matches,
    ignoring case (`Secrets.yaml` is as secret as `secrets.yaml`), or None."""
    path = path.lower()
    name = posixpath.basename(path)
    for pattern in patterns:
        if fnmatch.fnmatchcase(name, pattern.lower()) or fnmatch.fnmatchcase(path, pattern.lower()):
            return pattern
    return None


def _sha256_file(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None   # deleted in the work tree, or not readable


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` readable by its owner only, whatever mode the file had before."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), FILE_MODE)
        f.write(text)


def _redact_url(url: str) -> str:
    # https://user:token@host/... would put a credential into every experiment's record.
    return re.sub(r"^(\w[\w+.-]*://)[^/@]*@", r"\1", url.strip())


def _outside(untracked: list[str], toplevel: str, folders: Sequence[Path]) -> tuple[list[str], int]:
    """`untracked` (paths from the repository root) less those in one of `folders`, and how many
    were left out."""
    if not folders:
        return untracked, 0
    root = Path(toplevel).resolve()
    prefixes = []
    for folder in folders:
        try:
            rel = Path(folder).resolve().relative_to(root).as_posix()
        except ValueError:
            continue   # outside the repository: none of its untracked files are in there
        if rel != ".":   # output_dir = the repository itself: leave the user's files listed
            prefixes.append(rel.rstrip("/") + "/")
    kept = [p for p in untracked if not any(p.startswith(pre) for pre in prefixes)]
    return kept, len(untracked) - len(kept)


def collect_git(workdir: Path, out_dir: Path,
                secret_patterns: Sequence[str] = DEFAULT_SECRET_PATTERNS,
                exclude: Sequence[Path] = ()) -> dict[str, Any] | None:
    """Git state of `workdir`; raises _GitFailed, which collect() turns into git: null.

    Changed tracked files that match `secret_patterns` are left out of git.diff; their names
    and sha256 are in `secrets_omitted` and in the diff's preamble. Untracked files in one of
    the `exclude` folders (the sweep's output_dir: slurmexp's own run folders, hundreds of them
    in a repository without a .gitignore for it) are neither listed nor counted in n_untracked;
    `n_untracked_excluded` says how many were left out.
    """
    workdir = Path(workdir)
    toplevel = _git(workdir, "rev-parse", "--show-toplevel").strip()
    commit, branch, dirty, untracked = _parse_status(
        _git(workdir, "status", "--porcelain=v2", "--branch", "--untracked-files=all", "-z"))
    untracked, n_excluded = _outside(untracked, toplevel, exclude)
    info: dict[str, Any] = {
        "root": toplevel, "commit": commit, "branch": branch, "dirty": dirty,
        "untracked": untracked[:MAX_UNTRACKED_LISTED], "n_untracked": len(untracked),
        "n_untracked_excluded": n_excluded,
        "remote": None, "diff_path": None, "diff_sha256": None, "secrets_omitted": [],
    }
    try:
        info["remote"] = _redact_url(_git(workdir, "config", "--get", "remote.origin.url")) or None
    except _GitFailed:
        pass   # no origin: a local-only repository
    diff_file = Path(out_dir) / "git.diff"
    diff = ""
    if dirty:
        try:
            # Against HEAD covers staged and unstaged alike. With no commit yet there is no
            # HEAD: the staged part plus the unstaged part on top of it.
            # --no-renames: a secret renamed to a harmless name is still seen under its old one.
            opts = ("--no-color", "--no-ext-diff", "--no-renames")
            against = [("HEAD",)] if commit else [("--cached",), ()]
            names = {n for a in against for n in _git(workdir, "diff", *a, *opts, "--name-only", "-z",
                                                      "--", ":/").split("\0") if n}
            for path in sorted(names):
                pattern = is_secret(path, secret_patterns)
                if pattern is not None:
                    info["secrets_omitted"].append({"path": path, "pattern": pattern,
                                                    "sha256": _sha256_file(Path(toplevel) / path)})
            spec = [":/", *(f":(top,literal,exclude){s['path']}" for s in info["secrets_omitted"])]
            diff = "".join(_git(workdir, "diff", *a, *opts, "--", *spec) for a in against)
        except _GitFailed as e:
            info["diff_error"] = str(e)
    if diff or untracked or info["secrets_omitted"]:
        # Untracked and omitted files are listed as a preamble, which `git apply` skips.
        head = "".join(f"# untracked: {p}\n" for p in untracked)
        head += "".join(f"# omitted (matches secret pattern {s['pattern']!r}; content not recorded): "
                        f"{s['path']} sha256 {s['sha256'] or '(deleted)'}\n"
                        for s in info["secrets_omitted"])
        text = (f"# slurmexp: uncommitted changes against {commit or '(no commit)'} "
                f"in {toplevel}\n{head}{diff}")
        write_private(diff_file, text)
        info["diff_path"] = str(diff_file)
        info["diff_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    elif diff_file.exists():
        diff_file.unlink()   # stale, from an earlier collect into the same directory
    return info


def distributions() -> list[str]:
    """Sorted name==version of importable distributions; the first on sys.path wins.

    Read from the metadata folders' names (`name-version.dist-info`, as wheels install them)
    rather than by parsing each METADATA file: a launch in an environment of 350 packages spent
    0.6 s in the email parser for this list. Only folders whose name does not carry both (old
    `name.egg-info` of a develop install) have their metadata read."""
    seen: dict[str, str] = {}
    for entry in sys.path:
        try:
            names = sorted(os.listdir(entry or "."))
        except OSError:
            continue
        for folder in names:
            if not folder.endswith((".dist-info", ".egg-info")):
                continue
            stem = folder.rsplit(".", 1)[0]
            parts = stem.split("-")
            if folder.endswith(".dist-info") and len(parts) == 2 and all(parts):
                name, version = parts[0].replace("_", "-"), parts[1]
            else:
                md = importlib.metadata.PathDistribution(Path(entry or ".", folder)).metadata
                name, version = (md["Name"], md["Version"]) if md else (None, None)
                if not name or not version:
                    continue
            key = re.sub(r"[-_.]+", "-", name).lower()
            seen.setdefault(key, f"{name}=={version}")
    return sorted(seen.values(), key=str.lower)


def _fqdn() -> str:
    # getfqdn() does a reverse DNS lookup that can hang for many seconds on a cluster with
    # broken DNS; fall back to the plain host name instead of stalling the launch.
    result = [socket.gethostname()]
    t = threading.Thread(target=lambda: result.__setitem__(0, socket.getfqdn()), daemon=True)
    t.start()
    t.join(FQDN_TIMEOUT_S)
    return result[0]


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:   # no passwd entry and no USER/LOGNAME, as in some containers
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


def slurmexp_version() -> str:
    try:
        return importlib.metadata.version("slurmexp")
    except importlib.metadata.PackageNotFoundError:
        from slurmexp import __version__
        return __version__


def collect(workdir: Path, out_dir: Path,
            secret_patterns: Sequence[str] = DEFAULT_SECRET_PATTERNS,
            exclude: Sequence[Path] = ()) -> dict[str, Any]:
    """Everything above as a JSON-ready dict; writes git.diff and environment.txt to out_dir
    (a folder only its owner can enter, files only its owner can read). Untracked files in the
    `exclude` folders are left out of the git state (collect_git)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    os.chmod(out_dir, DIR_MODE)
    git_reason = None
    try:
        git = collect_git(Path(workdir), out_dir, secret_patterns, exclude)
    except _GitFailed as e:
        git, git_reason = None, str(e)
        stale = out_dir / "git.diff"
        if stale.exists():
            stale.unlink()

    env_lines = distributions()
    env_text = "".join(f"{line}\n" for line in env_lines)
    env_file = out_dir / "environment.txt"
    write_private(env_file, env_text)

    return {
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git": git,
        "git_reason": git_reason,
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
            "prefix": sys.prefix,
            "virtual_env": os.environ.get("VIRTUAL_ENV"),
            "conda_env": os.environ.get("CONDA_DEFAULT_ENV"),
        },
        "environment": {
            "path": str(env_file),
            "sha256": hashlib.sha256(env_text.encode()).hexdigest(),
            "n_distributions": len(env_lines),
        },
        "host": _fqdn(),
        "platform": platform.platform(),
        "user": _user(),
        "slurmexp_version": slurmexp_version(),
        "cwd": os.getcwd(),
        "argv": list(sys.argv),
    }
