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
from dataclasses import dataclass
from pathlib import Path

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
    import time
    return f"now-{int(time.monotonic() - t0) + 5}seconds"
