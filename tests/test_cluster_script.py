"""cluster.sh decides which processes are its daemons by their pid files, and so which it skips
starting and which it stops. A pid file outlives a killed session, and by the next session its pid
may belong to another Slurm process on the machine: a job step of the native cluster, or a daemon
of the cluster in a Debian root (no pid namespace between them). CI once failed this way: the
24.11 root's `up` took the native cluster's slurmstepd for its slurmd g1 and never started it.

These run cluster.sh against a state folder of its own whose pid files name such processes.
"""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from clusterlib import CLUSTER_SH, CURRENT

pytestmark = pytest.mark.cluster


def _stepd_of(job: str, timeout: float = 60) -> int:
    """The pid of the slurmstepd that runs this job's batch step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if (proc / "comm").read_text().strip() != "slurmstepd":
                    continue
                cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if f"[{job}.batch]" in cmdline:
                return int(proc.name)
        time.sleep(0.5)
    raise AssertionError(f"no slurmstepd for job {job} after {timeout}s")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _script(state: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, SX_CLUSTER_STATE=str(state), SX_CLUSTER_LOG=str(state / "log"))
    return subprocess.run(["bash", str(CLUSTER_SH), *args], capture_output=True, text=True,
                          timeout=120, env=env)


def test_stale_pid_files_naming_other_slurm_processes_are_neither_reused_nor_stopped(
        cluster, remote_node, tmp_path):
    if CURRENT.version is not None:
        pytest.skip("drives cluster.sh on the host against the native cluster's job steps")
    job = cluster.sbatch("-p", cluster.cpu_partition, wrap="sleep 300")
    try:
        cluster.wait_states([job], {"RUNNING"}, timeout=60)
        stepd = _stepd_of(job)
        # The 24.11 root's slurmctld: the same daemon name, another cluster (the remote node's).
        run = remote_node.fs_root / "var/lib/slurmexp-cluster/run"
        other_ctld = int((run / "slurmctld.pid").read_text())
        assert (Path("/proc") / str(other_ctld) / "comm").read_text().strip() == "slurmctld"

        state = tmp_path / "state"
        (state / "run").mkdir(parents=True)
        (state / "run" / "slurmd-c1.pid").write_text(f"{stepd}\n")
        (state / "run" / "slurmdbd.pid").write_text(f"{stepd}\n")
        (state / "run" / "slurmctld.pid").write_text(f"{other_ctld}\n")

        status = _script(state, "status")
        assert "slurmd c1: stopped" in status.stdout, status.stdout + status.stderr
        assert "slurmctld: stopped" in status.stdout, status.stdout + status.stderr
        assert "slurmdbd: stopped" in status.stdout, status.stdout + status.stderr

        down = _script(state, "down")
        assert down.returncode == 0, down.stderr
        assert "stopping" not in down.stderr, down.stderr
        time.sleep(2)  # a SIGTERM'd slurmstepd takes a moment to go
        assert _alive(stepd), "cluster.sh down stopped another cluster's job step"
        assert _alive(other_ctld), "cluster.sh down stopped the 24.11 root's slurmctld"
        assert cluster.squeue([job], "%i|%T") == [[job, "RUNNING"]]
    finally:
        subprocess.run(["scancel", job], capture_output=True, timeout=30)
