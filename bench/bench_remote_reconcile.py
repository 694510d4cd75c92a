"""A whole `slurmexp reconcile` pass over a 500-run sweep, from a laptop over SSH against the
same pass run on the login node itself, both against the Slurm 24.11 root's cluster: one
ledger launched over SSH (the sshd in that root, docker/slurm-cluster/remote-sshd.sh), one
launched with that cluster's own commands (root-cluster.sh's wrappers, which run them in the
root, as a login node would). The sweeps' tasks are held (`--begin` two hours ahead), so every
pass has 500 active runs. Whole processes, interleaved; also counts the SSH commands the node
served per pass. Run as root:

    PYTHONPATH=$PWD flock -o /tmp/cluster.lock python3 bench/bench_remote_reconcile.py [RUNS] [REPEATS]
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from remotelib import RemoteNode, laptop_path  # noqa: E402

SWEEP = """name = "{name}"
command = "true {{x}}"
[params]
x = {values}
[resources]
time = "00:05:00"
mem = "50M"
sbatch = ["--begin=now+2hours"]
"""


def sx(ledger: Path, *args: str, env: dict, cwd: Path) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "slurmexp", "--ledger", str(ledger), *args], env=env,
                          cwd=cwd, capture_output=True, text=True, timeout=600)
    took = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"slurmexp {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return took, proc.stdout


def prepare(runs: int) -> tuple[RemoteNode, Path, dict, dict]:
    """Both ledgers, each with a launched `runs`-run sweep whose tasks are held: (the node, the
    work folder, label -> (ledger, site, env), label -> experiment id)."""
    node = RemoteNode.up()
    info = json.loads(subprocess.run(["bash", str(REPO / "docker/slurm-cluster/root-cluster.sh"), "24.11", "info"],
                                     capture_output=True, text=True, check=True).stdout)
    work = Path(tempfile.mkdtemp(prefix="sx-bench-remote-"))
    base = dict(os.environ, PYTHONPATH=str(REPO))
    # The login node: the root's Slurm commands first on PATH, its site.toml.
    node_env = dict(base, PATH=f"{info['bin']}:{os.environ['PATH']}")
    # The laptop: no Slurm command at all; a [remote] site discovered over SSH.
    laptop_env = dict(base, PATH=laptop_path(work))
    remote_site = work / "remote-site.toml"
    sx(work / "discover.db", "site", "discover", "-o", str(remote_site), "--remote", f"{node.user}@{node.host}",
       "--port", str(node.port), "--identity", node.identity_file,
       *[a for o in node.ssh_options for a in ("--ssh-option", o)],
       "--remote-root", f"{node.remote_root}/bench-{work.name}", env=laptop_env, cwd=work)
    sides = {"login node": (work / "node.db", info["site_toml"], node_env),
             "laptop over ssh": (work / "laptop.db", str(remote_site), laptop_env)}
    exps = {}
    for label, (ledger, site, env) in sides.items():
        folder = work / label.replace(" ", "-")
        folder.mkdir()
        sweep = folder / "sweep.toml"
        sweep.write_text(SWEEP.format(name=f"bench-{label.split()[0]}", values=list(range(runs))))
        _, out = sx(ledger, "launch", str(sweep), "--site", site, env=env, cwd=folder)
        exps[label] = out.strip().splitlines()[-1]
    return node, work, sides, exps


def cancel(work: Path, sides: dict, exps: dict) -> None:
    for label, (ledger, _site, env) in sides.items():
        subprocess.run([sys.executable, "-m", "slurmexp", "--ledger", str(ledger), "cancel", exps[label]],
                       env=env, cwd=work, capture_output=True, timeout=300)


def main(runs: int = 500, repeats: int = 5) -> None:
    node, work, sides, exps = prepare(runs)
    times: dict[str, list[float]] = {label: [] for label in sides}
    served = []
    try:
        for _ in range(repeats):
            for label, (ledger, _site, env) in sides.items():
                before = node.commands_run()
                took, _ = sx(ledger, "reconcile", env=env, cwd=work)
                times[label].append(took)
                if label.startswith("laptop"):
                    served.append(node.commands_run() - before)
    finally:
        cancel(work, sides, exps)
    a, b = statistics.median(times["laptop over ssh"]), statistics.median(times["login node"])
    print(f"{runs} active runs, medians of {repeats} interleaved whole `slurmexp reconcile` processes:")
    print(f"  laptop over ssh {a:.3f} s  {[round(x, 3) for x in times['laptop over ssh']]}")
    print(f"  login node      {b:.3f} s  {[round(x, 3) for x in times['login node']]}")
    print(f"  ratio {a / b:.2f}x; ssh commands the node ran per pass: {served}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
