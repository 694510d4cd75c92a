"""[liveness] stall_after over SSH (issue 12, Liveness for every backend): the same hung and
chatty runs as tests/test_liveness_cluster.py, launched from "a laptop" (no Slurm command on
PATH) on the Slurm 24.11 root's cluster behind the real sshd, and reconciled by `slurmexp
reconcile` processes. The mirror has no stdout of the runs: the pass's one round trip asks the
cluster how long ago each running attempt's output changed."""
from __future__ import annotations

import time

import pytest
from remotelib import launch, sx

from slurmexp import layout
from slurmexp.ledger import Ledger
from slurmexp.states import TERMINAL_STATES

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("no_local_slurm")]

LIVE = """#!/bin/bash
# x=1 hangs without a word; x=2 prints every 3 s for about 45 s.
if [ "$1" = 1 ]; then sleep 100000; fi
for i in $(seq 1 15); do echo "step $i"; sleep 3; done
"""


def test_a_hung_remote_run_is_stalled_and_requeued_a_chatty_one_is_not(remote_node, remote_sweep, tmp_path):
    sweep, site, _ = remote_sweep
    (sweep.parent / "live.sh").write_text(LIVE)
    sweep.write_text('name = "remote-live"\ncommand = "bash live.sh {x}"\nworkdir = "."\n'
                     '[params]\nx = [1, 2]\n[resources]\ntime = "00:05:00"\n'
                     '[retry]\nmax_attempts = 2\nbackoff_s = 0\n'
                     '[liveness]\nheartbeat = "2s"\nstall_after = "20s"\nstall_action = "requeue"\n')
    exp_id = launch(tmp_path, sweep, site)
    ledger = Ledger(tmp_path / "l.db")
    hang, chatty = sorted(ledger.runs(exp_id), key=lambda r: r["params"]["x"])
    deadline = time.monotonic() + 240
    passes = 0
    while True:
        before = remote_node.commands_run()
        cancelled = any(a["state"] == "CANCELLED" for a in ledger.attempts(exp_id))
        proc = sx(tmp_path, "reconcile")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        if not cancelled and not any(a["state"] == "CANCELLED" for a in ledger.attempts(exp_id)):
            # Until the first stall acts (scancel, the retry's sbatch): one ssh command a pass,
            # the output files' ages included.
            assert remote_node.commands_run() - before == 1
        passes += 1
        runs = {r["run_id"]: r for r in ledger.runs(exp_id)}
        if all(r["state"] in TERMINAL_STATES for r in runs.values()):
            break
        assert time.monotonic() < deadline, sx(tmp_path, "status", exp_id).stdout
        time.sleep(3)
    attempts = ledger.attempts(exp_id, run_id=hang["run_id"])
    assert [a["state"] for a in attempts] == ["CANCELLED", "CANCELLED"], attempts
    assert len({a["job_id"] for a in attempts}) == 2                # the retry was a new job
    for a in attempts:
        assert a["failure_class"] == "infrastructure", a
        assert a["reason"].startswith("STALLED: no output since "), a["reason"]
        # Judged by the cluster's files: the local mirror has no stdout of the run.
        folder = layout.attempt_dir(hang["run_dir"], a["job_key"])
        assert not (folder / layout.STDOUT).exists() and (folder / layout.OUTPUT_CHANGED).is_file()
    assert "no retries left (2 of 2 attempts)" in attempts[1]["reason"]
    # The chatty run printed for longer than stall_after: never STALLED, one attempt.
    (only,) = ledger.attempts(exp_id, run_id=chatty["run_id"])
    assert only["state"] == "COMPLETED"
    assert not [e for e in ledger.events(exp_id, chatty["run_id"]) if e["to_state"] == "STALLED"]
    # Slurm on the cluster says the hung jobs were cancelled.
    out = sx(tmp_path, "show", hang["run_id"])
    assert out.returncode == 0 and "CANCELLED" in out.stdout, out.stdout + out.stderr
