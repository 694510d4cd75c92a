"""Every row of the performance table, side by side, in one command (see bench/README.md).

    flock -o /tmp/cluster.lock env PYTHONPATH=$PWD python3 bench/run.py [--repeats 5] [--only ROW...]
        [--baseline CHECKOUT]   (reconcile and launch rows: also that checkout's, interleaved)

Each row is a pair of whole processes (slurmexp and its peer or floor) run interleaved,
`--repeats` times each; it prints the median wall time and the peak memory (max RSS, from the
kernel's rusage of that process) of each side and their ratio. Machines are noisy, so only the
ratios of one run mean much. Rows that launch submit to the bundled test cluster (the CPU
partition) and cancel what they queued, by job id; the ledger, sweeps and run folders live in a
temporary folder removed at the end (`--keep DIR` keeps and reuses them).

Rows:
  launch-1k          `slurmexp launch` of 1,000 runs vs submitit `map_array` of 1,000 (to queued)
  launch-8k          `slurmexp launch` of 8,000 runs vs of 1,000, both held (--begin; time per run flat?)
  launch-scale       `slurmexp launch` of 1,000, 10,000 and 100,000 runs on the Slurm 26.05 root
                     cluster, brought up with MaxJobCount=250000 for it and put back after
                     (docker/slurm-cluster/root-cluster.sh; SX_MAX_JOB_COUNT); time per run
  reconcile-2k       the pass that records 2,000 new PENDING states (the ledger restored, untimed,
                     to launch's before each) vs the same sacct argv alone
  reconcile-2k-steady  a later pass over the same 2,000 pending runs, nothing to record, vs that sacct
  reconcile-history  the same pass with 100,000 finished runs in the ledger vs with 1,000
  report-csv         `report --format csv` of 100,000 runs vs `pandas.read_sql` of the runs table
  report-csv-files   the same on a ledger without the stored metrics summaries (written before
                     schema 7, or runs still going): every run's metrics file is read
  status-exp         `status EXP` of 100,000 runs vs `status EXP --format json`
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def child_env(**extra: str) -> dict:
    """The environment of a measured or helper process: this checkout's slurmexp first (or,
    with PYTHONPATH among `extra`, that one)."""
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


@dataclass
class Side:
    label: str
    argv: list[str]
    env: dict = field(default_factory=dict)
    cwd: Path | None = None
    after: object = None         # called after each run (cancel what it queued)
    before: object = None        # called before each run, untimed (wait for room in the queue)
    walls: list[float] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)

    def run_once(self) -> None:
        if self.before:
            self.before()
        env = child_env(**self.env)
        started = time.perf_counter()
        proc = subprocess.Popen(self.argv, cwd=self.cwd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{self.label} failed ({' '.join(self.argv)}):\n{out.decode()[-3000:]}")
        self.walls.append(wall)
        self.rss_mib.append(usage.ru_maxrss / 1024)
        if self.after:
            self.after(out.decode())


def _beside(side: Side, kind: str, peer_s: float) -> float:
    """Print a side measured beside a row's pair, as a ratio to its peer; its median."""
    c = statistics.median(side.walls)
    print(f"{'':18s} {c:7.3f} s {round(max(side.rss_mib)):5d} MiB | {c / peer_s:5.2f}x of the "
          f"same peer: {kind} {side.label}", flush=True)
    return c


def measure(name: str, goal: str, ours: Side, peer: Side, repeats: int,
            baseline: Side | None = None, bounds: tuple[Side, ...] = ()) -> dict:
    """`baseline`: the same command of another checkout (`--baseline`), interleaved with both.
    `bounds`: processes that do only part of ours (start Python and import, run the same Slurm
    command, read and write the same rows with nothing derived), interleaved too, each printed
    as a ratio to the same peer: how close to the goal anything doing that part could come."""
    sides = (ours, peer, *([baseline] if baseline else []), *bounds)
    for _ in range(repeats):
        for side in sides:
            side.run_once()
    a, b = statistics.median(ours.walls), statistics.median(peer.walls)
    row = {"row": name, "ours": ours.label, "peer": peer.label, "ours_s": round(a, 3),
           "peer_s": round(b, 3), "ratio": round(a / b, 2), "goal": goal,
           "ours_rss_mib": round(max(ours.rss_mib)), "peer_rss_mib": round(max(peer.rss_mib))}
    print(f"{name:18s} {a:7.3f} s {row['ours_rss_mib']:5d} MiB | {b:7.3f} s "
          f"{row['peer_rss_mib']:5d} MiB | {row['ratio']:5.2f}x  (goal {goal}; {ours.label} vs "
          f"{peer.label})", flush=True)
    if baseline:
        c = _beside(baseline, "baseline", b)
        row.update(baseline_s=round(c, 3), baseline_ratio=round(c / b, 2))
    for side in bounds:
        c = _beside(side, "bound", b)
        row.setdefault("bounds", []).append({"label": side.label, "s": round(c, 3),
                                             "ratio": round(c / b, 2),
                                             "rss_mib": round(max(side.rss_mib))})
    return row


# --- the cluster rows -----------------------------------------------------------------------

def sx(*args: str) -> list[str]:
    return [sys.executable, "-m", "slurmexp", *args]


def write_sweep(folder: Path, name: str, n: int, sbatch: tuple[str, ...] = ()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(f'name = "{name}"\ncommand = "true {{seed}}"\nworkdir = "."\n'
                    f'[params]\nseed = {list(range(n))}\n'
                    f'[resources]\npartition = "cpu"\ncpus = 1\nmem = "100M"\ntime = "00:05:00"\n'
                    + (f'sbatch = {json.dumps(list(sbatch))}\n' if sbatch else ""))
    return path


def cancel_experiment(home: Path, env: dict | None = None):
    def after(out: str) -> None:
        exp_id = out.split()[-1]
        # Not from this checkout's folder: `python -m` puts the working directory first on
        # sys.path, and a baseline's cancel would run this tree's slurmexp (and migrate its ledger).
        subprocess.run(sx("cancel", exp_id), env=child_env(**{**(env or {}), "SLURMEXP_HOME": str(home)}),
                       cwd=home.parent, check=True, capture_output=True)
    return after


SUBMITIT_PEER = """\
import submitit
def square(x):
    return x * x
ex = submitit.AutoExecutor(folder="log/%j")
ex.update_parameters(timeout_min=5, slurm_partition="cpu", slurm_array_parallelism={n},
                     name="sx-bench-submitit", mem_gb=0.1, cpus_per_task=1)
jobs = ex.map_array(square, range({n}))
print(jobs[0].job_id.split("_")[0])
"""


# launch-1k's bound: the modules a launch imports (the CLI, the sweep's and site's models,
# validation, the templates' jinja2, the ledger, the Slurm backend), then exit.
LAUNCH_IMPORTS = "import slurmexp.cli, slurmexp.launch.launcher, slurmexp.backends.slurm.backend"

MAX_JOB_COUNT = 10_000      # the test cluster's (docker/slurm-cluster/conf/slurm.conf.in)


def room_for(n: int, max_jobs: int = MAX_JOB_COUNT):
    """Wait until slurmctld holds fewer than MaxJobCount - n job records. Cancelled jobs keep
    their record for MinJobAge (60 s on the test cluster) and count against MaxJobCount, so
    back-to-back launches of 8,000 runs wait here (untimed) for the last ones to be purged."""
    def before() -> None:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            held = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%i"], check=True,
                                  capture_output=True, text=True).stdout.count("\n")
            if held + n < max_jobs:
                return
            time.sleep(10)
        raise SystemExit("the test cluster's queue did not empty in 15 minutes")
    return before


def scancel_printed(out: str) -> None:
    subprocess.run(["scancel", out.split()[-1]], check=True)


def launch_rows(tmp: Path, site: Path, repeats: int, only: set,
                baseline: Path | None = None) -> list[dict]:
    home = tmp / "home-launch"
    env = {"SLURMEXP_HOME": str(home), "SLURMEXP_SITE": str(site)}
    rows = []

    def base(label: str, sweep: Path, n: int) -> Side | None:
        """The same launch with `baseline`'s slurmexp (its own ledger, the same cluster)."""
        if baseline is None:
            return None
        h = tmp / "home-launch-baseline"
        return Side(f"{label} ({baseline})", sx("launch", str(sweep), "--new"),
                    {"SLURMEXP_HOME": str(h), "SLURMEXP_SITE": str(site), "PYTHONPATH": str(baseline)},
                    tmp / "sweeps", cancel_experiment(h, {"PYTHONPATH": str(baseline)}), room_for(n))
    s1k = write_sweep(tmp / "sweeps", "bench-1k", 1000)
    # launch-8k compares slurmexp with itself: both sweeps' jobs wait (--begin), so the time is
    # the launch's, not the 2-core test cluster starting thousands of tasks on the same cores
    # while it runs (unheld, 8,000 runs measured 4.2 s against 2.2 s for 10,000 held ones).
    h1k = write_sweep(tmp / "sweeps", "bench-held-1k", 1000, ("--begin=now+2hours",))
    h8k = write_sweep(tmp / "sweeps", "bench-held-8k", 8000, ("--begin=now+2hours",))
    if "launch-1k" in only:
        peer_dir = tmp / "submitit"
        peer_dir.mkdir(exist_ok=True)
        (peer_dir / "peer.py").write_text(SUBMITIT_PEER.format(n=1000))
        rows.append(measure("launch-1k", "<= 1.0x",
                            Side("slurmexp launch 1k", sx("launch", str(s1k), "--new"), env,
                                 tmp / "sweeps", cancel_experiment(home), room_for(1000)),
                            Side("submitit map_array 1k", [sys.executable, "peer.py"], {}, peer_dir,
                                 scancel_printed, room_for(1000)), repeats,
                            base("the same launch", s1k, 1000),
                            bounds=(Side("Python importing what launch imports, nothing run",
                                         [sys.executable, "-c", LAUNCH_IMPORTS], env),)))
    if "launch-8k" in only:
        rows.append(measure("launch-8k", "<= 1.5x",
                            Side("slurmexp launch 8k held", sx("launch", str(h8k), "--new"), env,
                                 tmp / "sweeps", cancel_experiment(home), room_for(8000)),
                            Side("slurmexp launch 1k held", sx("launch", str(h1k), "--new"), env,
                                 tmp / "sweeps", cancel_experiment(home), room_for(1000)), repeats,
                            base("the same 8k launch", h8k, 8000)))
    return rows


SCALE_VERSION = "26.05"
SCALE_MAX_JOB_COUNT = 250_000


def root_cluster(version: str, *args: str, max_jobs: int | None = None) -> str:
    env = dict(os.environ, **({"SX_MAX_JOB_COUNT": str(max_jobs)} if max_jobs else {}))
    return subprocess.run(["bash", str(REPO / "docker/slurm-cluster/root-cluster.sh"), version, *args],
                          env=env, check=True, capture_output=True, text=True).stdout


def scale_rows(tmp: Path, repeats: int, sizes=(1000, 10_000, 100_000)) -> list[dict]:
    """Launches of growing sweeps on a cluster whose MaxJobCount admits 100,000 runs: the
    26.05 root brought up (untimed) with a raised MaxJobCount, restored after. The jobs wait
    `--begin=now+2hours` and are cancelled by experiment after each launch; each launch
    first waits (untimed) for the controller to purge the last one's records (MinJobAge)."""
    root_cluster(SCALE_VERSION, "up", max_jobs=SCALE_MAX_JOB_COUNT)
    try:
        path = next(line.split('"')[1].split(":")[0] for line in root_cluster(SCALE_VERSION, "env")
                    .splitlines() if line.startswith("export PATH="))
        # The root's site.toml (made by `slurmexp site discover` at the tests' MaxJobCount),
        # with the raised one: launch checks a sweep against both.
        root_site = Path(path).with_name(Path(path).name.replace(".bin", ".site.toml"))
        site = tmp / "scale-site.toml"
        site.write_text(root_site.read_text().replace(
            f"max_job_count = {MAX_JOB_COUNT}", f"max_job_count = {SCALE_MAX_JOB_COUNT}"))
        home = tmp / "home-scale"
        env = {"SLURMEXP_HOME": str(home), "SLURMEXP_SITE": str(site),
               "PATH": f"{path}:{os.environ['PATH']}"}
        old_path = os.environ["PATH"]
        os.environ["PATH"] = env["PATH"]       # room_for's squeue asks this cluster
        sides = []
        for n in sizes:
            sweep = write_sweep(tmp / "sweeps", f"bench-scale-{n}", n, ("--begin=now+2hours",))
            sides.append(Side(f"launch {n:,}", sx("launch", str(sweep), "--new"), env, tmp / "sweeps",
                              cancel_experiment(home, env), room_for(n, SCALE_MAX_JOB_COUNT)))
        for _ in range(repeats):
            for side in sides:
                side.run_once()
        rows = []
        base = statistics.median(sides[0].walls) / sizes[0]
        for n, side in zip(sizes, sides):
            t = statistics.median(side.walls)
            rows.append({"row": f"launch-{n}", "ours_s": round(t, 3), "per_run_ms": round(1000 * t / n, 3),
                         "ours_rss_mib": round(max(side.rss_mib)), "goal": "time per run flat"})
            print(f"launch-scale {n:>7,} runs {t:8.2f} s {max(side.rss_mib):5.0f} MiB | "
                  f"{1000 * t / n:6.3f} ms/run | {t / n / base:5.2f}x the 1,000-run launch's time "
                  f"per run (Slurm {SCALE_VERSION}, MaxJobCount {SCALE_MAX_JOB_COUNT})", flush=True)
        os.environ["PATH"] = old_path
        return rows
    finally:
        root_cluster(SCALE_VERSION, "up")       # MaxJobCount back to the tests' 10,000


def held_launch(tmp: Path, site: Path, home: Path, n: int) -> str:
    """A launch of n runs whose jobs stay PENDING for two hours (`--begin`), for reconcile rows.
    (SBATCH_HOLD in sbatch's environment does not hold an array whose script has #SBATCH lines
    on Slurm 22.05: its tasks ran and the passes measured them ending.)"""
    sweep = write_sweep(tmp / "sweeps", f"bench-held-{n}", n, ("--begin=now+2hours",))
    room_for(n)()
    env = child_env(SLURMEXP_HOME=str(home), SLURMEXP_SITE=str(site))
    out = subprocess.run(sx("launch", str(sweep), "--new"), cwd=sweep.parent, env=env, check=True,
                         capture_output=True, text=True).stdout
    return out.split()[-1]


def copy_ledger(src: Path, dst: Path) -> None:
    """SQLite's backup of a ledger no process has open (WAL included) onto `dst`."""
    a, b = sqlite3.connect(src), sqlite3.connect(dst)
    try:
        a.backup(b)
    finally:
        b.close()
        a.close()


def restore_ledger(home: Path, snapshot: Path):
    """Before each recording pass, untimed: the ledger as launch left it (every attempt
    SUBMITTED), so that every measured pass records the same 2,000 new PENDING states."""
    def before() -> None:
        copy_ledger(snapshot, home / "ledger.db")
    return before


def sacct_argv_of_a_pass(tmp: Path, env: dict) -> list[str]:
    """The sacct argv a reconcile pass runs, caught by a PATH shim that logs and passes on."""
    shim = tmp / "shim"
    shim.mkdir(exist_ok=True)
    log = tmp / "sacct-argv.json"
    real = shutil.which("sacct")
    (shim / "sacct").write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                                f"open({str(log)!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
                                f"os.execv({real!r}, [{real!r}, *sys.argv[1:]])\n")
    (shim / "sacct").chmod(0o755)
    full = child_env(**env, PATH=f"{shim}:{os.environ['PATH']}")
    subprocess.run(sx("reconcile", "-q"), env=full, check=True)
    return [real, *json.loads(log.read_text())]


def make_ledger(root: Path, n: int, metrics: bool, stored: bool = True) -> None:
    """bench_report's synthetic ledger, made in a child process: this one stays small, because a
    child's max RSS counts the memory of the process it was forked from (Linux rusage)."""
    subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(REPO / 'bench')!r}); "
                    f"from bench_report import make_ledger; "
                    f"make_ledger(__import__('pathlib').Path({str(root)!r}), {n}, {metrics}, {stored})"],
                   env=child_env(), check=True)


RUN_ARGV = ("import subprocess, sys; "
            "subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True)")


def reconcile_rows(tmp: Path, site: Path, repeats: int, only: set,
                   baseline: Path | None = None) -> list[dict]:
    rows, exps = [], []
    home = tmp / "home-reconcile"
    env = {"SLURMEXP_HOME": str(home), "SLURMEXP_SITE": str(site)}

    def base(label: str, **kw) -> Side | None:
        """The same pass with `baseline`'s slurmexp, on the same ledger (the steady pass writes
        nothing; the recording one has the ledger restored before each run, as ours)."""
        return Side(f"{label} ({baseline})", sx("reconcile", "-q"),
                    {**env, "PYTHONPATH": str(baseline)}, **kw) if baseline else None
    try:
        exps.append((home, held_launch(tmp, site, home, 2000)))
        snapshot = tmp / "ledger-launched.db"
        copy_ledger(home / "ledger.db", snapshot)
        if only & {"reconcile-2k", "reconcile-2k-steady"}:
            sacct = sacct_argv_of_a_pass(tmp, env)     # this pass records the 2,000 PENDING
            floor = Side("its sacct alone", sacct, {"SLURM_TIME_FORMAT": "standard"})

            def bounds() -> tuple[Side, ...]:
                """A Python process that only runs that sacct; slurmexp's CLI starting."""
                return (Side("python3 running its sacct", [sys.executable, "-c", RUN_ARGV, *sacct],
                             {"SLURM_TIME_FORMAT": "standard"}),
                        Side("slurmexp --version", sx("--version"), env))
        if "reconcile-2k-steady" in only:
            rows.append(measure("reconcile-2k-steady", "<= 1.2x",
                                Side("pass, 2,000 pending, nothing new", sx("reconcile", "-q"), env),
                                floor, repeats, base("the same pass"), bounds()))
        if "reconcile-2k" in only:
            floor.walls, floor.rss_mib = [], []
            rows.append(measure("reconcile-2k", "<= 1.2x",
                                Side("pass recording 2,000 new PENDING", sx("reconcile", "-q"), env,
                                     before=restore_ledger(home, snapshot)),
                                floor, repeats, base("the same pass",
                                                     before=restore_ledger(home, snapshot)),
                                bounds()))
        if "reconcile-history" in only:
            sides = []
            for n in (1000, 100_000):
                h = tmp / f"home-history-{n}"
                if not (h / "ledger.db").exists():
                    make_ledger(h, n, metrics=False)     # n finished runs (another experiment)
                exps.append((h, held_launch(tmp, site, h, 200)))
                subprocess.run(sx("reconcile", "-q"), check=True,     # the one-off work, untimed
                               env=child_env(SLURMEXP_HOME=str(h)))
                sides.append(Side(f"pass, {n:,} finished in history", sx("reconcile", "-q"),
                                  {"SLURMEXP_HOME": str(h), "SLURMEXP_SITE": str(site)}))
            rows.append(measure("reconcile-history", "<= 1.05x", sides[1], sides[0], repeats))
    finally:
        for h, exp_id in exps:
            subprocess.run(sx("cancel", exp_id), env=child_env(SLURMEXP_HOME=str(h)), capture_output=True)
    return rows


# --- the ledger-only rows -------------------------------------------------------------------

EXP = "bench-0123abcd"      # bench_report's experiment


# report-csv's bound: what `report --format csv` reads (`Ledger.report_rows`: each run joined
# with its attempts) fetched and written with csv.writer, nothing derived or formatted.
RAW_ROWS = """\
import csv
from slurmexp.ledger import Ledger
rows = Ledger(%r, mode="read").report_rows([%r])
with open(%r, "w", newline="") as out:
    csv.writer(out).writerows(rows)
"""


def ledger_rows(tmp: Path, repeats: int, only: set) -> list[dict]:
    root = tmp / "report"
    if not (root / "ledger.db").exists():
        make_ledger(root, 100_000, metrics=True)
    led = str(root / "ledger.db")
    rows = []
    for name, stored in (("report-csv", True), ("report-csv-files", False)):
        if name not in only:
            continue
        at = root if stored else tmp / "report-files"
        if not (at / "ledger.db").exists():
            make_ledger(at, 100_000, metrics=True, stored=False)
        db = str(at / "ledger.db")
        read_sql = ("import sqlite3, pandas; c = sqlite3.connect(%r); "
                    "print(len(pandas.read_sql('SELECT * FROM runs', c)))" % db)
        label = "report --format csv" + ("" if stored else ", metrics files")
        rows.append(measure(name, "<= 2x",
                            Side(label, sx("--ledger", db, "report", EXP, "--format",
                                           "csv", "-o", str(tmp / "r.csv"))),
                            Side("pandas.read_sql of runs", [sys.executable, "-c", read_sql]), repeats,
                            bounds=(Side("the report's rows read and written as they are",
                                         [sys.executable, "-c", RAW_ROWS % (db, EXP, str(tmp / "raw.csv"))]),)))
    if "status-exp" in only:
        rows.append(measure("status-exp", "<= 1 s",
                            Side("status EXP", sx("--ledger", led, "status", EXP)),
                            Side("status EXP --format json", sx("--ledger", led, "status", EXP,
                                                                "--format", "json")), repeats))
    return rows


ROWS = ["launch-1k", "launch-8k", "launch-scale", "reconcile-2k", "reconcile-2k-steady", "reconcile-history",
        "report-csv", "report-csv-files", "status-exp"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", nargs="+", choices=ROWS, default=ROWS)
    parser.add_argument("--keep", type=Path, help="keep the ledgers and sweeps here (and reuse them)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--baseline", type=Path, metavar="CHECKOUT",
                        help="reconcile and launch rows: also time the same pass or launch with this "
                             "checkout's slurmexp (e.g. main's worktree), interleaved (a pass on the "
                             "same ledger)")
    ns = parser.parse_args()
    only = set(ns.only)
    tmp = ns.keep or Path(tempfile.mkdtemp(prefix="sx-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    site = REPO / "site.toml"
    # Byte-compiled, as an installed slurmexp is (pip compiles at install): with
    # PYTHONDONTWRITEBYTECODE set and no __pycache__, every measured process would compile
    # slurmexp's sources first (~0.12 s of a reconcile pass on this machine).
    for tree in (REPO, *([ns.baseline.resolve()] if ns.baseline else [])):
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "slurmexp")], check=True)
    print(f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; medians of {ns.repeats}, interleaved; "
          f"ours | peer | ratio", flush=True)
    try:
        rows = ledger_rows(tmp, ns.repeats, only) if only & {
            "report-csv", "report-csv-files", "status-exp"} else []
        if only & {"launch-1k", "launch-8k"}:
            rows += launch_rows(tmp, site, ns.repeats, only,
                                ns.baseline.resolve() if ns.baseline else None)
        if "launch-scale" in only:
            rows += scale_rows(tmp, ns.repeats)
        if only & {"reconcile-2k", "reconcile-2k-steady", "reconcile-history"}:
            rows += reconcile_rows(tmp, site, ns.repeats, only,
                                   ns.baseline.resolve() if ns.baseline else None)
    finally:
        if not ns.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    if ns.json:
        ns.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
