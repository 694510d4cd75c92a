"""Test-side handle on the remote login node: sshd on 127.0.0.1 in the Slurm 24.11 Debian root
(docker/slurm-cluster/remote-sshd.sh), with its own file system and Slurm.

`remote_node` (conftest) brings it up once per session; under CI=true a node that cannot be
started is a failure, never a skip. `no_local_slurm` gives the test a PATH with no Slurm
command on it (only the tools slurmexp needs on a laptop), so a remote test cannot pass by
calling the host's Slurm.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from slurmexp.ledger import Ledger

REPO = Path(__file__).resolve().parent.parent
SSHD_SH = REPO / "docker" / "slurm-cluster" / "remote-sshd.sh"
LAPTOP_TOOLS = ("ssh", "ssh-keygen", "bash", "sh", "env", "git", "tar", "rsync", "python3", "id", "cat",
                "mktemp", "rm", "base64", "head")


# The PATH the session started with: the node's scripts need coreutils even where a test has
# taken every Slurm command (and so /usr/bin) off PATH.
FULL_PATH = os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")


class RemoteUnavailable(RuntimeError):
    pass


@dataclass
class RemoteNode:
    host: str
    port: int
    user: str
    identity_file: str
    known_hosts: str
    remote_root: str        # the experiment root on the node (not bound from the host)
    fs_root: Path           # where the node's file system is on the host (for fault checks only)
    cluster: str

    def script(self, *args: str, timeout: float = 300) -> str:
        proc = subprocess.run(["bash", str(SSHD_SH), *args], capture_output=True, text=True,
                              timeout=timeout, check=False,
                              env=dict(os.environ, PATH=FULL_PATH))
        if proc.returncode != 0:
            raise RemoteUnavailable(f"remote-sshd.sh {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout

    @classmethod
    def up(cls) -> RemoteNode:
        if os.geteuid() != 0 or not SSHD_SH.exists() or shutil.which("ssh") is None:
            raise RemoteUnavailable("the remote test node needs root, the OpenSSH client and "
                                    "docker/slurm-cluster/remote-sshd.sh")
        probe = cls("", 0, "", "", "", "", Path("/"), "")
        probe.script("up", timeout=600)
        info = json.loads(probe.script("info"))
        return cls(info["host"], int(info["port"]), info["user"], info["identity_file"],
                   info["known_hosts"], info["remote_root"], Path(info["fs_root"]), info["cluster"])

    @property
    def ssh_options(self) -> list[str]:
        return [f"UserKnownHostsFile={self.known_hosts}", "StrictHostKeyChecking=yes"]

    def transport(self, **kw):
        from slurmexp.transport.ssh import SshTransport

        kw.setdefault("ssh_options", self.ssh_options)
        kw.setdefault("identity_file", self.identity_file)
        return SshTransport(self.host, user=self.user, port=self.port,
                            root=kw.pop("root", self.remote_root), **kw)

    def commands_run(self) -> int:
        """ssh commands the node has run so far (its shell profile counts them)."""
        log = self.fs_root / "var/log/slurmexp-sshd.commands"
        return len(log.read_text().splitlines()) if log.exists() else 0

    def kill_sessions(self) -> None:
        self.script("kill-sessions")

    def down(self) -> None:
        self.script("down")

    def restart(self) -> None:
        self.script("up", timeout=600)


def laptop_path(tmp: Path) -> str:
    """A PATH folder with only a laptop's tools: no sbatch, squeue, sacct, ..."""
    bin_dir = tmp / "laptop-bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in LAPTOP_TOOLS:
        found = shutil.which(tool)
        if found and not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


def since(t0: float) -> str:
    """An sacct -S window that starts just before monotonic time `t0` on the remote's clock.

    The matrix tests reset the 24.11 controller's job ids, so "now-1hours" can also select an
    older finished job with the same id; a window from the submission on leaves it out (as
    reconcile's does, from the first submit time it tracks)."""
    return f"now-{int(time.monotonic() - t0) + 5}seconds"


# --- the command line over SSH (tests/test_remote_*.py) ----------------------------------

TRAIN = """#!/bin/bash
# Exists only on the host: the run finds it in the synced sources on the cluster.
set -e
echo "training x=$1 on $(hostname)"
echo "a warning for x=$1" >&2
printf '{"loss": %s, "x": %s}\\n' "$(( $1 * 10 ))" "$1" >"$2/metrics.json"
"""


def sx(tmp_path: Path, *args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slurmexp", "--ledger", str(tmp_path / "l.db"), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=tmp_path, env=env)


def launch(tmp_path, sweep, site) -> str:
    proc = sx(tmp_path, "launch", str(sweep), "--site", str(site))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def reconcile_until_finished(tmp_path, ledger: Ledger, exp_id: str, timeout: float = 180) -> str:
    # One Ledger per test process: opening a second one on the same file (an fd opened and
    # closed) drops the first connection's POSIX locks while the CLI writes.
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        proc = sx(tmp_path, "reconcile")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        state = ledger.get_experiment(exp_id, required=True)["state"]
        if state.startswith("FINISHED"):
            return state
        time.sleep(3)
    return state
