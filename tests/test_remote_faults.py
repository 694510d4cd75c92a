"""Connection faults on the remote path (tests/remotelib.py's sshd in the Slurm 24.11 root, no
Slurm command on the local PATH): an answer lost at each ssh call of a launch, the connection
cut during `logs --follow`,
sshd gone mid-follow, and a slow link. Cuts end the root's sshd sessions by pid, the
ControlMaster's included (remote-sshd.sh kill-sessions); the listener stays, as after a network
blip, so the next command reconnects. Reconcile with sshd down is tested in test_remote_launch.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from remotelib import FULL_PATH, launch, reconcile_until_finished, sx

from slurmexp.ledger import Ledger

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("no_local_slurm")]

SX = [sys.executable, "-m", "slurmexp"]


def remote_jobs_named(remote_node, name: str) -> list[str]:
    """The array job ids Slurm on the node has under one job name (sacct over plain ssh)."""
    argv = ["ssh", "-p", str(remote_node.port), "-i", remote_node.identity_file, "-o", "BatchMode=yes",
            *[a for o in remote_node.ssh_options for a in ("-o", o)], f"{remote_node.user}@{remote_node.host}",
            f"sacct -X -n -P -S now-1hours -o jobid --name={name}"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout
    # The node's profile is noisy: keep only job ids ("12" or "12_3").
    return sorted({line.split("_")[0] for line in out.split() if line.split("_")[0].isdigit()})


# An ssh in front of the real one: call number $SX_CUT_AT runs on the cluster as usual, but its
# answer never arrives (exit 255, as when the connection drops just before the answer): the
# worst moment for a cut, since the cluster did the work and the laptop does not know it.
LOSING_SSH = """#!/bin/bash
case " $* " in *" -O "*) exec REAL "$@" ;; esac     # the master's control commands: not counted
exec 9>>"$SX_SSH_COUNT.lock"
FLOCK -x 9                                          # a launch runs some ssh calls at once
n=$(( $(cat "$SX_SSH_COUNT" 2>/dev/null || echo 0) + 1 ))
echo "$n" > "$SX_SSH_COUNT"
exec 9>&-
if [ "$n" = "${SX_CUT_AT:-0}" ]; then
    REAL "$@" >/dev/null 2>&1
    echo "Connection to 127.0.0.1 closed by remote host." >&2
    exit 255
fi
exec REAL "$@"
"""


# An ssh in front of the real one that SIGKILLs the launch (its parent) as soon as the round trip
# carrying the real `sbatch --parsable` has come back: the job exists on the cluster, and the
# launch never got to record it.
KILLING_SSH = """#!/bin/bash
case " $* " in *" -O "*) exec REAL "$@" ;; esac
sent=$(MKTEMP)
TEE "$sent" | REAL "$@"
rc=${PIPESTATUS[1]}
if GREP -q 'sbatch --parsable' "$sent"; then RM -f "$sent"; kill -9 $PPID; exit 137; fi
RM -f "$sent"
exit $rc
"""


def test_a_launch_sigkilled_right_after_the_remote_sbatch_is_adopted_never_resubmitted(
        remote_node, remote_sweep, tmp_path):
    import os
    import shutil

    sweep, site, _root = remote_sweep
    sweep.write_text(sweep.read_text().replace('name = "remote"', 'name = "sigkilled"'))
    wrapper_dir = tmp_path / "killing-bin"
    wrapper_dir.mkdir()
    text = KILLING_SSH.replace("REAL", shutil.which("ssh") or "ssh")
    for tool in ("MKTEMP", "TEE", "GREP", "RM"):      # the laptop's PATH has no coreutils
        text = text.replace(tool, shutil.which(tool.lower(), path=FULL_PATH) or tool.lower())
    (wrapper_dir / "ssh").write_text(text)
    (wrapper_dir / "ssh").chmod(0o755)
    env = dict(os.environ, PATH=f"{wrapper_dir}:{os.environ['PATH']}")
    killed = sx(tmp_path, "launch", str(sweep), "--site", str(site), env=env)
    assert killed.returncode == -9, killed.stdout + killed.stderr
    ledger = Ledger(tmp_path / "l.db")
    (exp,) = ledger.experiments()
    assert [s["state"] for s in ledger.submissions(exp["exp_id"])] == ["INTENT"]
    # It was submitted (slurmdbd learns of a new job a moment after sbatch: wait for its record).
    deadline = time.monotonic() + 60
    while not remote_jobs_named(remote_node, f"sx.{exp['exp_id']}.000") and time.monotonic() < deadline:
        time.sleep(1)
    assert len(remote_jobs_named(remote_node, f"sx.{exp['exp_id']}.000")) == 1
    # Launching again submits nothing (the intent is the launch's), reconcile adopts the job.
    again = sx(tmp_path, "launch", str(sweep), "--site", str(site))
    assert "Traceback" not in again.stderr
    assert reconcile_until_finished(tmp_path, ledger, exp["exp_id"]) == "FINISHED"
    assert [s["state"] for s in ledger.submissions(exp["exp_id"])] == ["ADOPTED"]
    assert len(ledger.attempts(exp["exp_id"])) == 3
    assert len(remote_jobs_named(remote_node, f"sx.{exp['exp_id']}.000")) == 1       # never twice


def test_launch_whose_answer_is_lost_at_any_ssh_call_never_submits_twice(remote_node, remote_sweep, tmp_path):
    """For every ssh call a launch makes (discovery, the source sync, the run files, sbatch,
    the submit times), one launch whose answer to that call is lost: it exits 3 naming the
    cut (or, for an answer it can do without, goes on), and launching again (then reconcile)
    leaves exactly one array on the cluster."""
    import os
    import shutil

    sweep, site, _root = remote_sweep
    text = sweep.read_text()
    wrapper_dir = tmp_path / "cutting-bin"
    wrapper_dir.mkdir()
    (wrapper_dir / "ssh").write_text(LOSING_SSH.replace("REAL", shutil.which("ssh") or "ssh")
                                     .replace("FLOCK", shutil.which("flock", path=FULL_PATH) or "flock"))
    (wrapper_dir / "ssh").chmod(0o755)
    count = tmp_path / "ssh-calls"

    def env(cut_at: int) -> dict:
        count.write_text("0")
        return dict(os.environ, PATH=f"{wrapper_dir}:{os.environ['PATH']}", SX_SSH_COUNT=str(count),
                    SX_CUT_AT=str(cut_at))

    sweep.write_text(text.replace('name = "remote"', 'name = "cut-ref"'))
    ref = sx(tmp_path, "launch", str(sweep), "--site", str(site), env=env(0))
    assert ref.returncode == 0, ref.stderr
    calls = int(count.read_text())
    assert calls >= 2, calls
    outcomes = []
    for i in range(1, calls + 1):
        sweep.write_text(text.replace('name = "remote"', f'name = "cut-{i}"'))
        first = sx(tmp_path, "launch", str(sweep), "--site", str(site), env=env(i))
        outcomes.append((i, first.returncode, first.stderr.strip().splitlines()[-1:]))
        assert "Traceback" not in first.stderr, first.stderr
        if int(count.read_text()) < i:      # fewer calls this time (sources already there): no cut
            assert first.returncode == 0, (i, first.stdout, first.stderr)
            continue
        if first.returncode == 0:          # a lost answer the launch can do without (submit times)
            assert "submitted job" in first.stderr, (i, first.stderr)
            continue
        assert first.returncode == 3, (i, first.stdout, first.stderr)
        assert "unreachable since" in first.stderr and "closed by remote host" in first.stderr, first.stderr
        assert "quota ok" not in first.stderr, first.stderr          # the profile's noise is not the reason
        again = sx(tmp_path, "launch", str(sweep), "--site", str(site))
        assert again.returncode == 0, (i, outcomes, again.stdout, again.stderr)
    print(f"\na launch makes {calls} ssh calls; answers lost at each: {outcomes}")
    assert sum(rc == 3 for _, rc, _ in outcomes) >= calls // 2, outcomes
    ledger = Ledger(tmp_path / "l.db")
    exps = ledger.experiments()
    assert len(exps) == calls + 1
    for exp in exps:
        exp_id = exp["exp_id"]
        assert reconcile_until_finished(tmp_path, ledger, exp_id) == "FINISHED", exp["name"]
        subs = ledger.submissions(exp_id)
        assert len(subs) == 1 and subs[0]["state"] in ("SUBMITTED", "ADOPTED"), (exp["name"], subs)
        assert len(ledger.attempts(exp_id)) == 3, exp["name"]
        assert remote_jobs_named(remote_node, f"sx.{exp_id}.000") == [subs[0]["job_id"]], exp["name"]


def rest_of(proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
    """What is left of a process's stdout (through the stream already read from: communicate()
    would skip what its buffer holds) and its stderr, once it ends; killed after `timeout`."""
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    try:
        assert proc.stdout is not None and proc.stderr is not None
        out = proc.stdout.read()
        err = proc.stderr.read()
        proc.wait()
    finally:
        killer.cancel()
    return out, err


def slow_sweep(sweep: Path, lines: int) -> None:
    sweep.write_text(sweep.read_text().replace(
        'command = "bash train.sh {x} {run_dir}"',
        f'command = "for i in $(seq 1 {lines}); do echo line $i; sleep 1; done; bash train.sh {{x}} {{run_dir}}"'))


def follow_first_run(tmp_path: Path, remote_sweep, lines: int) -> tuple[dict, subprocess.Popen]:
    """Launch the sweep printing `lines` lines a second apart, start `logs --follow` of its first
    run and read its first line (so it is following, over SSH)."""
    sweep, site, _root = remote_sweep
    slow_sweep(sweep, lines)
    exp_id = launch(tmp_path, sweep, site)
    run = Ledger(tmp_path / "l.db").runs(exp_id)[0]
    follow = subprocess.Popen([*SX, "--ledger", str(tmp_path / "l.db"), "logs", run["run_id"], "--follow"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    assert follow.stdout is not None
    first = follow.stdout.readline()
    if not first.startswith("line 1"):
        follow.kill()
        raise AssertionError(f"logs --follow began with {first!r}")
    return run, follow


def test_logs_follow_survives_a_cut_and_ends_with_the_whole_output(remote_node, remote_sweep, tmp_path):
    run, follow = follow_first_run(tmp_path, remote_sweep, lines=12)
    try:
        remote_node.kill_sessions()                                # the master and its sessions
        time.sleep(2)
        remote_node.kill_sessions()
        out, err = rest_of(follow, timeout=180)
    finally:
        follow.kill()
    assert follow.returncode == 0, err
    lines = ["line 1", *out.splitlines()]
    assert lines[:12] == [f"line {i}" for i in range(1, 13)], lines    # nothing lost, nothing twice
    assert lines[12].startswith(f"training x={run['params']['x']} on "), lines


def test_logs_follow_with_sshd_gone_exits_3_with_the_reason(remote_node, remote_sweep, tmp_path):
    run, follow = follow_first_run(tmp_path, remote_sweep, lines=60)
    exp_id = run["exp_id"]
    try:
        remote_node.down()
        gone = time.monotonic()
        out, err = rest_of(follow, timeout=120)
        took = time.monotonic() - gone
    finally:
        follow.kill()
        remote_node.restart()
    assert follow.returncode == 3, (out, err)
    assert "unreachable" in err and "Traceback" not in err, err
    assert took < 60, f"follow took {took:.0f}s to give up"          # never a long ambiguity
    assert sx(tmp_path, "cancel", exp_id).returncode == 0


PROXY = r'''
import socket, sys, threading, time
DELAY = float(sys.argv[3])
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
def pump(read, write):
    while True:
        data = read(65536)
        if not data:
            break
        time.sleep(DELAY)
        write(data)
    try:
        s.shutdown(socket.SHUT_WR)
    except OSError:
        pass
def to_stdout(data):
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
t = threading.Thread(target=pump, args=(s.recv, to_stdout), daemon=True)
t.start()
pump(lambda n: sys.stdin.buffer.read1(n), s.sendall)
t.join()
'''


def test_a_slow_link_changes_nothing_but_time(remote_node, tmp_path):
    """Every packet held 150 ms each way (a ProxyCommand that delays what it forwards): discover,
    launch, the one-round-trip pass, logs and report work as on a fast link."""
    proxy = tmp_path / "slowproxy.py"
    proxy.write_text(PROXY)
    site = tmp_path / "site.toml"
    root = f"{remote_node.remote_root}/slow-{tmp_path.name}"
    proc = subprocess.run(
        [*SX, "site", "discover", "-o", str(site), "--remote", f"{remote_node.user}@{remote_node.host}",
         "--port", str(remote_node.port), "--identity", remote_node.identity_file,
         *[a for opt in remote_node.ssh_options for a in ("--ssh-option", opt)],
         "--ssh-option", f"ProxyCommand={sys.executable} {proxy} %h %p 0.15", "--remote-root", root],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "ProxyCommand" in site.read_text()
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.sh").write_text('printf \'{"loss": %s}\\n\' "$1" > "$2/metrics.json"; echo done $1\n')
    sweep = project / "sweep.toml"
    sweep.write_text('name = "slow-link"\ncommand = "bash train.sh {x} {run_dir}"\nworkdir = "."\n'
                     '[params]\nx = [1, 2, 3, 4]\n[resources]\ntime = "00:05:00"\n')
    exp_id = launch(tmp_path, sweep, site)
    ledger = Ledger(tmp_path / "l.db")
    served = remote_node.commands_run()
    t0 = time.monotonic()
    assert sx(tmp_path, "reconcile").returncode == 0
    one_pass = time.monotonic() - t0
    assert remote_node.commands_run() == served + 1                   # still one round trip
    assert reconcile_until_finished(tmp_path, ledger, exp_id) == "FINISHED"
    out = sx(tmp_path, "logs", ledger.runs(exp_id)[0]["run_id"])
    assert out.returncode == 0 and out.stdout.startswith("done "), out.stdout + out.stderr
    report = sx(tmp_path, "report", exp_id, "--format", "json")
    losses = sorted(v for r in json.loads(report.stdout)["runs"] for k, v in r.items() if k.endswith("loss"))
    assert losses == [1, 2, 3, 4]
    print(f"\nslow link (150 ms each way): one reconcile pass {one_pass:.2f}s")
