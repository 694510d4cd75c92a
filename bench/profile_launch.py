"""Where the time of a launch goes, per phase and per run: held sweeps of 1,000 and 8,000 runs
(as run.py's launch-8k row) launched in this process on the bundled cluster, REPEATS times
each, interleaved, every phase timed by a wrapper around the function that does it:

- imports: the CLI, the launch and the Slurm backend (whole: once, in this process);
- prepare: the sweep and site read and checked (pydantic), expanded and planned;
- plan_reuse / reuse_keys: the runs' reuse keys and the ledger's completed runs with them;
- check: validation against the cluster's facts (QOS and associations from the facts cache
  after the first launch), `sbatch --test-only`;
- write_manifest: each chunk's manifest and `.files` (every run's command.sh and params.json);
- create_experiment: the experiment and its PLANNED runs in the ledger;
- submit_chunk: intent, sbatch, the job's attempts (one a task), its runs and events, per chunk;
  inside it: record_intent (the submission's intent row), sbatch (the backend's `submit`: one
  sbatch process a chunk) and record_submitted (the job's attempts, runs and events);
- stamp_submit_times: squeue's submit times onto the attempts.

The runs are cancelled after each launch, and the next waits until the controller has room
(MinJobAge). Medians in milliseconds, and microseconds per run of the difference between the
two sizes (what a run costs, the fixed part left out). Run as root:

    PYTHONPATH=$PWD flock -o /tmp/cluster.lock python3 bench/profile_launch.py [REPEATS]
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import REPO, room_for, write_sweep  # noqa: E402

sys.path.insert(0, str(REPO))      # this tree's slurmexp in this process too

started = time.perf_counter()
import slurmexp.backends.slurm.backend  # noqa: E402,F401
import slurmexp.cli  # noqa: E402,F401
from slurmexp.backends.slurm.backend import SlurmBackend  # noqa: E402
from slurmexp.launch import launcher  # noqa: E402
from slurmexp.ledger import Ledger  # noqa: E402

IMPORTS_S = time.perf_counter() - started
SIZES = (1000, 8000)
PHASES = [(launcher, "prepare"), (launcher.reuse, "plan_reuse"), (launcher.reuse, "reuse_keys"),
          (launcher, "check"), (launcher, "write_manifest"), (Ledger, "create_experiment"),
          (launcher, "submit_chunk"), (Ledger, "record_intent"), (SlurmBackend, "submit", "sbatch"),
          (Ledger, "record_submitted"), (launcher, "stamp_submit_times")]
LABELS = [phase[-1] for phase in PHASES]
spent: dict[str, float] = defaultdict(float)


def timed(owner, name: str, label: str | None = None) -> None:
    inner = getattr(owner, name)
    label = label or name

    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            spent[label] += time.perf_counter() - t
    setattr(owner, name, wrapper)


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    for owner, name, *label in PHASES:
        timed(owner, name, *label)
    tmp = Path(tempfile.mkdtemp(prefix="sx-profile-launch-"))
    os.environ.update(SLURMEXP_HOME=str(tmp / "home"), SLURMEXP_SITE=str(REPO / "site.toml"))
    sweeps = {n: write_sweep(tmp / "sweeps", f"profile-held-{n}", n, ("--begin=now+2hours",))
              for n in SIZES}
    table: dict[int, dict[str, list[float]]] = {n: defaultdict(list) for n in SIZES}
    ledger = Ledger(tmp / "home" / "ledger.db", mode="create")
    os.chdir(tmp / "sweeps")
    for _ in range(repeats):
        for n in SIZES:
            room_for(n)()
            spent.clear()
            t = time.perf_counter()
            result = launcher.launch(sweeps[n], new=True, ledger=ledger)
            table[n]["launch (in process)"].append(time.perf_counter() - t)
            for label in LABELS:
                table[n][label].append(spent[label])
            subprocess.run(["scancel", *result.job_ids], check=True)
    print(f"imports {IMPORTS_S * 1000:.0f} ms (once); medians of {repeats}, ms; per run: "
          f"(8,000 - 1,000) / 7,000")
    print(f"{'phase':22s} {'1,000':>8s} {'8,000':>8s} {'us/run':>8s}")
    for name in ["launch (in process)", *LABELS]:
        a, b = (statistics.median(table[n][name]) for n in SIZES)
        print(f"{name:22s} {a * 1000:8.1f} {b * 1000:8.1f} {(b - a) / 7000 * 1e6:8.1f}")


if __name__ == "__main__":
    main()
