"""pytest plugin: a real Slurm test cluster for your own sweeps and functions (`slurm_cluster`).

Installed with slurmexp (entry point `pytest11: slurmexp.testing`), so any test can ask for it:

    def test_my_sweep(slurm_cluster, tmp_path):
        out = subprocess.run(["slurmexp", "launch", "sweep.toml", "--site", str(slurm_cluster.site_toml)], ...)

The session fixture brings up the bundled cluster (docker/slurm-cluster/cluster.sh: slurmctld,
slurmdbd with MariaDB, munge, nodes c1-c3 and g1 (2x a100) / g2 (2x v100), partitions cpu/gpu/
debug, QOS normal/high/low, reservation resv1) through the same scripts the project's own tests
use, idempotently (an already running cluster is reused), and hands out its site.toml, partition
and node names and fault injection (fail a node, preempt, restart slurmctld, stop slurmdbd).
It needs root on a Debian machine (see the README); no container registry, no Docker.

Settings (environment):
  SLURMEXP_CLUSTER_DIR  the folder with cluster.sh (default: the checkout slurmexp runs from)
  SX_TEST_CLUSTER       24.11 or 26.05: that Slurm release's cluster in a Debian root instead
  CI=true               a cluster that cannot be started fails the tests instead of skipping them
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

_PACKAGE = Path(__file__).resolve().parent


def _cluster_dir() -> Path:
    env = os.environ.get("SLURMEXP_CLUSTER_DIR")
    return Path(env) if env else _PACKAGE.parent / "docker" / "slurm-cluster"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


class SlurmClusterUnavailable(RuntimeError):
    pass


@dataclass
class SlurmCluster:
    """The running test cluster: names to put in sweeps, and fault injection."""

    name: str
    site_toml: Path
    script: list[str]
    version: str = ""
    cpu_partition: str = "cpu"
    gpu_partition: str = "gpu"
    debug_partition: str = "debug"
    cpu_nodes: list[str] = field(default_factory=lambda: ["c1", "c2", "c3"])
    gpu_nodes: dict[str, str] = field(default_factory=lambda: {"g1": "a100", "g2": "v100"})
    gpu_types: list[str] = field(default_factory=lambda: ["a100", "v100"])
    qos: list[str] = field(default_factory=lambda: ["normal", "high", "low"])
    reservation: str = "resv1"
    reserved_node: str = "c3"
    account: str = "research"

    def run(self, *args: str, timeout: float = 300) -> str:
        """A cluster.sh command (up, status, fail-node N, ...); raises when it fails."""
        proc = subprocess.run([*self.script, *args], capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise SlurmClusterUnavailable(f"{' '.join(self.script)} {' '.join(args)} exited "
                                          f"{proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def fail_node(self, node: str) -> None:
        """Mark NODE down under its running jobs: they end NODE_FAIL."""
        self.run("fail-node", node)

    def resume_node(self, node: str) -> None:
        self.run("resume-node", node)

    def preempt(self, node: str, seconds: int = 20) -> str:
        """Submit a high-QOS job needing all of NODE (preempts low-QOS jobs there); its job id."""
        return self.run("preempt", node, str(seconds)).strip().split(";")[0]

    def restart_ctld(self) -> None:
        self.run("restart-ctld")

    def stop_dbd(self) -> None:
        """Stop slurmdbd: sacct fails, jobs keep running (start_dbd brings it back)."""
        self.run("stop-dbd")

    def start_dbd(self) -> None:
        self.run("start-dbd")

    def wait_idle(self, timeout: float = 120) -> None:
        """Until no job of this cluster is queued or running."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run(["squeue", "-h", "-o", "%A"], capture_output=True, text=True).stdout
            if not out.strip():
                return
            time.sleep(1)
        raise AssertionError(f"cluster {self.name} still busy after {timeout}s")


def start_cluster() -> SlurmCluster:
    """Bring the cluster up (idempotent) and describe it."""
    here = _cluster_dir()
    version = os.environ.get("SX_TEST_CLUSTER", "").strip()
    if version and version != "native":
        root = here / "root-cluster.sh"
        if not root.exists():
            raise SlurmClusterUnavailable(f"{root} is missing (set SLURMEXP_CLUSTER_DIR)")
        info = json.loads(subprocess.run(["bash", str(root), version, "info"], capture_output=True,
                                         text=True, check=True).stdout)
        os.environ["PATH"] = f"{info['bin']}{os.pathsep}{os.environ.get('PATH', '')}"
        cluster = SlurmCluster(info["name"], Path(info["site_toml"]), ["bash", str(root), version], version)
    else:
        script = here / "cluster.sh"
        if not script.exists():
            raise SlurmClusterUnavailable(f"{script} is missing: set SLURMEXP_CLUSTER_DIR to the folder "
                                          "with slurmexp's cluster.sh (docker/slurm-cluster in its repository)")
        cluster = SlurmCluster("minicluster", here.parent.parent / "site.toml", ["bash", str(script)])
    cluster.run("up")
    found = subprocess.run(["sinfo", "--version"], capture_output=True, text=True).stdout.split()
    cluster.version = found[-1] if found else cluster.version
    return cluster


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    """The bundled real Slurm cluster, started once per session (skipped, or failed under CI=true,
    when it cannot be started)."""
    try:
        return start_cluster()
    except (SlurmClusterUnavailable, OSError, subprocess.CalledProcessError) as exc:
        if _in_ci():
            pytest.fail(f"slurm_cluster: {exc}")
        pytest.skip(f"slurm_cluster: {exc}")
