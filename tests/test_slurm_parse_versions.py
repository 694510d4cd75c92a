"""The Slurm output parsers over the output captured from every supported Slurm release.

tests/data/captured/<version>/ holds the same captures (tests/data/capture.sh) from the test
cluster on Slurm 22.05 (Debian 12), 24.11 (Debian 13) and 26.05 (Debian unstable). Job ids,
times and cluster names differ between the captures; everything the product reads from them
must not. test_slurm_parse.py checks exact values on 22.05's files; this module checks on every
release what the product relies on, so a release that changes its output fails here.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from slurmexp import units
from slurmexp.backends.slurm import parse as sp
from slurmexp.sites.discover import discover_site
from slurmexp.sites.model import parse_site

CAPTURED = Path(__file__).parent / "data" / "captured"
VERSIONS = sorted(p.name for p in CAPTURED.iterdir() if p.is_dir())
SEP = "\x1f"
CLUSTER_NAMES = {"22.05": "minicluster", "24.11": "sx2411", "26.05": "sx2605"}


def test_every_supported_release_is_captured():
    assert VERSIONS == ["22.05", "24.11", "26.05"]


@pytest.fixture(params=VERSIONS)
def cap(request):
    return Captured(request.param)


class Captured:
    def __init__(self, version: str):
        self.version = version
        self.dir = CAPTURED / version
        self.cluster = CLUSTER_NAMES[version]
        self.fields = self.text("sacct_fields.txt").strip().split(",")

    def text(self, name: str) -> str:
        return (self.dir / name).read_text()

    def sacct(self, name: str, **kw) -> list:
        return sp.parse_sacct(self.text(name), SEP, self.fields, **kw)


def test_captured_release_and_field_lists(cap):
    assert cap.text("version.txt").split()[-1].startswith(cap.version + ".")
    assert tuple(cap.fields) == sp.SACCT_FIELDS
    assert cap.text("squeue_format.txt").strip() == sp.squeue_format(",")


def test_sbatch(cap):
    result = sp.parse_sbatch_parsable(cap.text("sbatch_parsable.txt"))
    assert result.job_id.isdigit()
    ok = sp.parse_test_only(cap.text("sbatch_test_only_ok.txt"))
    # 26.05 writes "to start at <time> a using ..." (a stray word); the time is still first.
    assert ok is not None and ok[0].isdigit() and ok[1].startswith("20")
    for refused in ("sbatch_test_only_refused_partition.txt", "sbatch_test_only_refused_gres.txt"):
        assert sp.parse_test_only(cap.text(refused)) is None
        assert sp.classify_error(cap.text(refused)) == "refused"


def test_scontrol(cap):
    nodes = sp.nodes_from(sp.parse_scontrol_records(cap.text("scontrol_node.txt")))
    assert sorted(nodes) == ["c1", "c2", "c3", "g1", "g2"]
    assert nodes["g1"].gres == {"a100": 2} and nodes["g2"].gres == {"v100": 2}
    assert nodes["c1"].gres == {} and nodes["c1"].partitions == ["cpu", "debug"]
    assert nodes["g1"].cpus == 8 and nodes["g1"].mem_mb == 7900 and nodes["g1"].partitions == ["gpu"]
    (down,) = sp.nodes_from(sp.parse_scontrol_records(cap.text("scontrol_node_down.txt"))).values()
    assert down.state.startswith("down") and down.reason.startswith("slurmexp fault injection")
    parts = sp.partitions_from(sp.parse_scontrol_records(cap.text("scontrol_partition.txt")))
    assert list(parts) == ["cpu", "gpu", "debug"] and parts["cpu"].default
    assert (parts["cpu"].max_time_min, parts["gpu"].max_time_min, parts["debug"].max_time_min) == (1440, 2880, 5)
    assert parts["debug"].nodes == ["c1", "c2"] and parts["cpu"].state == "UP"
    resv = sp.reservations_from(sp.parse_scontrol_records(cap.text("scontrol_reservation.txt")))["resv1"]
    assert (resv.state, resv.nodes, resv.users) == ("ACTIVE", ["c3"], ["root"])
    assert "IGNORE_JOBS" in resv.flags and resv.start is not None
    config = sp.parse_scontrol_config(cap.text("scontrol_config.txt"))
    assert config["ClusterName"] == cap.cluster
    assert config["SLURM_VERSION"].startswith(cap.version + ".")
    assert (config["MaxArraySize"], config["MaxJobCount"]) == ("1001", "10000")


def test_sacctmgr(cap):
    qos = sp.parse_sacctmgr_qos(cap.text("sacctmgr_qos.txt"))
    assert set(qos) == {"normal", "low", "high"}
    assert qos["high"].max_wall_min == 240 and qos["high"].max_tres_pu == {"gres/gpu": 2}
    assert qos["high"].preempt == ["low"] and qos["high"].flags == ["DenyOnLimit"]
    # 24.11 and 26.05 list the user's associations in another order than 22.05.
    assocs = sp.parse_sacctmgr_assoc(cap.text("sacctmgr_assoc.txt"), cluster=cap.cluster)
    research = next(a for a in assocs if a.account == "research")
    assert research.is_default_account and research.qos == ["high", "low", "normal"]
    assert research.default_qos == "normal"
    assert not next(a for a in assocs if a.account == "root").is_default_account


def test_discover_from_every_release(cap, tmp_path):
    facts = sp.cluster_facts_from(
        user="root", config=cap.text("scontrol_config.txt"), partitions=cap.text("scontrol_partition.txt"),
        nodes=cap.text("scontrol_node.txt"), reservations=cap.text("scontrol_reservation.txt"),
        qos=cap.text("sacctmgr_qos.txt"), associations=cap.text("sacctmgr_assoc.txt"))
    assert facts.def_mem_per_cpu_mb == 250      # slurm.conf's DefMemPerCPU
    site = parse_site(discover_site(facts), tmp_path / "site.toml")
    assert site.cluster == cap.cluster and site.account == "research"
    assert (site.defaults.mem_per_cpu, site.defaults.time) == ("250M", "00:10:00")
    assert site.gpu_types("gpu") == {"a100": 2, "v100": 2}
    assert site.reservations["resv1"].nodes == ["c3"] and site.qos["high"].preempt == ["low"]


def test_completed_array(cap):
    rows = cap.sacct("sacct_completed_array.txt")
    assert len(rows) == 4
    array = rows[0].array_job_id
    assert sorted(r.array_task for r in rows) == [0, 1, 2, 3]
    assert all(r.array_job_id == array and r.state == "COMPLETED" and r.exit_code == 0 for r in rows)
    # Task job ids are not array id + index: the last task keeps the array's own id.
    assert max(rows, key=lambda r: r.array_task).job_id_raw == array
    assert all(r.max_rss_mb and r.max_rss_mb > 60 for r in rows)  # the srun steps' 60 MiB
    assert all(r.total_cpu_s and r.total_cpu_s > 0.5 for r in rows)
    t0 = rows[0]
    assert (t0.partition, t0.qos, t0.account, t0.req_mem) == ("cpu", "high", "research", "300M")
    assert (t0.job_name, t0.comment, t0.cluster) == ("sx-test-cap-array", "slurmexp:capture", cap.cluster)
    assert all(not r.incomplete and r.known_state for r in rows)


def test_pending_and_cancelled_arrays(cap):
    held, begin = cap.sacct("sacct_pending_array.txt")
    assert held.pending_tasks == list(range(10)) and begin.pending_tasks == [1, 3, 5, 6, 7]
    assert held.state == begin.state == "PENDING"
    if cap.version == "22.05":
        assert (held.reason, begin.reason) == ("JobHeldUser", "BeginTime")
    else:
        # 24.11 and 26.05: seconds after submission sacct has Reason "None" (and AllocCPUS 0)
        # for pending jobs, even a held one; the controller (squeue, below) has the reason.
        assert (held.reason, begin.reason) == (None, None)
    assert held.start is None and held.exit_code is None
    (row,) = cap.sacct("sacct_cancelled_pending_array.txt")
    assert (row.state, row.state_raw) == ("CANCELLED", "CANCELLED by 0")
    assert row.pending_tasks == list(range(10))
    rows = sp.parse_squeue(cap.text("squeue_pending_array_r.txt"))
    assert len(rows) == 15 and {r.state for r in rows} == {"PENDING"}
    collapsed = {r.array_job_id: r for r in sp.parse_squeue(cap.text("squeue_pending_array.txt"))}
    assert collapsed[held.array_job_id].reason == "JobHeldUser"
    assert collapsed[held.array_job_id].pending_tasks == list(range(10))
    # launch reads the submit times from the collapsed rows: the same as every task's row.
    assert {r.submit for r in rows if r.array_job_id == held.array_job_id} == \
        {collapsed[held.array_job_id].submit}


def test_simple_jobs(cap):
    (failed,) = cap.sacct("sacct_failed.txt")
    assert (failed.state, failed.exit_code, failed.signal) == ("FAILED", 3, 0)
    (cancelled,) = cap.sacct("sacct_cancelled.txt")
    assert (cancelled.state, cancelled.state_raw) == ("CANCELLED", "CANCELLED by 0")
    (gpu,) = cap.sacct("sacct_gpu.txt")
    assert gpu.node_list == "g1" and gpu.partition == "gpu"
    tres = units.parse_tres(gpu.alloc_tres)
    assert tres["gres/gpu:a100"] == 1 and tres["gres/gpu"] == 1


def test_node_fail(cap):
    (row,) = cap.sacct("sacct_node_fail.txt")
    assert (row.state, row.node_list, row.partition) == ("NODE_FAIL", "c2", "cpu")
    # 22.05 records ExitCode 0:0 for a NODE_FAIL job, 24.11 and 26.05 1:0; the state is what
    # the product classifies (infrastructure failure, retried), never the exit code.
    assert row.exit_code == (0 if cap.version == "22.05" else 1)


def test_preempted_and_requeued(cap):
    rows = cap.sacct("sacct_preempted.txt")
    assert len(rows) >= 2
    first, second = rows[0], rows[1]
    assert first.job_id == second.job_id
    assert first.state == "PREEMPTED" and first.qos == "low" and first.node_list == "c2"
    # The requeued attempt is a new record under the same id with a later submit time.
    assert second.submit > first.submit and second.reason == "BeginTime"


def test_ctld_down_is_unavailable(cap):
    # Clients while slurmctld is stopped (capture.sh ctlddown; not captured on the shared 22.05
    # cluster, whose controller the capture must not stop).
    files = sorted(cap.dir.glob("*_ctld_down.txt"))
    if cap.version == "22.05":
        assert files == []
        return
    assert files
    for f in files:
        assert sp.classify_error(f.read_text()) == "unavailable", f.name


# Captured with `capture.sh limits` (and `ctlddown` for sbatch on 24.11); 26.05 not yet.
LIMITS_CAPTURED = ("22.05", "24.11")


@pytest.mark.parametrize("version", LIMITS_CAPTURED)
def test_queue_limits_are_refusals_not_an_unavailable_daemon(version):
    cap = Captured(version)
    # MaxJobCount reached: sbatch retried for two minutes, then "Resource temporarily
    # unavailable" (EAGAIN). The controller answered: a refusal, not "could not reach".
    full = cap.text("sbatch_queue_full.txt")
    assert "Resource temporarily unavailable" in full
    assert sp.classify_error(full) == "queue_full"
    # The first line alone is where the backend stops sbatch's retry loop.
    first = full.splitlines()[0]
    assert any(p in first.lower() for p in sp.SBATCH_RETRYING)
    assert sp.classify_error(first) == "queue_full"
    limit = cap.text("sbatch_max_submit_refused.txt")
    assert sp.classify_error(limit) == "submit_limit"
    assert sp.submit_limit_name(limit) == "QOSMaxSubmitJobPerUserLimit"


def test_sbatch_with_ctld_down_is_unavailable():
    cap = Captured("24.11")
    for name in ("sbatch_clusters_ctld_down.txt", "sbatch_ctld_down.txt"):
        assert sp.classify_error(cap.text(name)) == "unavailable", name
