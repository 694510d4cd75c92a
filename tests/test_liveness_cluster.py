"""[liveness] on the REAL test cluster (issue 12, Liveness): three sweeps launched through the
product's launch path, reconciled every two seconds by real passes, all within about a minute.

- hang: sleeps forever, printing nothing; stall_after = "20s", stall_action = "requeue",
  max_attempts = 2. Each attempt becomes STALLED, is cancelled in Slurm (sacct says CANCELLED)
  and recorded CANCELLED, infrastructure; the first is retried as a new job, the second is not.
- chatty: prints every 3 s for about 45 s, same [liveness] table: never STALLED, COMPLETED with
  one attempt (a healthy long run is never flagged).
- frozen: quiet for 24 s while its heartbeat (every 2 s, no stall_after) goes on: not flagged;
  then the command stops the task script's heartbeat loop (SIGSTOP), as a frozen node would, and
  the next passes show it STALLED with "no heartbeat since T: the job may be hung or its node
  lost" while Slurm still says RUNNING.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from clusterlib import CURRENT
from test_reconcile_cluster import no_duplicates, reconcile_until, sacct_field, write_sweep

from slurmexp import layout
from slurmexp.backends.slurm.backend import SlurmBackend
from slurmexp.launch.launcher import launch
from slurmexp.states import TERMINAL_STATES
from slurmexp.timeutil import parse_ts

pytestmark = pytest.mark.cluster

CLUSTER = CURRENT.name
HANG = "sleep 100000"
CHATTY = "for i in $(seq 1 15); do echo step $i; sleep 3; done"
# $PPID is the shell of command.sh, its parent the task script: stop the task script's other
# child, the heartbeat loop. The command itself goes on sleeping, silent.
FROZEN = ("sleep 24; w=$(ps -o ppid= -p $PPID); for p in $(ps -o pid= --ppid $w); do "
          "[ $p != $PPID ] && kill -STOP $p; done; echo stopped >&2; sleep 100000")


@pytest.fixture
def ledger(cluster_ledger):
    return cluster_ledger


@pytest.fixture
def backend(cluster):
    return SlurmBackend(cluster=CLUSTER)


def launch_live(ledger, base: Path, name: str, command: str, liveness: dict, **kw) -> str:
    sweep, site = write_sweep(base, name, [command], time_min=5, **kw)
    sweep.write_text(sweep.read_text() + "[liveness]\n" + "".join(
        f'{k} = "{v}"\n' for k, v in liveness.items()))
    result = launch(sweep, site, backend="slurm", ledger=ledger)
    assert result.submitted and len(result.job_ids) == 1, result
    return result.exp_id


def run_of(ledger, exp_id: str) -> dict:
    (run,) = ledger.runs(exp_id)
    return run


def to_states(ledger, exp_id: str) -> list[str]:
    return [e["to_state"] for e in ledger.events(exp_id) if e["kind"] == "state"]


def test_hung_run_is_stalled_and_requeued_healthy_ones_are_not(ledger, backend, cluster, tmp_path):
    quiet = {"heartbeat": "2s", "stall_after": "20s", "stall_action": "requeue"}
    hang = launch_live(ledger, tmp_path, "lv-hang", HANG, quiet, retry={"max_attempts": 2})
    chatty = launch_live(ledger, tmp_path, "lv-chatty", CHATTY, quiet)
    frozen = launch_live(ledger, tmp_path, "lv-frozen", FROZEN, {"heartbeat": "2s"})

    def done(led) -> bool:
        return (run_of(led, hang)["state"] in TERMINAL_STATES
                and run_of(led, chatty)["state"] in TERMINAL_STATES
                and run_of(led, frozen)["state"] == "STALLED")

    started = time.monotonic()
    reconcile_until(ledger, backend, [hang, chatty, frozen], done, timeout=110, every=2)
    took = time.monotonic() - started

    # hang: two attempts, each STALLED for no output, cancelled in Slurm, the second not retried.
    attempts = ledger.attempts(hang)
    assert [a["state"] for a in attempts] == ["CANCELLED", "CANCELLED"], attempts
    assert len({a["job_id"] for a in attempts}) == 2          # the retry was a new job
    for a in attempts:
        assert a["failure_class"] == "infrastructure", a
        assert a["reason"].startswith("STALLED: no output since "), a["reason"]
        assert 'stall_action = "requeue"' in a["reason"]
        folder = layout.attempt_dir(run_of(ledger, hang)["run_dir"], a["job_key"])
        assert layout.time_written(folder, layout.HEARTBEAT)          # it was beating all along
        assert (folder / layout.STDOUT).read_text() == ""
    assert "no retries left (2 of 2 attempts)" in attempts[1]["reason"]
    assert run_of(ledger, hang)["state"] == "CANCELLED"
    for a in attempts:
        deadline = time.monotonic() + 30
        while True:
            rows = sacct_field(cluster, a["job_key"], "jobid,state")
            if rows and rows[0]["state"].startswith("CANCELLED"):
                break
            assert time.monotonic() < deadline, (a["job_key"], rows)
            time.sleep(1)
    no_duplicates(ledger, hang)

    # chatty: printed every 3 s for longer than stall_after: never STALLED, one attempt.
    assert run_of(ledger, chatty)["state"] == "COMPLETED"
    assert len(ledger.attempts(chatty)) == 1 and "STALLED" not in to_states(ledger, chatty)

    # frozen: STALLED by its heartbeat while Slurm still says RUNNING, not before the loop stopped.
    (a,) = ledger.attempts(frozen)
    assert a["state"] == "STALLED" and a["failure_class"] is None
    assert a["reason"].startswith("no heartbeat since ") and a["reason"].endswith(
        ": the job may be hung or its node lost"), a["reason"]
    folder = layout.attempt_dir(run_of(ledger, frozen)["run_dir"], a["job_key"])
    assert (folder / layout.STDERR).read_text() == "stopped\n"
    beat = layout.time_written(folder, layout.HEARTBEAT)
    assert beat in a["reason"]
    time.sleep(3)
    assert layout.time_written(folder, layout.HEARTBEAT) == beat          # the loop is stopped
    assert to_states(ledger, frozen).count("STALLED") == 1
    (event,) = [e for e in ledger.events(frozen) if e["to_state"] == "STALLED"]
    stopped_at = (folder / layout.STDERR).stat().st_mtime
    assert parse_ts(event["ts"]).timestamp() >= stopped_at + 10 * 2 - 2   # 10 beats missed first
    assert [q.state for q in backend.squeue_rows([a["job_id"]])] == ["RUNNING"]
    assert took < 110
