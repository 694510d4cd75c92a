"""What the ledger's rows of a launch cost per run in SQLite alone: the bound under launch-8k.

Per run, a launch writes its PLANNED row (`create_experiment`) and, once its chunk's sbatch has
answered, its attempt, its event and its update to SUBMITTED (`record_intent`, then
`record_submitted`, one a chunk of 1,000 tasks, as MaxArraySize 1001 makes the bundled cluster's
launch-8k). Nothing else is done here: no sweep, no sbatch, no files. The ledger is a new file
in a temporary folder holding two earlier 8,000-run experiments (history, submitted), as in
`bench/profile_launch.py`; medians of REPEATS, microseconds a run.

`--schema-8` repeats each round, interleaved, in a ledger with schema 6's (reuse_key, state)
index of every run in place of schema 9's partial one (what a launch paid before), and
`--drop-exp-state` in one without the two (exp_id, state) indexes of runs and attempts, to show
what removing them (a migration; the queries by experiment would fall back on the primary
key's exp_id prefix) could save. `--history N` earlier experiments (2). No Slurm needed:

    env PYTHONPATH=$PWD python3 bench/bench_ledger_rows.py [REPEATS] [--history N] [--schema-8] [--drop-exp-state]
"""
from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from slurmexp.ledger import Ledger

N_RUNS, CHUNK = 8000, 1000
DROP_EXP_STATE = ("DROP INDEX runs_exp_state", "DROP INDEX attempts_exp_state")
SCHEMA_8_REUSE = ("DROP INDEX runs_reusable", "CREATE INDEX runs_reuse ON runs (reuse_key, state)")


def _runs(exp: str) -> list[dict]:
    return [dict(run_id=f"r{i:05d}", idx=i, params={"seed": i}, seed=i, source="grid",
                 run_dir=f"/exp/{exp}/runs/r{i:05d}", chunk=i // CHUNK, task_index=i % CHUNK,
                 reuse_key=hashlib.sha256(f"{exp}{i}".encode()).hexdigest())
            for i in range(N_RUNS)]


def _launch(led: Ledger, exp: str, job_base: int) -> tuple[float, float]:
    """The rows of one launch of N_RUNS runs: (create_experiment s, intents + submitted s)."""
    runs = _runs(exp)
    t = time.perf_counter()
    led.create_experiment(exp, exp, f"fp-{exp}", "c", "slurm", f"/exp/{exp}", "/s.toml",
                          "/c.toml", "/site.toml", "sh", "th", {}, runs)
    created = time.perf_counter() - t
    t = time.perf_counter()
    for chunk in range(N_RUNS // CHUNK):
        sub_id = led.record_intent(exp, chunk, f"0-{CHUNK - 1}", CHUNK, f"/exp/{exp}/c{chunk}.sh",
                                   "sha", "c")
        led.record_submitted(sub_id, str(job_base + chunk), None)
    return created, time.perf_counter() - t


def _round(drop: tuple[str, ...], history: int) -> tuple[float, float]:
    folder = Path(tempfile.mkdtemp(prefix="sx-bench-ledger-"))
    try:
        led = Ledger(folder / "ledger.db", mode="create")
        for stmt in drop:
            led.db.execute(stmt)
        for h in range(history):
            _launch(led, f"hist{h}", 100 * (h + 1))
        result = _launch(led, "new", 1000)
        led.close()
        return result
    finally:
        shutil.rmtree(folder)


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("repeats", nargs="?", type=int, default=5)
    ap.add_argument("--history", type=int, default=2, help="earlier experiments in the ledger")
    ap.add_argument("--schema-8", action="store_true", help="also with schema 8's reuse-key index")
    ap.add_argument("--drop-exp-state", action="store_true",
                    help="also without the (exp_id, state) indexes")
    args = ap.parse_args(argv)
    history, repeats = args.history, args.repeats
    variants: dict[str, tuple[str, ...]] = {"as is": ()}
    if args.schema_8:
        variants["schema 8: every run's reuse key indexed"] = SCHEMA_8_REUSE
    if args.drop_exp_state:
        variants["without the (exp_id, state) indexes"] = DROP_EXP_STATE
    seen: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, drop in variants.items():
            seen[name].append(_round(drop, history))
    print(f"{N_RUNS:,} runs in chunks of {CHUNK:,} beside {history} earlier experiments of as "
          f"many, medians of {repeats}, us a run")
    print(f"{'ledger':40s} {'planned':>8s} {'submitted':>10s} {'both':>8s}")
    for name, rounds in seen.items():
        created, submitted = (statistics.median(r[i] for r in rounds) / N_RUNS * 1e6 for i in (0, 1))
        both = statistics.median(sum(r) for r in rounds) / N_RUNS * 1e6
        print(f"{name:40s} {created:8.1f} {submitted:10.1f} {both:8.1f}")


if __name__ == "__main__":
    main(sys.argv[1:])
