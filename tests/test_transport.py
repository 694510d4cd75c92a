"""LocalTransport for real: real processes, real files in tmp dirs."""
from __future__ import annotations

import os
import stat
import sys
import time
from pathlib import PurePosixPath

import pytest

from slurmexp.errors import SlurmexpError
from slurmexp.transport import (
    CommandNotFound,
    CommandResult,
    CommandTimeout,
    LocalTransport,
    PathNotFound,
    Transport,
    TransportError,
)


def test_is_a_transport():
    assert isinstance(LocalTransport(), Transport)
    assert issubclass(TransportError, SlurmexpError)


def test_argv_reaches_the_command_unchanged_without_a_shell(tmp_path):
    t = LocalTransport()
    args = ["a b", "$HOME", "'quoted'", "*", "x;y"]
    result = t.run([sys.executable, "-c", "import sys; print(repr(sys.argv[1:]))", *args], timeout=30)
    assert isinstance(result, CommandResult)
    assert result.ok and result.returncode == 0 and result.stderr == ""
    assert result.stdout.strip() == repr(args)
    assert result.argv[0] == sys.executable and result.seconds >= 0


def test_argv_must_be_a_list():
    with pytest.raises(TypeError, match="argv list"):
        LocalTransport().run("echo hi", timeout=5)
    with pytest.raises(TypeError):
        LocalTransport().run([], timeout=5)


def test_exit_status_stdout_stderr_and_stdin():
    t = LocalTransport()
    code = "import sys; data = sys.stdin.read(); print(data.upper()); print('oops', file=sys.stderr); sys.exit(3)"
    result = t.run([sys.executable, "-c", code], timeout=30, stdin="hello\n")
    assert (result.returncode, result.ok) == (3, False)
    assert result.stdout == "HELLO\n\n" and result.stderr == "oops\n"
    # Without stdin the command reads nothing (not the caller's terminal).
    empty = t.run([sys.executable, "-c", "import sys; print(len(sys.stdin.read()))"], timeout=30)
    assert empty.stdout.strip() == "0"


def test_env_is_added_to_the_environment(monkeypatch):
    monkeypatch.setenv("SX_KEPT", "kept")
    result = LocalTransport().run(
        [sys.executable, "-c", "import os; print(os.environ['SX_KEPT'], os.environ['SX_ADDED'])"],
        timeout=30, env={"SX_ADDED": "added"})
    assert result.stdout.split() == ["kept", "added"]


def test_undecodable_output_is_replaced_not_fatal():
    result = LocalTransport().run(
        [sys.executable, "-c", "import sys; sys.stdout.buffer.write(b'ok \\xff\\xfe')"], timeout=30)
    assert result.stdout.startswith("ok ") and "\ufffd" in result.stdout


def test_cwd_and_root(tmp_path):
    (tmp_path / "sub").mkdir()
    t = LocalTransport(tmp_path)
    pwd = [sys.executable, "-c", "import os; print(os.getcwd())"]
    assert t.root == tmp_path
    assert t.run(pwd, timeout=30).stdout.strip() == str(tmp_path)       # default cwd: the root
    assert t.run(pwd, timeout=30, cwd="sub").stdout.strip() == str(tmp_path / "sub")
    assert t.run(pwd, timeout=30, cwd=PurePosixPath(tmp_path / "sub")).stdout.strip() == str(tmp_path / "sub")
    with pytest.raises(TransportError, match="working directory .*missing.* does not exist"):
        t.run(pwd, timeout=30, cwd="missing")


def test_missing_and_unexecutable_commands(tmp_path):
    t = LocalTransport()
    with pytest.raises(CommandNotFound, match="sx-no-such-command: command not found") as info:
        t.run(["sx-no-such-command", "--version"], timeout=5)
    assert info.value.executable == "sx-no-such-command"
    plain = tmp_path / "not-executable"
    plain.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(CommandNotFound, match="not executable"):
        t.run([str(plain)], timeout=5)


def test_timeout_kills_the_whole_process_group(tmp_path):
    pidfile = tmp_path / "child.pid"
    # A wrapper (as sites put around sbatch) whose child would outlive a plain kill.
    wrapper = tmp_path / "wrapper.sh"
    wrapper.write_text(f"#!/bin/sh\nsleep 60 &\necho $! > {pidfile}\nwait\n")
    wrapper.chmod(0o755)
    started = time.monotonic()
    with pytest.raises(CommandTimeout, match="did not finish within 0.5s") as info:
        LocalTransport().run([str(wrapper)], timeout=0.5)
    assert time.monotonic() - started < 10
    assert info.value.timeout == 0.5 and info.value.executable == "wrapper.sh"
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the wrapper's child survived the timeout"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"     # a zombie is dead
    except FileNotFoundError:
        return False


def test_write_is_atomic_and_keeps_permissions(tmp_path):
    t = LocalTransport(tmp_path)
    t.write_text("a.txt", "first\n")
    assert (tmp_path / "a.txt").read_text() == "first\n"
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o666 & ~umask
    (tmp_path / "a.txt").chmod(0o640)
    inode = (tmp_path / "a.txt").stat().st_ino
    t.write_text("a.txt", "second\n")
    assert t.read_text("a.txt") == "second\n"
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640
    assert (tmp_path / "a.txt").stat().st_ino != inode          # replaced, not rewritten in place
    t.write_bytes(tmp_path / "b.bin", b"\x00\xff")
    assert t.read_bytes("b.bin") == b"\x00\xff"
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.bin"]     # no temporary files left


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    t = LocalTransport(tmp_path)
    t.write_text("a.txt", "old")

    with pytest.raises(TypeError):
        t.write_bytes("a.txt", 12345)                            # fails half-way, inside the write
    assert t.read_text("a.txt") == "old" and t.listdir(".") == ["a.txt"]
    with pytest.raises(PathNotFound, match="does not exist"):
        t.write_text("no/such/dir/file", "x")


def test_list_exists_makedirs_and_missing_paths(tmp_path):
    t = LocalTransport(tmp_path)
    t.makedirs("x/y/z")
    t.makedirs("x/y/z")                                          # existing: fine
    t.write_text("x/b", "")
    t.write_text("x/a", "")
    assert t.listdir("x") == ["a", "b", "y"]
    assert t.exists("x/y/z") and t.exists(tmp_path / "x" / "a") and not t.exists("x/c")
    with pytest.raises(PathNotFound) as info:
        t.read_text("x/c")
    assert info.value.path == str(tmp_path / "x" / "c")
    with pytest.raises(PathNotFound):
        t.listdir("nope")
    with pytest.raises(TransportError, match="cannot list"):
        t.listdir("x/a")                                         # a file, not a directory
    with pytest.raises(TransportError, match="cannot create"):
        t.makedirs("x/a/sub")


def test_without_a_root_relative_paths_follow_the_current_directory(tmp_path, monkeypatch):
    t = LocalTransport()
    monkeypatch.chdir(tmp_path)
    assert t.root == tmp_path
    t.write_text("here.txt", "x")
    assert (tmp_path / "here.txt").read_text() == "x"
    assert t.run([sys.executable, "-c", "import os; print(os.getcwd())"], timeout=30).stdout.strip() == str(tmp_path)


def test_started_commands_run_at_once_and_wait_says_what_run_would(tmp_path):
    t = LocalTransport()
    mark = tmp_path / "second-started"
    # The first waits for the second to start: one after the other it would exit 1.
    first = t.start(["sh", "-c", f"for i in $(seq 300); do [ -e {mark} ] && echo saw && exit 0;"
                     " sleep 0.05; done; exit 1"], timeout=60)
    second = t.start(["sh", "-c", f"touch {mark}; echo $SX_T >&2"], timeout=60, env={"SX_T": "e"})
    one, two = first.wait(), second.wait()
    assert (one.returncode, one.stdout) == (0, "saw\n")
    assert (two.returncode, two.stderr, two.argv[0]) == (0, "e\n", "sh")
    with pytest.raises(CommandNotFound, match="sx-no-such-command: command not found"):
        t.start(["sx-no-such-command"], timeout=5).wait()
    with pytest.raises(CommandTimeout, match="did not finish within 0.5s"):
        t.start(["sleep", "30"], timeout=0.5).wait()


def test_kill_stops_a_started_command_and_its_children(tmp_path):
    pidfile = tmp_path / "child.pid"
    wrapper = tmp_path / "wrapper.sh"
    wrapper.write_text(f"#!/bin/sh\nsleep 60 &\necho $! > {pidfile}\nwait\n")
    wrapper.chmod(0o755)
    running = LocalTransport().start([str(wrapper)], timeout=120)
    deadline = time.monotonic() + 10
    while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    running.kill()
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the started command's child survived kill()"
