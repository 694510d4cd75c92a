"""`LocalTransport`: commands and files on this machine. It holds the one `subprocess` call that
Slurm commands go through.

A command runs in its own process group, without a shell and with stdin closed unless input is
given; on a timeout (or Ctrl-C) the whole group is killed, so a site's wrapper script around
sbatch does not leave the real sbatch running behind it.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath

from slurmexp.transport.base import (
    CommandNotFound,
    CommandResult,
    CommandTimeout,
    PathNotFound,
    RemotePath,
    TransportError,
)


def _argv(argv: Sequence[str]) -> list[str]:
    if isinstance(argv, (str, bytes)):
        raise TypeError(f"a command is an argv list, not a string: {argv!r}")
    out = [os.fspath(a) if isinstance(a, PurePath) else a for a in argv]
    if not out or not all(isinstance(a, str) for a in out):
        raise TypeError(f"a command is a non-empty list of strings: {argv!r}")
    return out


def _umask() -> int:
    """The process umask, read without changing it (os.umask would, for every thread)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    return 0o022


class LocalTransport:
    """Commands and files of this machine. Relative paths and a command's default working
    directory are under `root` (default: the current directory at the time of each call)."""

    name = "local"

    def __init__(self, root: str | os.PathLike | None = None):
        self._root = Path(root).absolute() if root is not None else None

    def __repr__(self) -> str:
        return f"LocalTransport(root={str(self._root) if self._root else None!r})"

    @property
    def root(self) -> Path:
        return self._root if self._root is not None else Path.cwd()

    def path(self, path: RemotePath) -> Path:
        """`path` on this machine: a relative one is taken under `root`."""
        p = Path(os.fspath(path))
        return p if p.is_absolute() or self._root is None else self._root / p

    # --- commands -----------------------------------------------------------------------
    def run(self, argv: Sequence[str], *, timeout: float, stdin: str | None = None,
            cwd: RemotePath | None = None, env: Mapping[str, str] | None = None,
            stop_on: Sequence[str] = ()) -> CommandResult:
        args = _argv(argv)
        started = time.monotonic()
        proc = self._spawn(args, stdin is not None, cwd, env)
        if stop_on:
            return _watch(proc, args, stdin, timeout, tuple(p.lower() for p in stop_on), started)
        return _communicate(proc, args, stdin, timeout, started)

    def start(self, argv: Sequence[str], *, timeout: float, cwd: RemotePath | None = None,
              env: Mapping[str, str] | None = None) -> Started:
        """`run` (no input), started now and waited for by `Started.wait()`, so that a caller
        can have two commands running at once (a reconcile pass's sacct and squeue). What `run`
        would raise, `wait` raises."""
        return Started(self, argv, timeout, cwd, env)

    def _spawn(self, args: list[str], has_stdin: bool, cwd: RemotePath | None,
               env: Mapping[str, str] | None) -> subprocess.Popen:
        exe = os.path.basename(args[0])
        workdir = self.path(cwd) if cwd is not None else self._root
        if workdir is not None and not workdir.is_dir():
            raise TransportError(f"{exe}: working directory {workdir} does not exist")
        full_env = {**os.environ, **{str(k): str(v) for k, v in env.items()}} if env else None
        try:
            return subprocess.Popen(
                args, stdin=subprocess.PIPE if has_stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                env=full_env, cwd=workdir, start_new_session=True)
        except (FileNotFoundError, NotADirectoryError):
            raise CommandNotFound(f"{exe}: command not found on this machine (not on PATH)",
                                  exe) from None
        except PermissionError:
            raise CommandNotFound(f"{exe}: not executable here (permission denied)", exe) from None
        except OSError as exc:
            raise TransportError(f"{exe}: could not be started: {exc.strerror or exc}") from exc

    # --- files --------------------------------------------------------------------------
    def read_bytes(self, path: RemotePath) -> bytes:
        p = self.path(path)
        try:
            return p.read_bytes()
        except FileNotFoundError:
            raise PathNotFound(f"{p} does not exist", str(p)) from None
        except OSError as exc:
            raise TransportError(f"cannot read {p}: {exc.strerror or exc}") from exc

    def read_text(self, path: RemotePath) -> str:
        return self.read_bytes(path).decode("utf-8", errors="replace")

    def write_bytes(self, path: RemotePath, data: bytes) -> None:
        """Write beside the file, fsync, then rename over it: readers never see half a file.
        A new file gets the permissions the umask allows; an existing one keeps its own."""
        p = self.path(path)
        try:
            mode = p.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o666 & ~_umask()
        except OSError as exc:
            raise TransportError(f"cannot write {p}: {exc.strerror or exc}") from exc
        try:
            fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
        except FileNotFoundError:
            raise PathNotFound(f"cannot write {p}: {p.parent} does not exist", str(p.parent)) from None
        except OSError as exc:
            raise TransportError(f"cannot write {p}: {exc.strerror or exc}") from exc
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, p)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(exc, OSError):
                raise TransportError(f"cannot write {p}: {exc.strerror or exc}") from exc
            raise

    def write_text(self, path: RemotePath, text: str) -> None:
        self.write_bytes(path, text.encode("utf-8"))

    def listdir(self, path: RemotePath) -> list[str]:
        p = self.path(path)
        try:
            return sorted(os.listdir(p))
        except FileNotFoundError:
            raise PathNotFound(f"{p} does not exist", str(p)) from None
        except OSError as exc:
            raise TransportError(f"cannot list {p}: {exc.strerror or exc}") from exc

    def exists(self, path: RemotePath) -> bool:
        return self.path(path).exists()

    def makedirs(self, path: RemotePath) -> None:
        p = self.path(path)
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TransportError(f"cannot create {p}: {exc.strerror or exc}") from exc


class Started:
    """A command `LocalTransport.start` started: its output is read by a thread of its own
    (neither pipe can fill up while the caller waits for another command)."""

    def __init__(self, transport: LocalTransport, argv: Sequence[str], timeout: float,
                 cwd: RemotePath | None, env: Mapping[str, str] | None):
        self.argv = _argv(argv)
        self._started = time.monotonic()
        self._proc: subprocess.Popen | None = None
        self._result: CommandResult | None = None
        self._error: BaseException | None = None
        try:
            self._proc = transport._spawn(self.argv, False, cwd, env)
        except BaseException as exc:   # raised by wait(), as run() would have raised it
            self._error = exc
            self._reader = None
            return
        self._reader = threading.Thread(target=self._read, args=(timeout,), daemon=True)
        self._reader.start()

    def _read(self, timeout: float) -> None:
        try:
            self._result = _communicate(self._proc, self.argv, None, timeout, self._started)
        except BaseException as exc:  # noqa: BLE001 - handed to wait()
            self._error = exc

    def wait(self) -> CommandResult:
        if self._reader is not None:
            self._reader.join()
        if self._error is not None:
            raise self._error
        return self._result

    def kill(self) -> None:
        """Stop it (its whole process group) and wait for its reader: its answer is not wanted."""
        if self._proc is not None and self._reader is not None and self._reader.is_alive():
            _kill_group(self._proc)
        if self._reader is not None:
            self._reader.join()


def _communicate(proc: subprocess.Popen, args: list[str], stdin: str | None, timeout: float,
                 started: float) -> CommandResult:
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise _timed_out(proc, args, timeout) from None
    except BaseException:
        _kill_group(proc)
        raise
    return CommandResult(tuple(args), proc.returncode, out or "", err or "",
                         time.monotonic() - started)


def _watch(proc: subprocess.Popen, args: list[str], stdin: str | None, timeout: float,
           stop_on: tuple[str, ...], started: float) -> CommandResult:
    """`run` reading stderr line by line: the group is killed the moment a line contains one of
    `stop_on` (or at the timeout). stdout is read by a thread of its own, so neither pipe can
    fill up and block the command."""
    out: list[str] = []
    err: list[str] = []
    hit: list[str] = []
    done = threading.Event()

    def read_out() -> None:
        with contextlib.suppress(Exception):
            out.append(proc.stdout.read())

    def read_err() -> None:
        with contextlib.suppress(Exception):
            for line in proc.stderr:
                err.append(line)
                if any(p in line.lower() for p in stop_on):
                    hit.append(line.strip())
                    break
        done.set()

    readers = [threading.Thread(target=read_out, daemon=True),
               threading.Thread(target=read_err, daemon=True)]
    for t in readers:
        t.start()
    try:
        if proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.write(stdin or "")
                proc.stdin.close()
        finished = done.wait(timeout)
        if not hit:
            # stderr closed: the command is ending; wait for it within what is left of the time.
            proc.wait(max(timeout - (time.monotonic() - started), 0.1) if finished else 0)
        else:
            _kill_group(proc)
    except subprocess.TimeoutExpired:
        raise _timed_out(proc, args, timeout) from None
    except BaseException:
        _kill_group(proc)
        raise
    for t in readers:
        t.join(1)
    return CommandResult(tuple(args), -9 if hit else proc.returncode, "".join(out), "".join(err),
                         time.monotonic() - started, stopped_on=hit[0] if hit else None)


def _timed_out(proc: subprocess.Popen, args: list[str], timeout: float) -> CommandTimeout:
    """Kill a command that ran past its time; the error that says so, to raise."""
    _kill_group(proc)
    exe = os.path.basename(args[0])
    return CommandTimeout(f"{exe} did not finish within {timeout:g}s and was killed", exe, timeout)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the command's process group and reap it (its pipes are closed, not drained: a
    process that left the group could hold them open forever)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.kill()
    with contextlib.suppress(Exception):
        proc.wait(timeout=10)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()
