"""The test cluster itself behaves like the Slurm the rest of slurmexp is designed against.

Each test asserts on what squeue/sacct report, not on exit codes alone.
"""
from __future__ import annotations

import subprocess
import time

import pytest

from slurmexp.states import SLURM_FINAL_STATES as FINISHED

pytestmark = pytest.mark.cluster


def test_cpu_array_runs_on_cpu_nodes(cluster):
    job = cluster.sbatch("--array=0-5", "-p", cluster.cpu_partition, wrap="sleep 1")
    rows = cluster.wait_states([job], FINISHED, expect_rows=6)
    tasks = {r["jobid"]: r for r in rows}
    assert set(tasks) == {f"{job}_{i}" for i in range(6)}
    for row in rows:
        assert row["state"] == "COMPLETED"
        assert row["nodelist"] in cluster.cpu_nodes
    # Array task ids are not array id + index: JobIDRaw is the task's own job id.
    raw = {r["jobidraw"] for r in rows}
    assert len(raw) == 6


def test_typed_gpu_job_lands_on_a100_node(cluster):
    job = cluster.sbatch("-p", cluster.gpu_partition, "--gres=gpu:a100:1",
                         wrap='test "$SLURM_GPUS_ON_NODE" = 1')
    (row,) = cluster.wait_states([job], FINISHED)
    assert row["state"] == "COMPLETED", row
    assert row["nodelist"] == "g1"
    assert "gres/gpu:a100=1" in row["alloctres"]
    assert "gres/gpu=1" in row["alloctres"]


def test_v100_job_lands_on_v100_node(cluster):
    job = cluster.sbatch("-p", cluster.gpu_partition, "--gres=gpu:v100:2", wrap="true")
    (row,) = cluster.wait_states([job], FINISHED)
    assert row["nodelist"] == "g2"
    assert "gres/gpu=2" in row["alloctres"]


def test_job_over_debug_max_time_pends_with_partition_time_limit(cluster):
    job = cluster.sbatch("-p", cluster.debug_partition, "--time=00:30:00", wrap="true")
    try:
        deadline = time.monotonic() + 30
        reason = None
        while time.monotonic() < deadline:
            rows = cluster.squeue([job])
            if rows and rows[0][2] == "PartitionTimeLimit":
                reason = rows[0][2]
                break
            time.sleep(1)
        assert reason == "PartitionTimeLimit", rows
        assert rows[0][1] == "PENDING"
    finally:
        subprocess.run(["scancel", job], check=False)


def test_reservation_job_lands_on_reserved_node(cluster):
    job = cluster.sbatch(f"--reservation={cluster.reservation}", "--qos=normal", wrap="true")
    rows = cluster.wait_states([job], FINISHED, fields="jobid,state,nodelist,reservation,qos")
    # slurmdbd can record the reservation a moment after the job's end.
    deadline = time.monotonic() + 20
    while not rows[0]["reservation"] and time.monotonic() < deadline:
        time.sleep(1)
        rows = cluster.sacct([job], "jobid,state,nodelist,reservation,qos")
    assert rows[0]["state"] == "COMPLETED"
    assert rows[0]["nodelist"] == cluster.reserved_node
    assert rows[0]["reservation"] == cluster.reservation
    assert rows[0]["qos"] == "normal"


def test_job_outside_reservation_avoids_reserved_node(cluster):
    job = cluster.sbatch("--array=0-7", "-p", cluster.cpu_partition, wrap="sleep 1")
    rows = cluster.wait_states([job], FINISHED, expect_rows=8)
    assert cluster.reserved_node not in {r["nodelist"] for r in rows}


def test_low_qos_job_is_preempted_and_requeued(cluster):
    node = "c2"
    low = cluster.sbatch("--requeue", "--qos=low", "-p", cluster.cpu_partition, f"--nodelist={node}",
                         "--exclusive", wrap="sleep 300")
    _wait_running(cluster, low)
    high = cluster.preempt(node, seconds=3)
    try:
        deadline = time.monotonic() + 60
        rows = []
        while time.monotonic() < deadline:
            rows = cluster.sacct([low], "jobid,state,submit,reason", duplicates=True)
            states = [r["state"] for r in rows]
            if "PREEMPTED" in states and len(rows) >= 2:
                break
            time.sleep(1)
        states = [r["state"] for r in rows]
        assert "PREEMPTED" in states, rows
        # Requeue: same job id, a second row with a new submit time.
        assert len({r["submit"] for r in rows}) >= 2, rows
        (hi,) = cluster.wait_states([high], FINISHED, fields="jobid,state,nodelist,qos")
        assert hi["qos"] == "high" and hi["nodelist"] == node
    finally:
        subprocess.run(["scancel", low, high], check=False)


def test_node_failure_under_running_job_gives_node_fail(cluster):
    node = "c1"
    job = cluster.sbatch("-p", cluster.cpu_partition, f"--nodelist={node}", wrap="sleep 300")
    _wait_running(cluster, job)
    try:
        cluster.fail_node(node)
        (row,) = cluster.wait_states([job], FINISHED)
        assert row["state"] in ("NODE_FAIL",), row
        assert row["nodelist"] == node
    finally:
        cluster.resume_node(node)


def _wait_running(cluster, job: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = cluster.squeue([job])
        if rows and rows[0][1] == "RUNNING":
            return
        time.sleep(0.5)
    raise AssertionError(f"job {job} did not start: {cluster.squeue([job])}")


@pytest.mark.destructive(wipes_state=True)
def test_reset_restarts_job_ids_and_sacct_keeps_old_jobs(cluster):
    before = cluster.sbatch("-p", cluster.cpu_partition, wrap="true")
    cluster.wait_states([before], FINISHED)
    cluster.reset()
    first = cluster.sbatch("-p", cluster.cpu_partition, wrap="true")
    assert first == "1", (first, before)
    cluster.wait_states([first], FINISHED)
    # Again: on a fresh machine no job 1 may be in accounting from before this test (the first
    # job this cluster ever ran can be 2), so the test makes both of its own.
    cluster.reset()
    again = cluster.sbatch("-p", cluster.cpu_partition, wrap="true")
    assert again == "1", (again, first)
    cluster.wait_states([again], FINISHED)
    # sacct now holds two different jobs under the id 1, both from this test.
    rows = cluster.sacct([first], "jobid,state,submit", duplicates=True, since=cluster.since([]))
    assert len({r["submit"] for r in rows}) >= 2, rows
    assert {r["state"] for r in rows} == {"COMPLETED"}, rows
