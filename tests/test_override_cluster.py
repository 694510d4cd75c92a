"""[[override]] against the REAL test cluster: two resource groups land as two arrays with the
resources each asked for (as sacct reports them), and a timed-out run of one group escalates
within its own group's limits (its partition's MaxTime), not the first group's."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from clusterlib import CURRENT

from slurmexp.backends.slurm.backend import SlurmBackend
from slurmexp.launch.launcher import launch
from slurmexp.reconcile import cancel
from slurmexp.reconcile import one_pass as rc
from slurmexp.states import TERMINAL_STATES

pytestmark = pytest.mark.cluster

SITE = CURRENT.site_toml


@pytest.fixture
def ledger(cluster_ledger):
    return cluster_ledger


@pytest.fixture
def backend(cluster):
    return SlurmBackend(cluster=CURRENT.name)


def write_sweep(folder: Path) -> Path:
    """Run 0 (group 0: partition cpu, 100M, 3 min) ends at once; run 1 ([[override]]: partition
    debug, MaxTime 5 min in site.toml, 200M, 1 min) outlives its limit. Escalation x10 would
    ask 10 min, which group 0's partition allows and group 1's does not."""
    folder.mkdir(parents=True)
    text = "\n".join([
        'name = "ov-cluster"', 'command = "bash -c {cmd}"', 'allow_unused = ["i"]',
        "[[zip]]", "i = [0, 1]", f"cmd = [{json.dumps('sleep 1')}, {json.dumps('sleep 150')}]",
        "[resources]", 'partition = "cpu"', "cpus = 1", 'mem = "100M"', 'time = "00:03:00"',
        "[[override]]", "where = { i = 1 }", 'partition = "debug"', 'mem = "200M"', 'time = "00:01:00"',
        "[retry]", "max_attempts = 3", "escalate = true", "escalate_factor = 10.0", "backoff_s = 0",
    ])
    path = folder / "sweep.toml"
    path.write_text(text + "\n")
    return path


def sacct_rows(cluster, job_id: str, since: str, timeout: float = 30) -> list[dict]:
    """The allocation rows of `job_id` (array tasks, or the pending array), once they have a limit."""
    deadline = time.monotonic() + timeout
    while True:
        rows = [r for r in cluster.sacct([job_id], "jobid,partition,timelimit,reqmem,state", since=since)
                if r["jobid"].split("_")[0] == job_id and r["timelimit"]]
        if rows or time.monotonic() > deadline:
            return rows
        time.sleep(1)


def test_two_groups_two_arrays_and_escalation_within_the_groups_own_limits(ledger, backend, cluster, tmp_path):
    result = launch(write_sweep(tmp_path / "sweep"), SITE, backend="slurm", ledger=ledger)
    assert result.submitted and len(result.job_ids) == 2 and not result.pending_intents, result
    exp_id = result.exp_id
    subs = sorted(ledger.submissions(exp_id), key=lambda s: s["chunk"])
    assert [s["chunk"] for s in subs] == [0, 1]
    runs = {r["run_id"]: r for r in ledger.runs(exp_id)}
    by_chunk = {r["chunk"]: r for r in runs.values()}
    assert set(by_chunk) == {0, 1}
    seen = {}
    for sub in subs:
        rows = sacct_rows(cluster, sub["job_id"], sub["submit_time"] or CURRENT.since([]))
        assert rows, sub
        seen[sub["chunk"]] = {(r["partition"], r["timelimit"], r["reqmem"]) for r in rows}
    assert seen == {0: {("cpu", "00:03:00", "100M")}, 1: {("debug", "00:01:00", "200M")}}, seen

    run1 = by_chunk[1]["run_id"]
    deadline = time.monotonic() + 240
    while True:
        summary = rc.reconcile_pass(ledger, backend, grace_s=120)
        assert summary.ok, summary.format(verbose=True)
        attempts = ledger.attempts(exp_id, run_id=run1)
        if len(attempts) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(3)
    first, retry = attempts[:2]
    assert first["state"] == "TIMEOUT" and retry["state"] not in TERMINAL_STATES, attempts
    assert ledger.runs(exp_id, state={"COMPLETED"})[0]["chunk"] == 0
    # The retry asks for group 1's partition limit (debug, 5 min), not 10 min: escalation read
    # the group's own caps. Its memory stays the group's own 200M.
    assert retry["submit_time"]
    rows = sacct_rows(cluster, retry["job_id"], retry["submit_time"])
    assert rows and {(r["partition"], r["timelimit"], r["reqmem"]) for r in rows} == \
        {("debug", "00:05:00", "200M")}, rows
    assert cancel.cancel_experiment(ledger, backend, exp_id, reason="cancelled by test") == 1
