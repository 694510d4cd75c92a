"""Time `slurmexp report` on a synthetic sweep of 100,000 runs (see bench/README.md).

The ledger is made the way a real one is: create_experiment() for the runs, then attempts
written with bulk SQL as reconcile would leave them (accounting filled in, ~5% failed and
retried), plus one metrics file per run and its summary stored in the ledger as reconcile stores
it when an attempt ends (schema 7). Building it takes a while, so --keep reuses it.

    python bench/bench_report.py [--runs 100000] [--dir /tmp/sx-bench] [--keep]
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from slurmexp.ledger import Ledger  # noqa: E402
from slurmexp.reconcile.transitions import final_metrics  # noqa: E402

EXP = "bench-0123abcd"
STATES_FAILED = ["FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED"]
T0 = datetime(2026, 11, 21, 8, 0, 0)


def run_id(params: dict) -> str:
    text = json.dumps(params, sort_keys=True, separators=(",", ":"))
    return "r" + hashlib.sha256(text.encode()).hexdigest()[:10]


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S")


def make_ledger(root: Path, n_runs: int, metrics: bool = True, stored: bool = True) -> Path:
    """The synthetic ledger under `root`; with `metrics` the runs' metrics files, and with
    `stored` (as reconcile leaves a finished sweep since schema 7) each attempt's metrics
    summary in the ledger; without it the report reads every run's files (older ledgers)."""
    rng = random.Random(0)
    exp_dir = root / "exp"
    runs = []
    grid = [(lr, bs, wd) for lr in (1e-4, 3e-4, 1e-3, 3e-3, 1e-2) for bs in (32, 64, 128, 256)
            for wd in (0.0, 0.01, 0.05, 0.1, 0.2)]
    for i in range(n_runs):
        lr, bs, wd = grid[i % len(grid)]
        params = {"lr": lr, "batch": bs, "wd": wd, "seed": i // len(grid)}
        rid = run_id(params)
        runs.append(dict(run_id=rid, idx=i, params=params, seed=params["seed"], source="grid",
                         run_dir=exp_dir / "runs" / rid, chunk=i // 1000, task_index=i % 1000))
    t = time.perf_counter()
    led = Ledger(root / "ledger.db")
    led.create_experiment(exp_id=EXP, name="bench", fingerprint="fp", cluster="bench",
                          backend="slurm", exp_dir=exp_dir, sweep_path=None,
                          sweep_copy_path=None, site_path=None, site_hash=None,
                          template_hash=None, provenance={}, runs=runs)
    print(f"  create_experiment: {time.perf_counter() - t:.1f} s")

    t = time.perf_counter()
    attempts, run_rows = [], []
    n_chunks = (n_runs + 999) // 1000
    conn = led.db.conn
    with led.transaction():
        subs = []
        for c in range(n_chunks):
            cur = conn.execute(
                "INSERT INTO submissions (exp_id, chunk, array_spec, n_tasks, script_path, "
                "state, job_id, cluster, submit_time, created) VALUES (?, ?, ?, ?, ?, "
                "'SUBMITTED', ?, 'bench', ?, ?)",
                [EXP, c, "0-999", 1000, str(exp_dir / "scripts" / f"chunk-{c:03d}.sbatch"),
                 str(5000 + c), iso(T0 + timedelta(minutes=c)), iso(T0)])
            subs.append(cur.lastrowid)
        retry_job = 9000
        for r in runs:
            c, task = r["chunk"], r["task_index"]
            submit = T0 + timedelta(minutes=c)
            n = 2 if rng.random() < 0.05 else 1
            for no in range(1, n + 1):
                failed = no < n or rng.random() < 0.02
                state = rng.choice(STATES_FAILED) if failed else "COMPLETED"
                start = submit + timedelta(seconds=rng.randint(5, 3600))
                elapsed = rng.randint(600, 7200)
                gpus = 1 if r["params"]["batch"] < 128 else 2
                job = str(5000 + c) if no == 1 else str(retry_job)
                key = f"{job}_{task if no == 1 else 0}"
                attempts.append((
                    EXP, r["run_id"], no, subs[c], "bench", job, task, key, iso(submit), state,
                    None if state == "COMPLETED" else "synthetic", f"g{rng.randint(1, 64):03d}",
                    "gpu", "normal", "lab", iso(start), iso(start + timedelta(seconds=elapsed)),
                    elapsed, "0:0" if state == "COMPLETED" else "1:0",
                    f"billing={4 * gpus},cpu={4 * gpus},gres/gpu:a100={gpus},gres/gpu={gpus},"
                    f"mem={16 * gpus}G,node=1", f"{16 * gpus}G", f"{rng.uniform(2000, 15000):.1f}",
                    elapsed * 4 * gpus * rng.uniform(0.3, 0.95),
                    None if state == "COMPLETED" else state.lower(), iso(T0)))
                if no > 1:
                    submit = start + timedelta(seconds=elapsed + 60)
                    retry_job += 1
            run_rows.append((state, n, EXP, r["run_id"]))
        conn.executemany(
            "INSERT INTO attempts (exp_id, run_id, attempt_no, sub_id, cluster, job_id, "
            "task_index, job_key, submit_time, state, reason, node, partition, qos, account, "
            "start_time, end_time, elapsed_s, exit_code, alloc_tres, req_mem, max_rss, "
            "total_cpu_s, failure_class, updated) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            attempts)
        conn.executemany("UPDATE runs SET state = ?, n_attempts = ? WHERE exp_id = ? AND "
                         "run_id = ?", run_rows)
    led.close()
    print(f"  {len(attempts)} attempts: {time.perf_counter() - t:.1f} s")

    if not metrics:
        return root / "ledger.db"
    t = time.perf_counter()
    for i, r in enumerate(runs):
        d = Path(r["run_dir"])
        d.mkdir(parents=True, exist_ok=True)
        values = {"loss": round(rng.uniform(0.1, 2.0), 5), "acc": round(rng.uniform(0.5, 0.99), 5),
                  "epoch": 10, "eval": {"f1": round(rng.uniform(0.3, 0.9), 5)}}
        if i % 50 == 7:         # 2%: died before metrics.json; only the history
            (d / "metrics.jsonl").write_text(
                "".join(json.dumps({"time": 1.0 + s, "step": s, **values}) + "\n"
                        for s in range(5)))
        elif i % 50 != 8:       # and 2% have no metrics at all
            (d / "metrics.json").write_text(json.dumps(values, indent=1, sort_keys=True))
    print(f"  metrics files: {time.perf_counter() - t:.1f} s")
    if stored:
        t = time.perf_counter()
        led = Ledger(root / "ledger.db")
        summaries = [(final_metrics(SimpleNamespace(run_dir=str(r["run_dir"]))), EXP, r["run_id"])
                     for r in runs]           # what reconcile stores as each attempt ends
        with led.transaction():
            led.db.conn.executemany("UPDATE attempts SET metrics_json = ? WHERE exp_id = ? AND "
                                    "run_id = ?", summaries)
        led.close()
        print(f"  stored metrics summaries: {time.perf_counter() - t:.1f} s")
    return root / "ledger.db"


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def timed(label: str, fn, results: dict) -> object:
    t = time.perf_counter()
    value = fn()
    results[label] = time.perf_counter() - t
    print(f"  {label:<40} {results[label]:7.2f} s")
    return value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100_000)
    ap.add_argument("--dir", type=Path, default=None,
                    help="where the ledger and run folders go (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep --dir and reuse it next time")
    ap.add_argument("--json", type=Path, help="also write the timings here")
    ap.add_argument("--cold", action="store_true",
                    help="also time reading the metrics files after dropping the page cache "
                         "(Linux, root)")
    args = ap.parse_args()

    root = args.dir or Path(tempfile.mkdtemp(prefix="sx-bench-"))
    db = root / "ledger.db"
    if not (args.keep and db.exists()):
        if root.exists() and args.dir:
            shutil.rmtree(root)
        root.mkdir(parents=True, exist_ok=True)
        print(f"building a ledger with {args.runs} runs in {root}")
        make_ledger(root, args.runs)

    from slurmexp.report import build as rep_mod
    from slurmexp.report import frames, metrics_files
    results: dict[str, float] = {}
    print(f"timings ({args.runs} runs; files in the page cache unless noted; pandas was "
          f"imported before the first timing)")
    led = Ledger(db)
    timed("build_report, no metrics", lambda: rep_mod.build_report(led, [EXP], metrics=False),
          results)
    dirs = frames.runs_frame(led, [EXP], params=False)["run_dir"]
    modes = [(1, "1 thread"), (8, "8 threads"), (None, "auto")]
    for workers, label in modes:
        timed(f"read metrics files, {label}", lambda w=workers: metrics_files._metrics_frame(dirs, w),
              results)
    if args.cold:
        for workers, label in modes:
            drop_caches()
            timed(f"read metrics files, {label}, cold cache",
                  lambda w=workers: metrics_files._metrics_frame(dirs, w), results)
    timed("build_report, metrics from the files", lambda: rep_mod.build_report(
        led, [EXP], from_files=True), results)
    report = timed("build_report (all of it; stored metrics)",
                   lambda: rep_mod.build_report(led, [EXP]), results)
    for k, v in report.timings.items():
        print(f"    {k:<38} {v:7.2f} s")
        results[f"  build_report.{k}"] = v
    timed("build_report --by lr --best loss",
          lambda: rep_mod.build_report(led, [EXP], by="lr", best="loss"), results)
    sizes = {}
    for fmt in ("csv", "json", "html", "table", "markdown"):
        text = timed(f"render {fmt}", lambda f=fmt: rep_mod.render_report(report, f), results)
        sizes[fmt] = len(text.encode())
        if fmt == "csv":
            framed = text
    from slurmexp.report.csv_rows import write_run_csv
    out = io.StringIO()
    done = timed("report --format csv without frames (report.csv_rows: ledger to CSV)",
                 lambda: write_run_csv(led, [EXP], out), results)
    if not done or out.getvalue() != framed:     # the big check of the two paths
        sys.exit("report.csv_rows wrote other bytes than the frame path (or fell back)")
    print("    the same bytes as build_report + render csv")
    timed("render csv through pandas' to_csv (before)", lambda: report.runs.to_csv(
        index=False, lineterminator="\n"), results)
    print("output sizes: " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in sizes.items()))
    led.close()
    if args.json:
        args.json.write_text(json.dumps({"runs": args.runs, "timings_s": results,
                                         "sizes_bytes": sizes}, indent=1))
    if not args.keep and args.dir is None:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
