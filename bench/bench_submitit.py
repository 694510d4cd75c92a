"""1,000-input map_array: plain submitit vs `import slurmexp.submitit as submitit`, whole process.

Each side is a fresh Python process (imports, validation, ledger writes, sbatch, waiting for
and reading every result), run one after the other on the same cluster and partition, with
the same trivial function. Usage (on the test cluster, under its lock):

    PYTHONPATH=$PWD flock /tmp/cluster.lock python3 bench/bench_submitit.py [N] [--repeat R]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = """\
import time
t0 = time.perf_counter()
{import_line}


def square(x):
    return x * x


if __name__ == "__main__":
    ex = submitit.AutoExecutor(folder="log/%j")
    ex.update_parameters(timeout_min=5, slurm_partition="cpu", slurm_array_parallelism=1000)
    jobs = ex.map_array(square, range({n}))
    t1 = time.perf_counter()
    assert [j.result() for j in jobs] == [x * x for x in range({n})]
    print(f"submit {{t1 - t0:.2f}} total {{time.perf_counter() - t0:.2f}}")
"""
SIDES = {"submitit": "import submitit", "slurmexp": "import slurmexp.submitit as submitit"}


def run_side(name: str, n: int) -> tuple[float, str]:
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        Path(tmp, "bench.py").write_text(SCRIPT.format(import_line=SIDES[name], n=n))
        env = dict(os.environ, PYTHONPATH=str(REPO), SLURMEXP_SITE=str(REPO / "site.toml"),
                   SLURMEXP_HOME=str(Path(tmp) / "home"))
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "bench.py"], cwd=tmp, env=env, capture_output=True,
                              text=True, timeout=3600)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(f"{name} failed:\n{proc.stdout}\n{proc.stderr}")
        return wall, proc.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("n", nargs="?", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=1)
    ns = parser.parse_args()
    for _ in range(ns.repeat):
        results = {name: run_side(name, ns.n) for name in SIDES}
        for name, (wall, out) in results.items():
            print(f"{name:9s} {ns.n} inputs: whole process {wall:6.1f}s ({out})")
        ratio = results["slurmexp"][0] / results["submitit"][0]
        print(f"ratio slurmexp / submitit: {ratio:.2f}x")


if __name__ == "__main__":
    main()
