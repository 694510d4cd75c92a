"""Time validation's cluster-fact queries (4 scontrol + 2 sacctmgr) on the bundled cluster.

    flock -o /tmp/cluster.lock env PYTHONPATH=$PWD python3 bench/bench_facts.py fresh
    flock -o /tmp/cluster.lock env PYTHONPATH=$PWD python3 bench/bench_facts.py cached

`fresh` reads every part (what `site discover` and `validate --fresh` do); `cached` lets QOS and
associations come from the facts cache in $SLURMEXP_HOME (the first of the repeats fills it).
Run it with another tree's PYTHONPATH, interleaved, to compare two versions. Submits nothing.
"""
from __future__ import annotations

import statistics
import sys
import time

from slurmexp.backends.slurm.backend import SlurmBackend


def main(mode: str = "fresh", repeats: int = 5) -> None:
    backend = SlurmBackend(cluster="minicluster")
    _ = backend.cluster_flag        # read slurm.conf once, outside the timing
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        backend.cluster_facts(max_age_s=300) if mode == "cached" else backend.cluster_facts()
        times.append(time.perf_counter() - started)
    print(f"{mode}: median {statistics.median(times):.3f} s of {repeats} ({', '.join(f'{t:.2f}' for t in times)})")


if __name__ == "__main__":
    main(*sys.argv[1:2], *(int(a) for a in sys.argv[2:3]))
