"""Shared fixtures. The `cluster` fixture brings the real mini Slurm cluster up once per session;
`remote_node` the remote login node (sshd in the Slurm 24.11 root, tests/remotelib.py).

Under CI=true a cluster that cannot be started is a test failure, never a skip: a skipped
cluster test proves nothing about Slurm.

SX_TEST_CLUSTER=24.11 (or 26.05) runs the cluster tests against that Slurm release's cluster in
its Debian root (docker/slurm-cluster/root-cluster.sh) instead of the host's 22.05: its Slurm
commands go first on PATH for the whole session, tests and slurmexp's subprocesses alike.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from clusterlib import CURRENT, Cluster, ClusterUnavailable, slurm_installed
from remotelib import TRAIN

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _destructive(item, kind: str = "") -> bool:
    marker = item.get_closest_marker("destructive")
    return marker is not None and (not kind or bool(marker.kwargs.get(kind)))


def pytest_collection_modifyitems(config, items):
    # Tests that wipe or break the whole cluster run after everything else, in their order; one
    # that leaves the queue full (destructive(fills_queue=True)) runs right after the first that
    # wipes the controller's state (destructive(wipes_state=True)): it starts on an empty queue
    # and the next wipe purges what it leaves, instead of waiting MinJobAge for each.
    rest = [item for item in items if _destructive(item) and not _destructive(item, "fills_queue")]
    at = next((n + 1 for n, item in enumerate(rest) if _destructive(item, "wipes_state")), len(rest))
    rest[at:at] = [item for item in items if _destructive(item, "fills_queue")]
    items[:] = [item for item in items if not _destructive(item)] + rest


def pytest_configure(config):
    config.addinivalue_line("markers", "destructive(wipes_state, fills_queue): wipes or restarts the whole cluster; runs last")
    CURRENT.use_on_path()


def pytest_report_header(config):
    if CURRENT.version:
        return f"slurm cluster: {CURRENT.name} (Slurm {CURRENT.version}, commands from {CURRENT.bin_dir})"
    return None


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    if not slurm_installed():
        msg = ("the test cluster is not installed: run `bash docker/slurm-cluster/install.sh` "
               "then `bash docker/slurm-cluster/cluster.sh up`")
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    c: Cluster = CURRENT
    try:
        c.up()
    except ClusterUnavailable as exc:
        if IN_CI:
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    return c


@pytest.fixture(autouse=True)
def _test_start():
    """Each test's sacct window opens when it starts (see Cluster.test_started)."""
    CURRENT.test_started = time.time()
    CURRENT.submitted_at.clear()


@pytest.fixture(scope="session")
def remote_node():
    """The remote login node (sshd in the Slurm 24.11 root); see tests/remotelib.py."""
    from remotelib import RemoteNode, RemoteUnavailable

    try:
        return RemoteNode.up()
    except RemoteUnavailable as exc:
        if IN_CI:
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.fixture
def remote_sweep(remote_node, tmp_path):
    """A [remote] site (discovered over SSH) and a sweep whose script is only on the host."""
    site = tmp_path / "site.toml"
    root = f"{remote_node.remote_root}/launch-{tmp_path.name}"
    proc = subprocess.run(
        [sys.executable, "-m", "slurmexp", "site", "discover", "-o", str(site), "--remote",
         f"{remote_node.user}@{remote_node.host}", "--port", str(remote_node.port),
         "--identity", remote_node.identity_file,
         *[a for opt in remote_node.ssh_options for a in ("--ssh-option", opt)], "--remote-root", root],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.sh").write_text(TRAIN)
    sweep = project / "sweep.toml"
    sweep.write_text('name = "remote"\ncommand = "bash train.sh {x} {run_dir}"\nworkdir = "."\n'
                     '[params]\nx = [1, 2, 3]\n[resources]\ntime = "00:05:00"\n')
    return sweep, site, root


@pytest.fixture
def no_local_slurm(tmp_path, monkeypatch):
    """This test's PATH has no Slurm command: what runs on the cluster must go over SSH."""
    import shutil

    from remotelib import laptop_path

    monkeypatch.setenv("PATH", laptop_path(tmp_path))
    assert shutil.which("sbatch") is None and shutil.which("sacct") is None


@pytest.fixture
def cluster_ledger(tmp_path):
    """A fresh ledger for a test that submits to the real cluster. Afterwards the jobs its
    attempts still hold are cancelled (by id, never all of root's jobs: other tests and
    sessions share the cluster), so a failing test does not leave sleepers on the nodes."""
    from slurmexp.ledger import Ledger

    led = Ledger(tmp_path / "home" / "ledger.db")
    yield led
    ids = [a["job_id"] for a in led.attempts(active_only=True) if a["job_id"]]
    if ids:
        subprocess.run(["scancel", *sorted(set(ids))], check=False, capture_output=True)
    led.close()
