"""Where the time of one reconcile pass over SSH goes: the same two ledgers as
bench_remote_reconcile.py (500 held runs, launched over the 24.11 root's sshd and on the login
node itself), then

- ssh alone, through a warm ControlMaster: the mux answering (`ssh -O check`), a bare
  `ssh host true` (the login shell and its profile included), the remote command slurmexp
  sends with an empty script;
- each side's pass in this process, interleaved, REPEATS times: the file list
  (`wanted_files`), the round trip (`SshTransport.batch`'s ssh process), split by time stamps
  written on the node (the login until the wrapper starts, the wrapper until the script
  starts, each operation, the script's end until ssh returns), the parsing of the framed
  answer, of the tar and of sacct's and squeue's output, the mirror; the pass's own sacct and
  squeue times (`summary.sacct_s`: over SSH the whole read, files included);
- the modules only the laptop's pass imports (`python -X importtime`, whole processes).

Medians in milliseconds. Run as root:

    PYTHONPATH=$PWD flock -o /tmp/cluster.lock python3 bench/profile_remote_pass.py [RUNS] [REPEATS]
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_remote_reconcile import REPO, cancel, prepare  # noqa: E402

sys.path.insert(0, str(REPO))      # this tree's slurmexp in this process too

TIMES: dict[str, list[float]] = {}


def note(label: str, seconds: float) -> None:
    TIMES.setdefault(label, []).append(seconds * 1000)


def ssh_alone(node, repeats: int) -> None:
    from slurmexp.transport.ssh import remote_command

    t = node.transport(control_dir=tempfile.mkdtemp(prefix="sxp", dir="/tmp"))
    argv = t.ssh_argv()
    subprocess.run([*argv, "true"], capture_output=True, timeout=60)       # the master
    for _ in range(repeats):
        for label, cmd, body in (("ssh -O check (the mux alone)", None, b""),
                                 ("ssh host true (login shell + profile)", "true", b""),
                                 ("ssh host <slurmexp's remote command>, empty script",
                                  remote_command(0, "M"), b"")):
            started = time.perf_counter()
            if cmd is None:
                subprocess.run([*argv[:-1], "-O", "check", argv[-1]], capture_output=True, timeout=60)
            else:
                subprocess.run([*argv, cmd], input=body, capture_output=True, timeout=60)
            note(label, time.perf_counter() - started)
    t.close()


def timed_pass(side: str, ledger: Path, env: dict, work: Path) -> None:
    """One pass in this process with its pieces timed (over SSH: stamps on the node too)."""
    from slurmexp.backends.slurm import parse as sp
    from slurmexp.ledger import Ledger
    from slurmexp.reconcile import one_pass, remote_reads
    from slurmexp.transport import ssh

    restore = []

    def timed(owner, name, label, static=False):
        orig = owner.__dict__[name]
        func = orig.__func__ if static else orig

        def wrapper(*a, **k):
            started = time.perf_counter()
            try:
                return func(*a, **k)
            finally:
                note(f"{side}: {label}", time.perf_counter() - started)
        setattr(owner, name, staticmethod(wrapper) if static else wrapper)
        restore.append((owner, name, orig))

    timed(remote_reads, "wanted_files", "file list (wanted_files)")
    timed(remote_reads, "mirror", "mirror the files")
    timed(ssh, "_parse", "parse the framed answer")
    timed(ssh.SshTransport, "read_many_result", "read the tar", static=True)
    timed(sp, "parse_sacct", "parse sacct's output")
    timed(sp, "parse_squeue", "parse squeue's output")
    # Time stamps on the node: the wrapper's start (W0), the script's (W1), after each
    # operation, the script's end (W2); all on stderr, after the start line.
    for owner, name in ((ssh, "REMOTE_WRAPPER"), (ssh.SshTransport, "_snippet"), (subprocess, "run")):
        restore.append((owner, name, owner.__dict__[name]))
    wrapper, snippet, run_orig = ssh.REMOTE_WRAPPER, ssh.SshTransport._snippet, subprocess.run
    ssh.REMOTE_WRAPPER = ('echo "SXT W0 $EPOCHREALTIME" >&2; ' + wrapper
                          .replace('bash "$f"', 'echo "SXT W1 $EPOCHREALTIME" >&2; bash "$f"')
                          .replace("rc=$?; rm", 'rc=$?; echo "SXT W2 $EPOCHREALTIME" >&2; rm'))
    ssh.SshTransport._snippet = lambda self, i, op: (snippet(self, i, op)
                                                     + f'\necho "SXT {op.kind}{i} $EPOCHREALTIME" >&2')
    names = {"W0": "ssh start, mux, login shell + profile", "W1": "wrapper (script saved, size checked)",
             "W2": "the script's end (temporary files removed)", "": "wrapper's end until ssh returns"}

    def run(argv, *a, **k):
        started = time.time()
        proc = run_orig(argv, *a, **k)
        ended = time.time()
        if argv[0] == "ssh":
            note(f"{side}: round trip, in all (the ssh process)", ended - started)
            stamps = [(w[1], float(w[2])) for w in (line.split() for line in
                      proc.stderr.decode(errors="replace").splitlines()) if len(w) == 3 and w[0] == "SXT"]
            marks = [("start", started), *stamps, ("", ended)]
            for (_, t0), (what, t1) in zip(marks, marks[1:]):
                note(f"{side}: round trip: {names.get(what) or 'op ' + what}", t1 - t0)
        return proc
    subprocess.run = run
    old_path, cwd = os.environ["PATH"], os.getcwd()
    try:
        led = Ledger(ledger)
        os.environ["PATH"] = env["PATH"]
        os.chdir(work)
        started = time.perf_counter()
        summary = one_pass.reconcile_pass(led)
        note(f"{side}: the whole pass in this process", time.perf_counter() - started)
        note(f"{side}: sacct (over ssh: the round trip and its reads)", summary.sacct_s)
        note(f"{side}: squeue", summary.squeue_s)
        led.close()
    finally:
        os.chdir(cwd)
        os.environ["PATH"] = old_path
        for owner, name, orig in reversed(restore):
            setattr(owner, name, orig)


def imports_only_remote(sides: dict, work: Path) -> None:
    self_us: dict[str, dict[str, int]] = {}
    for label, (ledger, _site, env) in sides.items():
        proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "slurmexp", "--ledger", str(ledger),
                               "reconcile"], env=env, cwd=work, capture_output=True, text=True, timeout=300)
        mods = {}
        for line in proc.stderr.splitlines():
            parts = line.removeprefix("import time:").split("|")
            if line.startswith("import time:") and parts[0].strip().isdigit():
                mods[parts[2].strip()] = int(parts[0])
        self_us[label] = mods
    only = {m: us for m, us in self_us["laptop over ssh"].items() if m not in self_us["login node"]}
    note("imports only the laptop's pass makes", sum(only.values()) / 1e6)
    print("  (modules only the laptop's pass imports: "
          + ", ".join(f"{m} {us / 1000:.1f}" for m, us in sorted(only.items(), key=lambda kv: -kv[1])) + ")")


def main(runs: int = 500, repeats: int = 5) -> None:
    node, work, sides, exps = prepare(runs)
    try:
        ssh_alone(node, repeats * 3)
        for _ in range(repeats):
            for side, (ledger, _site, env) in sides.items():
                timed_pass(side, ledger, env, work)
        imports_only_remote(sides, work)
    finally:
        cancel(work, sides, exps)
    print(f"{runs} active runs; medians (ms) of {repeats} passes ({repeats * 3} for ssh alone), "
          f"load average {os.getloadavg()[0]:.1f}:")
    for label, values in TIMES.items():
        print(f"  {label:60s} {statistics.median(values):7.1f}")
    print(f"  (repository {REPO})")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
