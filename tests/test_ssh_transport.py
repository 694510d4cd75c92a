"""SshTransport against a real sshd (tests/remotelib.py): the Slurm 24.11 Debian root reached on
127.0.0.1, with a login banner and a noisy shell profile on every command. The local PATH has
no Slurm command in these tests, and the remote files live in a folder of the root's own."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
from remotelib import since

from slurmexp.backends.slurm.backend import SlurmBackend, run_slurm
from slurmexp.errors import SlurmUnavailable
from slurmexp.transport import (
    CommandNotFound,
    CommandTimeout,
    PathNotFound,
    Transport,
    TransportUnreachable,
)
from slurmexp.transport.ssh import Op, SshTransport, remote_command

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("no_local_slurm")]


@pytest.fixture
def control_dir():
    """A master of this test's own (a socket path must stay short: pytest's tmp_path is not)."""
    d = tempfile.mkdtemp(prefix="sxcm", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def remote(remote_node, tmp_path, control_dir):
    """A transport rooted in a fresh folder on the node, closed (master ended) afterwards."""
    t = remote_node.transport(control_dir=control_dir,
                              root=f"{remote_node.remote_root}/t-{uuid.uuid4().hex}")
    t.makedirs(t.root)
    yield t
    t.close()


def test_the_node_is_noisy_and_has_no_host_files(remote_node, tmp_path):
    # The faults this suite claims to survive are really there: plain ssh sees the profile's
    # noise on stdout, and the host's test folder is not what the node has at remote_root.
    proc = subprocess.run(["ssh", "-o", "BatchMode=yes", "-i", remote_node.identity_file,
                           "-o", f"UserKnownHostsFile={remote_node.known_hosts}", "-p",
                           str(remote_node.port), f"{remote_node.user}@{remote_node.host}",
                           "echo hi"], capture_output=True, text=True, timeout=60)
    assert proc.stdout.startswith("profile: loading modules"), proc.stdout
    assert "Welcome to the slurmexp remote test node" in proc.stderr
    assert shutil.which("sbatch") is None
    # The remote root is the node's own folder, not one bound from this machine.
    name = f"marker-{uuid.uuid4().hex}"
    t = remote_node.transport(control_dir=tempfile.mkdtemp(prefix="sxcm", dir="/tmp"))
    t.write_text(name, "on the node")
    t.close()
    assert (remote_node.fs_root / remote_node.remote_root.lstrip("/") / name).read_text() == "on the node"
    assert not (Path(remote_node.remote_root) / name).exists()
    assert remote_node.remote_root not in {line.split()[1].removeprefix(str(remote_node.fs_root))
                                           for line in Path("/proc/mounts").read_text().splitlines()}


def test_the_profile_runs_once_per_round_trip(remote):
    # sshd's shell reads ~/.bashrc; the bash slurmexp starts there must not read it again
    # (a profile that loads modules would cost twice per pass). Plain `bash -c` would: the
    # node's profile then prints its line twice.
    body = b"echo ran"
    proc = subprocess.run([*remote.ssh_argv(), remote_command(len(body), "M")], input=body,
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc
    assert proc.stdout.decode().count("profile: loading modules") == 1, proc.stdout
    assert proc.stdout.endswith(b"ran\n") and proc.stderr.decode().count("profile: quota ok") == 1
    again = subprocess.run([*remote.ssh_argv(), "bash -c 'echo ran'"], capture_output=True, timeout=60)
    assert again.stdout.decode().count("profile: loading modules") == 2, again.stdout


def test_commands_and_files_through_noise(remote):
    assert isinstance(remote, Transport)
    args = ["a b", "$HOME", "'quoted'", "*", "x;y", "SXM BEGIN 0 0"]
    r = remote.run(["python3", "-c", "import sys, os; print(repr(sys.argv[1:]), os.environ['X'])",
                    *args], timeout=30, env={"X": "y z"})
    assert r.returncode == 0 and r.stdout == f"{args!r} y z\n" and r.stderr == ""
    r = remote.run(["sh", "-c", "pwd; echo oops >&2; exit 3"], timeout=30)
    assert (r.returncode, r.stdout.strip(), r.stderr) == (3, str(remote.root), "oops\n")
    assert remote.run(["cat"], timeout=30, stdin="line1\nline2").stdout == "line1\nline2"
    remote.makedirs("a/b")
    data = bytes(range(256)) * 10
    remote.write_bytes("a/b/blob", data)
    assert remote.read_bytes("a/b/blob") == data
    remote.write_text("a/b/t.txt", "hé\n")
    assert remote.read_text(f"{remote.root}/a/b/t.txt") == "hé\n"
    assert remote.listdir("a/b") == ["blob", "t.txt"]
    assert remote.exists("a/b/t.txt") and not remote.exists("a/nope")
    assert remote.run(["ls", "b"], timeout=30, cwd="a").stdout.split() == ["blob", "t.txt"]
    with pytest.raises(PathNotFound):
        remote.read_text("a/nope")
    with pytest.raises(PathNotFound):
        remote.write_text("nodir/x", "y")
    with pytest.raises(CommandNotFound):
        remote.run(["no-such-command-sx"], timeout=30)
    with pytest.raises(CommandTimeout):
        remote.run(["sleep", "30"], timeout=1)


def test_batch_is_one_round_trip_and_one_connection(remote, remote_node):
    before = remote_node.commands_run()
    remote.write_text("r.txt", "result")
    ops = [Op("run", argv=("squeue", "-h", "-o", "%i")), Op("run", argv=("sinfo", "--version")),
           *[Op("read", path="r.txt") for _ in range(50)], Op("exists", path="zzz")]
    trips = remote.round_trips
    results = remote.batch(ops)
    assert remote.round_trips == trips + 1
    assert remote_node.commands_run() == before + 2   # the write, then the whole batch
    assert len(results) == len(ops)
    assert results[1].stdout.startswith("slurm-wlm 24.11")
    assert all(r.stdout == "result" for r in results[2:-1]) and results[-1].returncode == 1


def test_slurm_backend_over_ssh_submits_and_reads_accounting(remote):
    backend = SlurmBackend(cluster="sx2411", user=remote.whoami(), transport=remote)
    assert backend.user == "root"
    remote.write_text("job.sh", "#!/bin/bash\n#SBATCH --job-name=sx-test-remote\n"
                                "#SBATCH --output=out.txt\n#SBATCH --partition=cpu\necho ran on $(hostname)\n")
    t0 = time.monotonic()
    sub = backend.submit("job.sh", cwd=remote.root)
    deadline = t0 + 120
    rows = []
    while time.monotonic() < deadline:
        # Only this job: the matrix tests reset this controller's job ids, so an older job with
        # the same id can be in accounting; a window from the submission on leaves it out.
        rows = [r for r in backend.accounting([sub.job_id], since=since(t0))
                if r.job_name == "sx-test-remote"]
        if rows and rows[0].state == "COMPLETED":
            break
        time.sleep(1)
    assert rows and rows[0].state == "COMPLETED", rows
    assert remote.read_text("out.txt").startswith("ran on ")


def test_unreachable_is_slurm_unavailable_with_the_reason(remote, remote_node):
    remote.run(["true"], timeout=30)             # a master is up
    remote_node.down()                            # listener and every session (the master's)
    try:
        with pytest.raises(TransportUnreachable) as exc:
            remote.run(["true"], timeout=30)
        assert "unreachable since" in str(exc.value) and "Connection refused" in str(exc.value)
        with pytest.raises(SlurmUnavailable) as exc2:
            run_slurm(["squeue"], transport=remote)
        assert exc2.value.exit_code == 3 and "unreachable" in str(exc2.value)
    finally:
        remote_node.restart()
    assert remote.run(["true"], timeout=30).ok   # the next call catches up by itself


def test_cut_connection_mid_batch_is_unreachable(remote, remote_node):
    remote.run(["true"], timeout=30)
    cutter = threading.Timer(2, remote_node.kill_sessions)   # ends the master's session too
    cutter.start()
    try:
        with pytest.raises(TransportUnreachable):
            remote.batch([Op("run", argv=("sleep", "20"), timeout=30)])
    finally:
        cutter.join()
    assert remote.run(["true"], timeout=30).ok


def test_changed_host_key_and_needed_prompt_are_clear_errors(remote_node, tmp_path, control_dir):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    wrong = tmp_path / "known_hosts"   # the node's name with another key: "it changed"
    wrong.write_text(f"[{remote_node.host}]:{remote_node.port} "
                     f"{' '.join((tmp_path / 'other.pub').read_text().split()[:2])}\n")
    t = remote_node.transport(ssh_options=[f"UserKnownHostsFile={wrong}", "StrictHostKeyChecking=yes"],
                              control_dir=control_dir)
    with pytest.raises(TransportUnreachable) as exc:
        t.run(["true"], timeout=30)
    assert "ssh-keygen -R" in str(exc.value), exc.value
    unknown = remote_node.transport(ssh_options=[f"UserKnownHostsFile={tmp_path / 'none'}",
                                                 "StrictHostKeyChecking=yes"], control_dir=control_dir)
    with pytest.raises(TransportUnreachable, match="Host key verification failed"):
        unknown.run(["true"], timeout=30)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    stranger = remote_node.transport(identity_file=str(tmp_path / "k"), control_dir=control_dir)
    with pytest.raises(TransportUnreachable) as exc:
        stranger.run(["true"], timeout=30)
    assert "Permission denied" in str(exc.value) and "key login" in str(exc.value)


def test_ssh_argv_reuses_one_master_and_never_prompts():
    argv = SshTransport("h", user="u", port=2222, identity_file="~/k", ssh_options=["ProxyJump=b"],
                        control_dir="/tmp/x").ssh_argv()
    joined = " ".join(argv)
    for opt in ("BatchMode=yes", "ControlMaster=auto", "ControlPath=/tmp/x/%C", "ControlPersist=",
                "ConnectTimeout=", "ServerAliveInterval=", "ServerAliveCountMax=", "ProxyJump=b"):
        assert opt in joined
    assert argv[-1] == "u@h" and "-p" in argv and "2222" in argv
