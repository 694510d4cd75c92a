"""`[remote]` sites end to end against the real sshd in the Slurm 24.11 root (tests/remotelib.py),
with no Slurm command on the local PATH: discovery over SSH writes a site.toml whose [remote]
table loads, and the factory then reaches that cluster, as its own user, over SSH."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from slurmexp.backends.base import scheduler_for
from slurmexp.sites.model import load_site
from slurmexp.transport.ssh import SshTransport

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("no_local_slurm")]


def discover(remote_node, out, *extra):
    argv = [sys.executable, "-m", "slurmexp", "site", "discover", "-o", str(out),
            "--remote", f"{remote_node.user}@{remote_node.host}", "--port", str(remote_node.port),
            "--identity", remote_node.identity_file,
            *[a for opt in remote_node.ssh_options for a in ("--ssh-option", opt)], *extra]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300)


def test_discover_over_ssh_writes_a_remote_site(remote_node, tmp_path):
    out = tmp_path / "site.toml"
    root = f"{remote_node.remote_root}/disc-{tmp_path.name}"
    proc = discover(remote_node, out, "--remote-root", root)
    assert proc.returncode == 0, proc.stderr
    site = load_site(out)
    assert site.cluster == remote_node.cluster
    assert {"cpu", "gpu"} <= set(site.partitions)
    assert site.gpu_types("gpu") == {"a100": 2, "v100": 2}
    assert site.remote is not None and site.remote.host == remote_node.host
    assert (site.remote.user, site.remote.port, site.remote.root) == (remote_node.user, remote_node.port, root)
    assert site.remote.ssh_options == remote_node.ssh_options
    assert "as user root" in out.read_text()      # the cluster's login, not this machine's
    assert (remote_node.fs_root / root.lstrip("/")).is_dir()   # made on the node, not here
    assert not Path(root).exists()                              # nothing on the host

    backend = scheduler_for("slurm", site.cluster, site=site)
    assert isinstance(backend.transport, SshTransport)
    assert backend.user == "root"
    assert set(backend.cluster_facts().partitions) == set(site.partitions)


def test_discover_remote_options_need_remote(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "slurmexp", "site", "discover", "--port", "22"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "need --remote" in proc.stderr


def test_discover_over_ssh_unreachable_exits_3(remote_node, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "slurmexp", "site", "discover", "--remote",
                           f"root@{remote_node.host}", "--port", "1", "--ssh-option", "ConnectTimeout=5"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, (proc.returncode, proc.stderr)
    assert "unreachable since" in proc.stderr and "Connection refused" in proc.stderr
    assert "Traceback" not in proc.stderr
