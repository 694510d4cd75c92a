"""An example of a user's own test suite against a real Slurm, with slurmexp's pytest plugin.

slurmexp installs the plugin (`slurm_cluster` fixture); run with `pytest examples/pytest-plugin`
as root on a machine where the bundled cluster can run (see the README). Nothing here knows the
cluster's names: they come from the fixture, so the same tests run on every Slurm release
(SX_TEST_CLUSTER=24.11 pytest examples/pytest-plugin).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

TRAIN = """\
import json, os, sys
lr = float(sys.argv[sys.argv.index("--lr") + 1])
json.dump({"lr": lr, "node": os.environ["SLURMD_NODENAME"], "gpus": os.environ.get("SLURM_GPUS_ON_NODE")},
          open(os.path.join(os.environ["SLURMEXP_RUN_DIR"], "result.json"), "w"))
"""


def slurmexp(tmp_path: Path, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "slurmexp", "--ledger", str(tmp_path / "ledger.db"), *args],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def run_sweep(tmp_path: Path, site: Path, resources: str, timeout: float = 180) -> list[dict]:
    (tmp_path / "train.py").write_text(TRAIN)
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(f'name = "my-sweep"\ncommand = "{sys.executable} train.py --lr {{lr}}"\n'
                     f'[params]\nlr = [0.1, 0.01]\n[resources]\ntime = "00:05:00"\n{resources}\n')
    exp = slurmexp(tmp_path, "launch", str(sweep), "--site", str(site)).strip().splitlines()[-1]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        slurmexp(tmp_path, "reconcile", "--quiet")
        runs = json.loads(slurmexp(tmp_path, "status", exp, "--format", "json"))
        if all(r["state"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "LOST") for r in runs):
            return runs
        time.sleep(2)
    raise AssertionError(f"{exp} did not finish: {runs}")


def results(tmp_path: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(tmp_path.rglob("result.json"))]


def test_cpu_sweep_completes_on_cpu_nodes(slurm_cluster, tmp_path):
    runs = run_sweep(tmp_path, slurm_cluster.site_toml, "cpus = 1")
    assert [r["state"] for r in runs] == ["COMPLETED", "COMPLETED"]
    seen = results(tmp_path)
    assert sorted(s["lr"] for s in seen) == [0.01, 0.1]
    assert {s["node"] for s in seen} <= set(slurm_cluster.cpu_nodes)


def test_gpu_sweep_gets_the_gpu_type_it_asks_for(slurm_cluster, tmp_path):
    runs = run_sweep(tmp_path, slurm_cluster.site_toml, 'gpus = 1\ngpu_type = "a100"')
    assert {r["state"] for r in runs} == {"COMPLETED"}
    a100_nodes = {n for n, t in slurm_cluster.gpu_nodes.items() if t == "a100"}
    assert all(s["node"] in a100_nodes and s["gpus"] == "1" for s in results(tmp_path))
