"""Test-side handle on the real mini Slurm cluster (docker/slurm-cluster/cluster.sh).

Tests talk to the cluster with the real Slurm commands. Waiting for jobs uses one sacct call
for all the jobs a test waits on, once a second: the same batched pattern the product uses.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLUSTER_SH = REPO / "docker" / "slurm-cluster" / "cluster.sh"
ROOT_CLUSTER_SH = REPO / "docker" / "slurm-cluster" / "root-cluster.sh"
# Which cluster the tests run against: unset = the host's Slurm (22.05 on Debian 12, cluster.sh);
# a version (24.11, 26.05) = that release's cluster in its Debian root (root-cluster.sh).
VERSION_ENV = "SX_TEST_CLUSTER"
SEP = "\x1f"
TEST_JOB_NAME = "sx-test"  # jobs the tests submit directly; cancelled when a session starts


class ClusterUnavailable(RuntimeError):
    pass


def sh(*argv: str, check: bool = True, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, SLURM_TIME_FORMAT="standard")
    if env:
        full_env.update(env)
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, env=full_env)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@dataclass
class Cluster:
    name: str = "minicluster"
    cpu_partition: str = "cpu"
    gpu_partition: str = "gpu"
    debug_partition: str = "debug"
    cpu_nodes: list[str] = field(default_factory=lambda: ["c1", "c2", "c3"])
    gpu_nodes: dict[str, str] = field(default_factory=lambda: {"g1": "a100", "g2": "v100"})
    reservation: str = "resv1"
    reserved_node: str = "c3"
    account: str = "research"
    site_toml: Path = REPO / "site.toml"
    submitted_at: dict[str, float] = field(default_factory=dict)
    # When the running test began (conftest sets it): job ids are reused after a reset and on
    # a CI machine whose accounting database outlived the controller's state, so sacct is never
    # asked about jobs from before the test that reads them.
    test_started: float = field(default_factory=time.time)
    # The script that starts and breaks this cluster (cluster.sh's commands), and the Slurm
    # release it must report (None: whatever the host has).
    script_argv: list[str] = field(default_factory=lambda: ["bash", str(CLUSTER_SH)])
    version: str | None = None
    bin_dir: Path | None = None  # wrappers for this cluster's Slurm commands, first on PATH

    @classmethod
    def from_env(cls) -> Cluster:
        """The cluster SX_TEST_CLUSTER names (root-cluster.sh describes it), else the native one."""
        version = os.environ.get(VERSION_ENV, "").strip()
        if not version or version == "native":
            return cls()
        proc = sh("bash", str(ROOT_CLUSTER_SH), version, "info", check=False)
        if proc.returncode != 0:
            raise ClusterUnavailable(f"{VERSION_ENV}={version}: root-cluster.sh knows no such version:\n"
                                     f"{proc.stdout}{proc.stderr}")
        info = json.loads(proc.stdout)
        return cls(name=info["name"], site_toml=Path(info["site_toml"]), version=info["version"],
                   script_argv=["bash", info["script"], info["version"]], bin_dir=Path(info["bin"]))

    def use_on_path(self) -> None:
        """Make `sbatch` & co. (for the tests and for slurmexp's subprocesses) this cluster's."""
        if self.bin_dir is not None:
            path = os.environ.get("PATH", "")
            if not path.startswith(f"{self.bin_dir}{os.pathsep}"):
                os.environ["PATH"] = f"{self.bin_dir}{os.pathsep}{path}"

    def check_version(self) -> str:
        """The Slurm release the commands on PATH talk to; must be the one asked for."""
        found = sh("sinfo", "--version", check=False).stdout.strip()
        if self.version and not found.split(" ")[-1].startswith(f"{self.version}."):
            raise ClusterUnavailable(f"expected Slurm {self.version} for cluster {self.name}, sinfo says {found!r}")
        return found

    # --- lifecycle and fault injection (all through cluster.sh) ---------------------------
    def script(self, *args: str, timeout: float = 300) -> str:
        proc = sh(*self.script_argv, *args, check=False, timeout=timeout)
        if proc.returncode != 0:
            raise ClusterUnavailable(f"{' '.join(self.script_argv[1:])} {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def up(self) -> None:
        self.script("up")
        self.check_version()
        # Leftovers of an interrupted earlier test session (test jobs "sx-*", slurmexp
        # experiments "sx.*") would hold nodes the tests need.
        out = sh("squeue", "-h", "-o", "%A %j", check=False).stdout
        stale = sorted({line.split()[0] for line in out.splitlines()
                        if len(line.split()) == 2 and line.split()[1].startswith(("sx-", "sx."))})
        if stale:
            sh("scancel", *stale, check=False)

    def reset(self) -> None:
        self.script("reset")

    def fail_node(self, node: str) -> None:
        self.script("fail-node", node)

    def resume_node(self, node: str) -> None:
        self.script("resume-node", node)

    def restart_ctld(self) -> None:
        self.script("restart-ctld")

    def stop_dbd(self) -> None:
        self.script("stop-dbd")

    def start_dbd(self) -> None:
        self.script("start-dbd")

    def preempt(self, node: str, seconds: int = 20) -> str:
        started = time.time()
        job = self.script("preempt", node, str(seconds)).strip().split(";")[0]
        self.submitted_at[job] = started
        return job

    # --- plain Slurm helpers for tests --------------------------------------------------
    def sbatch(self, *args: str, wrap: str = "sleep 1", cwd: str | None = None) -> str:
        started = time.time()
        argv = ["sbatch", "--parsable", "--output=/dev/null", f"--job-name={TEST_JOB_NAME}", *args,
                "--wrap", wrap]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=cwd or "/tmp",
                              env=dict(os.environ, SLURM_TIME_FORMAT="standard"))
        if proc.returncode != 0:
            raise RuntimeError(f"sbatch failed: {proc.stderr}")
        job = proc.stdout.strip().split(";")[0]
        self.submitted_at[job] = started
        return job

    def since(self, job_ids: list[str]) -> str:
        """sacct -S for these jobs: ids are reused, so never search before their submit or this test."""
        times = [self.submitted_at[j] for j in job_ids if j in self.submitted_at]
        start = max(min(times, default=self.test_started), self.test_started)
        return datetime.fromtimestamp(start - 2).strftime("%Y-%m-%dT%H:%M:%S")

    def sacct(self, job_ids: list[str], fields: str, *, duplicates: bool = False,
              allocations: bool = True, since: str | None = None) -> list[dict[str, str]]:
        argv = ["sacct", "-n", "-P", f"--delimiter={SEP}", "-o", fields, "-S", since or self.since(job_ids),
                "-j", ",".join(job_ids)]
        if allocations:
            argv.append("-X")
        if duplicates:
            argv.append("-D")
        out = sh(*argv).stdout
        names = [f.split("%")[0].lower() for f in fields.split(",")]
        return [dict(zip(names, line.split(SEP))) for line in out.splitlines() if line]

    def squeue(self, job_ids: list[str], fmt: str = "%i|%T|%r|%N") -> list[list[str]]:
        out = sh("squeue", "-h", "-j", ",".join(job_ids), "-o", fmt, check=False).stdout
        return [line.split("|") for line in out.splitlines() if line]

    def wait_states(self, job_ids: list[str], done: set[str], timeout: float = 120,
                    fields: str = "jobid,jobidraw,state,nodelist,alloctres%80,submit,reason%40,exitcode",
                    duplicates: bool = False, expect_rows: int | None = None) -> list[dict[str, str]]:
        """Wait until every row of these jobs (array tasks expanded) has a state in `done`.

        A pending array shows in sacct as one row under the array's id, and for a moment after
        the last task ends it can still show so: `expect_rows` waits for every task's own row.
        """
        deadline = time.monotonic() + timeout
        rows: list[dict[str, str]] = []
        while time.monotonic() < deadline:
            rows = self.sacct(job_ids, fields, duplicates=duplicates)
            if rows and all(r["state"].split()[0] in done for r in rows) and not any(
                "[" in r["jobid"] for r in rows
            ) and (expect_rows is None or len(rows) == expect_rows):
                return rows
            time.sleep(1)
        raise AssertionError(f"jobs {job_ids} not in {done} after {timeout}s: {rows}")


def slurm_installed() -> bool:
    if os.environ.get(VERSION_ENV, "native") not in ("", "native"):
        return ROOT_CLUSTER_SH.exists()  # root-cluster.sh creates the root when it is missing
    return shutil.which("sbatch") is not None and CLUSTER_SH.exists()


# The cluster this test session uses; module-level constants in the tests (site.toml, cluster
# name) read it at import time, and conftest puts its Slurm commands first on PATH.
CURRENT = Cluster.from_env()
