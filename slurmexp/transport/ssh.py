"""`SshTransport`: commands and files on a login node, through the OpenSSH client.

Why it is built this way:

- One connection per slurmexp command at most: every ssh call goes through a ControlMaster
  (ControlMaster=auto, ControlPersist) on a short hashed ControlPath (%C) in a private folder,
  so Slurm commands reuse one authenticated connection; a cluster that bans users for opening
  thousands of connections never sees more than one per invocation.
- No prompt ever blocks cron: BatchMode=yes, ConnectTimeout, ServerAliveInterval/CountMax.
  StrictHostKeyChecking is whatever the user's ssh config says; a changed host key or a login
  that needs a password is a `TransportUnreachable` that names the fix.
- Several operations in one round trip (`batch`): a small bash script is sent on stdin and runs
  each operation in turn; every result is framed by a marker unique to the call, with its output
  in base64, so a login banner, motd or noisy shell profile cannot break parsing. The remote
  side needs only bash and coreutils.
- argv reaches the remote shell quoted with shlex: nothing is re-parsed there.
"""
from __future__ import annotations

import base64
import os
import secrets
import shlex
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from slurmexp.transport.base import (
    CommandNotFound,
    CommandResult,
    CommandTimeout,
    PathNotFound,
    RemotePath,
    TransportError,
    TransportUnreachable,
)
from slurmexp.transport.local import _argv

# Exit codes the batch script uses for its own answers (not the command's).
_NOT_FOUND, _NO_CWD, _NO_PATH = 227, 228, 229
# What ssh's own stderr says, and the fix to print for it.
_FIXES = (
    ("REMOTE HOST IDENTIFICATION HAS CHANGED",
     "the host key changed: if the cluster's key really was replaced, remove the old one with "
     "`ssh-keygen -R HOST` and connect once by hand to accept the new one"),
    ("Host key verification failed",
     "the host key is not known: connect once by hand (`ssh HOST`) to accept it, or add it to "
     "known_hosts"),
    ("Permission denied",
     "the login needs a password or a key ssh cannot use without a prompt: set up key login "
     "(ssh-copy-id) and load the key in ssh-agent, or name it with identity_file"),
    ("Could not resolve hostname", "check [remote] host in site.toml (or your ~/.ssh/config)"),
    ("Connection refused", "sshd does not listen there: check host and port"),
    ("timed out", "the cluster did not answer in time: check the network (VPN?), host and port"),
)

_RUNNER = r'''
__sx_out=$(mktemp) && __sx_err=$(mktemp) || exit 97
trap 'rm -f "$__sx_out" "$__sx_err"' EXIT
__sx_frame() { # index rc
    printf '\n%s BEGIN %s %s\n' "$__SXM" "$1" "$2"
    [ ! -s "$__sx_out" ] || base64 <"$__sx_out"
    printf '%s STDERR\n' "$__SXM"
    [ ! -s "$__sx_err" ] || base64 <"$__sx_err"
    printf '%s END\n' "$__SXM"
}
'''


# What ssh runs on the cluster: the batch's script arrives on stdin ($1 bytes) and runs only
# whole (a connection cut mid-transfer must never run a truncated script: exit 96). The start
# line on stderr ($2) parts the login's noise (profile, motd) from what ssh says after the
# command began: a cut then reads as a cut, not as the profile's last line.
REMOTE_WRAPPER = ('echo "$2" >&2; f=$(mktemp) || exit 97; head -c "$1" >"$f"; '
                  'if [ "$(wc -c <"$f")" -ne "$1" ]; then rm -f "$f"; exit 96; fi; '
                  'bash "$f" </dev/null; rc=$?; rm -f "$f"; exit $rc')


def remote_command(n_bytes: int, marker: str) -> str:
    """The command line ssh hands the login's shell. That shell has read the user's rc files
    (sshd starts it so, whatever we ask); `--norc` keeps the bash it starts from reading
    ~/.bashrc a second time (bash reads it when it thinks sshd started it), so a profile that
    loads modules runs once per round trip, not twice. PATH and the rest of the environment
    are the login shell's."""
    return shlex.join(["bash", "--norc", "-c", REMOTE_WRAPPER, "sx", str(n_bytes), f"{marker}-started"])


@dataclass
class Op:
    """One operation of a batch: a command (`argv`) or a shell snippet for a file operation."""

    kind: str                              # run, read, write, list, exists, mkdirs, read_many, ages
    argv: tuple[str, ...] = ()
    path: str = ""
    data: bytes = b""
    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    stdin: str | None = None
    timeout: float = 60.0


class SshTransport:
    """Commands and files of one login node reached with `ssh [user@]host`, under `root` there."""

    def __init__(self, host: str, *, user: str | None = None, port: int | None = None,
                 identity_file: str | None = None, ssh_options: Sequence[str] = (),
                 root: str | PurePosixPath = ".", connect_timeout: float = 15,
                 control_persist: int = 60, control_dir: str | None = None):
        self.host = host
        self.user = user
        self.port = port
        self.identity_file = os.path.expanduser(identity_file) if identity_file else None
        self.ssh_options = list(ssh_options)
        self._root = PurePosixPath(root)
        self.connect_timeout = connect_timeout
        self.control_persist = control_persist
        self._control_dir = control_dir
        self.round_trips = 0             # ssh invocations made (tests count them)
        self.name = f"ssh:{self.target}"

    def __repr__(self) -> str:
        return f"SshTransport({self.target!r}, port={self.port!r}, root={str(self._root)!r})"

    @property
    def target(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    @property
    def root(self) -> PurePosixPath:
        return self._root

    def path(self, path: RemotePath) -> PurePosixPath:
        p = PurePosixPath(os.fspath(path))
        return p if p.is_absolute() else self._root / p

    # --- the ssh command ----------------------------------------------------------------
    def control_dir(self) -> str:
        """A private folder for the ControlMaster socket: short (sockets are limited to ~104
        bytes), per user, mode 700."""
        if self._control_dir is not None and len(self._control_dir) > 50:
            # %C is 40 characters and ssh adds a random suffix while binding: a long folder
            # overflows the ~104 bytes of a socket path.
            raise TransportError(f"ssh ControlPath folder {self._control_dir} is too long for a "
                                 f"socket path: use a folder of at most 50 characters")
        if self._control_dir is None:
            d = os.path.join(tempfile.gettempdir(), f"sx-ssh-{os.getuid()}")
            os.makedirs(d, mode=0o700, exist_ok=True)
            if os.stat(d).st_uid != os.getuid():
                raise TransportError(f"{d} belongs to another user: its ssh sockets are not "
                                     f"private; remove it or set TMPDIR")
            os.chmod(d, 0o700)
            self._control_dir = d
        return self._control_dir

    def ssh_argv(self) -> list[str]:
        argv = ["ssh", "-T",
                "-o", "BatchMode=yes",
                "-o", f"ConnectTimeout={int(self.connect_timeout)}",
                "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3",
                "-o", "ControlMaster=auto",
                "-o", f"ControlPath={self.control_dir()}/%C",
                "-o", f"ControlPersist={int(self.control_persist)}"]
        if self.port:
            argv += ["-p", str(self.port)]
        if self.identity_file:
            argv += ["-i", self.identity_file, "-o", "IdentitiesOnly=yes"]
        for opt in self.ssh_options:
            argv += ["-o", opt]
        return [*argv, self.target]

    def close(self) -> None:
        """End the ControlMaster (it would otherwise linger for ControlPersist seconds)."""
        subprocess.run([*self.ssh_argv()[:-1], "-O", "exit", self.target], capture_output=True,
                       timeout=10, check=False)

    # --- one round trip -----------------------------------------------------------------
    def batch(self, ops: Sequence[Op]) -> list[CommandResult]:
        """Run every operation in one ssh round trip, in order; one result per operation
        (a file operation's answer is its exit status and output, as `run` returns them)."""
        if not ops:
            return []
        marker = f"SXM{secrets.token_hex(12)}"
        script = [f"__SXM={marker}", _RUNNER]
        for i, op in enumerate(ops):
            script.append(self._snippet(i, op))
        body = "\n".join(script).encode()
        remote = remote_command(len(body), marker)
        budget = sum(op.timeout for op in ops) + self.connect_timeout + 30
        self.round_trips += 1
        try:
            proc = subprocess.run([*self.ssh_argv(), remote], input=body, capture_output=True,
                                  timeout=budget, check=False, start_new_session=True)
        except subprocess.TimeoutExpired:
            raise TransportUnreachable(self, f"no answer within {budget:g}s") from None
        except FileNotFoundError:
            raise TransportError("ssh: the OpenSSH client is not installed on this machine "
                                 "(apt-get install openssh-client)") from None
        results = _parse(proc.stdout, marker, ops)
        if len(results) < len(ops):
            err = proc.stderr.decode(errors="replace")
            login, started, after = err.partition(f"{marker}-started\n")
            if not started:
                raise TransportUnreachable(self, _reason(login, proc.returncode))
            said = _reason(after, proc.returncode, cut=True)
            if not results:
                raise TransportUnreachable(self, said)
            raise TransportUnreachable(self, f"the connection ended after {len(results)} of "
                                             f"{len(ops)} operations: {said}")
        return results

    def _snippet(self, i: int, op: Op) -> str:
        q = shlex.quote
        if op.kind == "run":
            env = " ".join(q(f"{k}={v}") for k, v in op.env.items())
            cwd = q(str(self.path(op.cwd))) if op.cwd is not None else q(str(self._root))
            stdin = "</dev/null"
            pre = ""
            if op.stdin is not None:
                data = base64.b64encode(op.stdin.encode()).decode()
                pre = f"__sx_in=$(mktemp); base64 -d >\"$__sx_in\" <<'SXDATA'\n{data}\nSXDATA\n"
                stdin = '<"$__sx_in"'
            exe = q(op.argv[0])
            body = (f"{pre}if ! cd {cwd} 2>/dev/null; then rc={_NO_CWD}; "
                    f"elif ! command -v {exe} >/dev/null 2>&1; then rc={_NOT_FOUND}; "
                    f"else env {env} timeout -k 5 {op.timeout:g} {shlex.join(op.argv)} "
                    f">\"$__sx_out\" 2>\"$__sx_err\" {stdin}; rc=$?; fi; cd /")
        else:
            p = q(str(self.path(op.path)))
            body = _file_snippet(op, p)
        return f': >"$__sx_out"; : >"$__sx_err"\n{body}\n__sx_frame {i} "$rc"'

    # --- the Transport interface --------------------------------------------------------
    def run(self, argv: Sequence[str], *, timeout: float, stdin: str | None = None,
            cwd: RemotePath | None = None, env: Mapping[str, str] | None = None,
            stop_on: Sequence[str] = ()) -> CommandResult:
        # `stop_on` is accepted but not applied: the remote command's stderr comes back only
        # when it ends, so over SSH it runs to its end or its timeout.
        args = tuple(_argv(argv))
        started = time.monotonic()
        res = self.batch([Op("run", argv=args, cwd=None if cwd is None else str(cwd),
                             env=dict(env or {}), stdin=stdin, timeout=timeout)])[0]
        return self.check_run(res, timeout, time.monotonic() - started)

    def check_run(self, res: CommandResult, timeout: float, seconds: float = 0.0) -> CommandResult:
        """A run op's result as `run` returns it: raises what LocalTransport would raise."""
        exe = os.path.basename(res.argv[0])
        if res.returncode == _NOT_FOUND:
            raise CommandNotFound(f"{exe}: command not found on {self.target} (not on PATH)", exe)
        if res.returncode == _NO_CWD:
            raise TransportError(f"{exe}: working directory does not exist on {self.target}")
        if res.returncode in (124, 137):
            raise CommandTimeout(f"{exe} did not finish within {timeout:g}s on {self.target} "
                                 f"and was killed", exe, timeout)
        return CommandResult(res.argv, res.returncode, res.stdout, res.stderr, seconds)

    def _file(self, op: Op) -> CommandResult:
        res = self.batch([op])[0]
        return self.check_file(op, res)

    def check_file(self, op: Op, res: CommandResult) -> CommandResult:
        p = str(self.path(op.path))
        if res.returncode == _NO_PATH:
            raise PathNotFound(f"{self.target}:{p} does not exist", p)
        if op.kind != "exists" and res.returncode != 0:
            raise TransportError(f"cannot {op.kind} {self.target}:{p}: "
                                 f"{res.stderr.strip() or f'exit {res.returncode}'}")
        return res

    def read_bytes(self, path: RemotePath) -> bytes:
        op = Op("read", path=os.fspath(path))
        return self._file(op).stdout.encode("latin-1")

    def read_text(self, path: RemotePath) -> str:
        return self.read_bytes(path).decode("utf-8", errors="replace")

    def write_bytes(self, path: RemotePath, data: bytes) -> None:
        self._file(Op("write", path=os.fspath(path), data=bytes(data)))

    def write_text(self, path: RemotePath, text: str) -> None:
        self.write_bytes(path, text.encode("utf-8"))

    def listdir(self, path: RemotePath) -> list[str]:
        out = self._file(Op("list", path=os.fspath(path))).stdout.encode("latin-1")
        return sorted(n.decode("utf-8", errors="replace") for n in out.split(b"\0") if n)

    def exists(self, path: RemotePath) -> bool:
        return self._file(Op("exists", path=os.fspath(path))).returncode == 0

    def makedirs(self, path: RemotePath) -> None:
        self._file(Op("mkdirs", path=os.fspath(path)))

    @staticmethod
    def read_many_op(base: str, paths: Sequence[str]) -> Op:
        """One op reading many files under `base` (paths relative to it, no newlines)."""
        return path_list_op("read_many", base, paths)

    @staticmethod
    def read_many_result(res: CommandResult, paths: Sequence[str]) -> dict[str, bytes | None]:
        """The files a read_many op found (None: absent or unreadable)."""
        import io
        import tarfile

        found: dict[str, bytes | None] = dict.fromkeys(paths)
        if res.returncode != 0 or not res.stdout:
            return found
        with tarfile.open(fileobj=io.BytesIO(res.stdout.encode("latin-1")), mode="r:") as tar:
            for member in tar:
                if member.isfile() and member.name in found:
                    f = tar.extractfile(member)
                    found[member.name] = f.read() if f is not None else None
        return found

    def whoami(self) -> str:
        """The login's user name on the cluster (Slurm's -u), not this machine's $USER."""
        return self.run(["id", "-un"], timeout=30).stdout.strip()


def path_list_op(kind: str, base: str, paths: Sequence[str]) -> Op:
    """An op over many files under `base`, listed one per line in its data (read_many, ages)."""
    bad = [p for p in paths if "\n" in p or p.startswith("/")]
    if bad:
        raise ValueError(f"{kind} takes relative paths without newlines: {bad[:3]}")
    return Op(kind, path=base, data="\n".join(paths).encode())


def _file_snippet(op: Op, p: str) -> str:
    """The shell lines of a file operation on the quoted path `p` (only the one asked for is
    built: a write's data is bytes, a read_many's a path list)."""
    return {
        "read": lambda: f"if [ -f {p} ]; then cat -- {p} >\"$__sx_out\" 2>\"$__sx_err\"; rc=$?; "
                f"else rc={_NO_PATH}; fi",
        "list": lambda: f"if [ -d {p} ]; then find {p} -mindepth 1 -maxdepth 1 -printf '%f\\0' "
                f">\"$__sx_out\" 2>\"$__sx_err\"; rc=$?; else rc={_NO_PATH}; fi",
        "exists": lambda: f"if [ -e {p} ]; then rc=0; else rc=1; fi",
        "mkdirs": lambda: f"mkdir -p -- {p} >\"$__sx_out\" 2>\"$__sx_err\"; rc=$?",
        "write": lambda: _write_snippet(p, op.data),
        # Many small files as one tar stream: two processes, not a few per file.
        # (--warning=no-failed-read: each absent file's warning cost tar 4 us, of 6.)
        "read_many": lambda: (f"if [ -d {p} ]; then tar -C {p} -cf - --ignore-failed-read "
                      f"--warning=no-failed-read --verbatim-files-from -T - >\"$__sx_out\" "
                      f"2>/dev/null <<'SXLIST'\n"
                      f"{op.data.decode()}\nSXLIST\nrc=0; else rc={_NO_PATH}; fi"),
        # The cluster's clock, then "<mtime> <path>" of each listed file that exists.
        "ages": lambda: (f"if [ -d {p} ]; then (date +%s; cd {p} && tr '\\n' '\\0' <<'SXLIST' | "
                         f"xargs -0 -r stat -c '%Y %n' -- 2>/dev/null\n{op.data.decode()}\nSXLIST\n"
                         f") >\"$__sx_out\"; rc=0; else rc={_NO_PATH}; fi"),
    }[op.kind]()


def _write_snippet(p: str, data: bytes) -> str:
    """Write beside the file, then rename over it (readers see old or new, never half); an
    existing file keeps its mode, a new one gets the umask's."""
    b64 = base64.b64encode(data).decode()
    b64 = "\n".join(b64[i:i + 76] for i in range(0, len(b64), 76))
    return (f"__sx_d=$(dirname -- {p}); if [ ! -d \"$__sx_d\" ]; then rc={_NO_PATH}; else "
            f"__sx_t=$(mktemp \"$__sx_d/.sx.XXXXXX.tmp\") && base64 -d >\"$__sx_t\" <<'SXDATA' "
            f"2>\"$__sx_err\"\n{b64}\nSXDATA\n"
            f"rc=$?; if [ $rc = 0 ]; then if [ -e {p} ]; then chmod --reference={p} \"$__sx_t\"; "
            f"else chmod \"$(printf %o $((0666 & ~$(umask))))\" \"$__sx_t\"; fi; "
            f"sync -- \"$__sx_t\" 2>/dev/null; mv -f -- \"$__sx_t\" {p} 2>\"$__sx_err\"; rc=$?; "
            f"else rm -f -- \"$__sx_t\"; fi; fi")


def _parse(stdout: bytes, marker: str, ops: Sequence[Op]) -> list[CommandResult]:
    """The framed results, in order. Text outside the frames (banners, profiles) is ignored;
    output is base64 inside the frames, so nothing a command prints can look like a marker."""
    m = marker.encode()
    results: list[CommandResult] = []
    lines = stdout.split(b"\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.startswith(m + b" BEGIN "):
            i += 1
            continue
        _, _, idx, rc = line.decode().split(" ")
        out: list[bytes] = []
        err: list[bytes] = []
        target = out
        i += 1
        ended = False
        while i < len(lines):
            if lines[i] == m + b" STDERR":
                target = err
            elif lines[i] == m + b" END":
                ended = True
                break
            else:
                target.append(lines[i])
            i += 1
        if not ended:
            break
        op = ops[int(idx)]
        argv = op.argv or (op.kind, op.path)
        o = base64.b64decode(b"".join(out))
        e = base64.b64decode(b"".join(err))
        # Commands' output is text; a file's bytes travel as latin-1 (a lossless byte<->str map).
        text = o.decode("latin-1") if op.kind in ("read", "list", "read_many") else o.decode(errors="replace")
        results.append(CommandResult(tuple(argv), int(rc), text, e.decode(errors="replace")))
        i += 1
    return results


def _reason(stderr: str, returncode: int, cut: bool = False) -> str:
    """ssh's own reason (its last line), with the fix when it is one slurmexp knows. `cut`:
    the command had started on the cluster (its stderr is only ssh's from then on)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.startswith("@@@")]
    if lines:
        said = lines[-1]
    elif cut:
        said = f"the connection was cut while the commands ran (ssh exited {returncode})"
    else:
        said = f"ssh exited {returncode} without a message"
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr:
        said = "REMOTE HOST IDENTIFICATION HAS CHANGED (host key mismatch)"
    for needle, fix in _FIXES:
        if needle in stderr:
            return f"{said}; {fix}"
    return said
