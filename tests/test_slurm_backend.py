"""SlurmBackend against the real test cluster: every call here runs real Slurm commands.

Test jobs are named sx-test-* (the cluster fixture cancels leftovers) and run under QOS high so
that other people's big arrays on the shared test cluster do not keep them waiting.
"""
from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from clusterlib import CURRENT

from slurmexp.backends.slurm import backend as slurm
from slurmexp.backends.slurm.backend import SlurmBackend, run_slurm
from slurmexp.errors import SlurmCommandError, SlurmUnavailable
from slurmexp.states import SLURM_FINAL_STATES as FINISHED

pytestmark = pytest.mark.cluster


def script(tmp_path: Path, name: str, body: str = "sleep 1", *directives: str) -> Path:
    path = tmp_path / f"{name}.sh"
    lines = ["#!/bin/bash", f"#SBATCH --job-name={name}", "#SBATCH --output=/dev/null",
             "#SBATCH --qos=high", "#SBATCH --time=00:05:00",
             *[f"#SBATCH {d}" for d in directives], body]
    path.write_text("\n".join(lines) + "\n")
    return path


def since() -> str:
    return (datetime.now() - timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%S")


def wait_rows(backend: SlurmBackend, job_ids: list[str], start: str, n: int, timeout: float = 180,
              array_ids=()):
    """Poll like reconcile does: one sacct call for all jobs, until n complete, final rows."""
    deadline = time.monotonic() + timeout
    rows = []
    while time.monotonic() < deadline:
        rows = backend.sacct_rows(job_ids, since=start, array_ids=array_ids)
        final = [r for r in rows if r.state in FINISHED and not r.incomplete and r.pending_tasks is None]
        if len(final) >= n and len(final) == len(rows):
            return rows
        time.sleep(1)
    raise AssertionError(f"{job_ids}: not {n} finished rows after {timeout}s: {rows}")


@pytest.fixture
def backend(cluster) -> SlurmBackend:
    return SlurmBackend()


def test_run_slurm_maps_missing_command_to_unavailable():
    with pytest.raises(SlurmUnavailable, match="not a job failure") as info:
        run_slurm(["sx-no-such-slurm-command", "--version"])
    assert "sx-no-such-slurm-command" in info.value.message


def test_run_slurm_timeout_is_unavailable():
    with pytest.raises(SlurmUnavailable, match="did not answer within"):
        run_slurm(["sleep", "5"], timeout=0.2)


def test_run_slurm_refusal_and_call_log(backend):
    slurm.reset_call_log()
    with pytest.raises(SlurmCommandError, match="Invalid job id"):
        run_slurm(["scontrol", "show", "job", "999999999"])
    proc = run_slurm(["scontrol", "show", "job", "999999999"], check=False)
    assert proc.returncode != 0
    assert slurm.CALL_COUNTS["scontrol"] == 2
    assert slurm.CALLS[-1].command == "scontrol" and slurm.CALLS[-1].seconds >= 0


def test_submit_and_sacct(backend, tmp_path):
    start = since()
    result = backend.submit(script(tmp_path, "sx-test-backend-submit", "exit 3"), cwd=tmp_path)
    assert result.job_id.isdigit() and result.cluster is None
    (row,) = wait_rows(backend, [result.job_id], start, 1)
    assert (row.job_id, row.state, row.exit_code) == (result.job_id, "FAILED", 3)
    assert row.job_name == "sx-test-backend-submit" and row.qos == "high"


def test_test_only(backend, tmp_path):
    ok, message = backend.test_only(script(tmp_path, "sx-test-backend-testonly"))
    assert ok and "to start at" in message
    ok, message = backend.test_only(script(tmp_path, "sx-test-backend-testonly"),
                                    ["--partition=nosuchpartition"])
    assert not ok and "invalid partition" in message.lower()
    ok, message = backend.test_only(script(tmp_path, "sx-test-backend-testonly"),
                                    ["--partition=gpu", "--gres=gpu:h100:1"])
    assert not ok and "Requested node configuration is not available" in message


def test_finished_array_rows_are_joined(backend, tmp_path):
    start = since()
    # MaxRSS is sampled every JobAcctGatherFrequency (5 s here): a step shorter than that has
    # none, so the step holds 50 MiB for 6 s.
    body = 'srun python3 -c "import time; x = bytearray(50 << 20); time.sleep(6)"'
    result = backend.submit(script(tmp_path, "sx-test-backend-array", body,
                                   "--array=0-3", "--partition=cpu", "--mem=300M"))
    array = result.job_id
    rows = wait_rows(backend, [array], start, 4, array_ids=[array])
    assert sorted(r.array_task for r in rows) == [0, 1, 2, 3]
    assert {r.array_job_id for r in rows} == {array}
    assert {r.job_id for r in rows} == {f"{array}_{i}" for i in range(4)}
    assert all(r.state == "COMPLETED" for r in rows)
    raw = {r.job_id_raw for r in rows}
    assert len(raw) == 4 and array in raw  # one task keeps the array's own id
    # The srun step (".0") and the batch step were folded into each task's row.
    assert all(50 <= r.max_rss_mb < 300 for r in rows), [r.max_rss_mb for r in rows]
    # Orphan adoption: the same rows found by name alone.
    by_name = backend.sacct_rows([], since=start, names=["sx-test-backend-array"])
    assert {r.job_id for r in by_name} >= {f"{array}_{i}" for i in range(4)}


def test_squeue_rows_submit_times_and_cancel(backend, tmp_path):
    start = since()
    held = backend.submit(script(tmp_path, "sx-test-backend-held", "sleep 1", "--hold",
                                 "--array=0-4%2")).job_id
    plain = backend.submit(script(tmp_path, "sx-test-backend-plain", "true")).job_id
    try:
        rows = backend.squeue_rows(name_prefix="sx-test-backend-held")
        mine = [r for r in rows if r.array_job_id == held]
        assert sorted(r.array_task for r in mine) == [0, 1, 2, 3, 4]
        assert all(r.state == "PENDING" and r.reason == "JobHeldUser" for r in mine)
        assert [r for r in backend.squeue_rows([held])] and \
            all(r.array_job_id == held for r in backend.squeue_rows([held]))
        wait_rows(backend, [plain], start, 1)
        times = backend.submit_times([held, plain, "999999999"], since=start)
        # held: from squeue; plain has left the queue: from sacct; unknown ids are left out.
        assert set(times) == {held, plain}
        # The held array's time came from its one collapsed row ("<id>_[0-4%2]", squeue without
        # -r): the same as each of its tasks' rows says.
        assert {r.submit for r in mine} == {times[held]}
        for value in times.values():
            assert datetime.fromisoformat(value) >= datetime.fromisoformat(start)
    finally:
        backend.cancel([held])
    # Asked by id, squeue keeps reporting finished jobs (for MinJobAge) with their end state.
    deadline = time.monotonic() + 30
    rows = backend.squeue_rows([held])
    while {r.state for r in rows} != {"CANCELLED"} and time.monotonic() < deadline:
        time.sleep(0.5)
        rows = backend.squeue_rows([held])
    assert {r.state for r in rows} == {"CANCELLED"}
    assert backend.squeue_rows(name_prefix="sx-test-backend-held") == []


def test_sacct_rows_splits_long_id_lists(backend, monkeypatch):
    calls = []
    real = slurm.run_slurm

    def spy(argv, **kw):
        calls.append(argv)
        return real(argv, **kw)

    monkeypatch.setattr(slurm, "run_slurm", spy)
    monkeypatch.setattr(slurm, "MAX_ARG_BYTES", 40)
    ids = [str(900000000 + i) for i in range(10)]
    assert backend.sacct_rows(ids, since=since()) == []
    selectors = [a for argv in calls for a in argv if a.startswith("--jobs=")]
    assert len(selectors) == 3  # 10 bytes per id: four ids fit in 40 bytes
    assert ",".join(s.removeprefix("--jobs=") for s in selectors) == ",".join(ids)


def test_cluster_facts(backend):
    facts = backend.cluster_facts()
    assert facts.skipped == []
    assert facts.cluster == CURRENT.name and facts.user == backend.user
    assert facts.max_array_size == 1001 and facts.max_job_count == 10000
    nodes = facts.nodes
    assert sorted(nodes) == ["c1", "c2", "c3", "g1", "g2"]
    assert nodes["g1"].gres == {"a100": 2} and nodes["g2"].gres == {"v100": 2}
    assert nodes["c1"].gres == {} and nodes["c1"].cpus == 16 and nodes["g1"].mem_mb == 7900
    assert nodes["c1"].partitions == ["cpu", "debug"] and nodes["g1"].partitions == ["gpu"]
    parts = facts.partitions
    assert parts["cpu"].default and parts["cpu"].nodes == ["c1", "c2", "c3"]
    assert parts["debug"].max_time_min == 5 and parts["gpu"].nodes == ["g1", "g2"]
    high = facts.qos["high"]
    assert high.max_tres_pu == {"gres/gpu": 2} and high.preempt == ["low"]
    assert high.max_wall_min == 240
    resv = facts.reservations["resv1"]
    assert resv.state == "ACTIVE" and resv.nodes == ["c3"]
    research = [a for a in facts.associations if a.account == "research"]
    assert research and research[0].is_default_account
    assert set(research[0].qos) == {"normal", "high", "low"}


def test_cluster_facts_records_what_failed(backend, monkeypatch):
    real = slurm.run_slurm

    def no_dbd(argv, **kw):
        if argv[0] == "sacctmgr":
            raise SlurmUnavailable("sacctmgr could not reach a Slurm daemon (this is not a job failure)")
        return real(argv, **kw)

    monkeypatch.setattr(slurm, "run_slurm", no_dbd)
    facts = backend.cluster_facts()
    assert facts.qos is None and facts.associations is None
    assert facts.nodes is not None and facts.partitions is not None
    assert [s.split(":")[0] for s in facts.skipped] == ["qos", "associations"]
