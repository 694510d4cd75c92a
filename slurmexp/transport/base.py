"""What a transport does: run one command, and read, write and list files, on one machine.

The machine may be this one (`LocalTransport`) or a login node reached over SSH (a later
transport), so the interface only uses what both can do:

- a command is an argv list, never a shell string: nothing is re-parsed by a shell on either
  side, and arguments with spaces or quotes arrive as they were given;
- `env` adds variables to the command's environment (a remote shell's environment cannot be
  replaced wholesale), `cwd` and every file path are strings or `PurePosixPath`s on the machine
  the transport reaches, and a relative one is taken under the transport's `root`;
- a command that does not finish in time or cannot be started raises (`CommandTimeout`,
  `CommandNotFound`); one that ran and failed does not: its exit status is in the result, and
  what it means (a refusal, a daemon that did not answer) is for the caller to say.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Protocol, Union, runtime_checkable

from slurmexp.errors import SlurmexpError

# A path on the transport's machine: a string or a PurePath (PurePosixPath for a remote one).
RemotePath = Union[str, PurePath]


class TransportError(SlurmexpError):
    """The transport could not do what was asked (as opposed to a command that ran and failed)."""


class CommandNotFound(TransportError):
    """The executable does not exist (or may not be executed) on the transport's machine."""

    def __init__(self, message: str, executable: str):
        super().__init__(message)
        self.executable = executable


class PathNotFound(TransportError):
    """A file or directory asked for does not exist on the transport's machine."""

    def __init__(self, message: str, path: str):
        super().__init__(message)
        self.path = path


class CommandTimeout(TransportError):
    """The command did not finish within its timeout; it was killed."""

    def __init__(self, message: str, executable: str, timeout: float):
        super().__init__(message)
        self.executable = executable
        self.timeout = timeout


@dataclass(frozen=True)
class CommandResult:
    """A command that ran to its end: its exit status and everything it printed (as text)."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float = 0.0
    # The stderr line that made the transport stop the command (see `Transport.run`'s
    # `stop_on`); None when it ran to its end.
    stopped_on: str | None = None

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@runtime_checkable
class Transport(Protocol):
    """Runs commands and handles files on one machine, under one root directory."""

    name: str            # "local", or e.g. "ssh:login.cluster.org" (for messages)

    @property
    def root(self) -> PurePath:
        """Where relative paths (and a command's default cwd) are on the transport's machine."""
        ...

    def run(self, argv: Sequence[str], *, timeout: float, stdin: str | None = None,
            cwd: RemotePath | None = None, env: Mapping[str, str] | None = None,
            stop_on: Sequence[str] = ()) -> CommandResult:
        """Run argv (no shell) and wait for it. `env` is added to the environment; `stdin` is
        sent as its input (else it reads nothing). Raises CommandTimeout, CommandNotFound, or
        TransportError (e.g. `cwd` does not exist); a non-zero exit status is not an error.

        `stop_on`: lower-case phrases; as soon as a line of the command's stderr contains one,
        the command is killed and the result (returncode -9) carries that line in `stopped_on`.
        sbatch's own retry loop is cut short this way (see the Slurm backend's `submit`)."""
        ...

    def read_text(self, path: RemotePath) -> str:
        """The file's text (undecodable bytes replaced). TransportError when it cannot be read."""
        ...

    def write_text(self, path: RemotePath, text: str) -> None:
        """Write the file atomically: a reader sees the old content or the new, never part."""
        ...

    def read_bytes(self, path: RemotePath) -> bytes:
        ...

    def write_bytes(self, path: RemotePath, data: bytes) -> None:
        """As write_text, for bytes."""
        ...

    def listdir(self, path: RemotePath) -> list[str]:
        """The names in a directory, sorted. TransportError when it is not a readable directory."""
        ...

    def exists(self, path: RemotePath) -> bool:
        ...

    def makedirs(self, path: RemotePath) -> None:
        """Create the directory and its parents; an existing directory is fine."""
        ...


class TransportUnreachable(TransportError):
    """The machine could not be reached at all (ssh exit 255, refused, timed out, host key or
    login trouble): nothing ran there, so nothing about the jobs is known. Reconcile treats it
    as Slurm being unavailable: the pass changes nothing and exits 3."""

    exit_code = 3

    def __init__(self, transport: object, reason: str):
        from slurmexp.timeutil import utc_iso

        self.target = getattr(transport, "target", getattr(transport, "name", "?"))
        self.reason = reason
        self.since = utc_iso()
        super().__init__(f"cluster {self.target} unreachable since {self.since}: {reason}")
