"""The Slurm output parsers, over output captured from the real test cluster.

tests/data/captured/README.md says which command wrote each file; the expected values below were
read off those files, so a parser change that misreads real Slurm output fails here.
"""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from slurmexp import units
from slurmexp.backends.slurm import parse as sp
from slurmexp.errors import SlurmexpError

CAPTURED = Path(__file__).parent / "data" / "captured" / "22.05"  # exact values below are 22.05's
SACCT_FIELDS = (CAPTURED / "sacct_fields.txt").read_text().strip().split(",")
SEP = "\x1f"


def text(name: str) -> str:
    return (CAPTURED / name).read_text()


def sacct(name: str, **kw) -> list:
    return sp.parse_sacct(text(name), SEP, SACCT_FIELDS, **kw)


def by_id(rows) -> dict:
    return {r.job_id: r for r in rows}


def test_captured_field_list_is_the_products():
    # When SACCT_FIELDS changes, re-run tests/data/capture.sh so the files keep testing it.
    assert tuple(SACCT_FIELDS) == sp.SACCT_FIELDS
    assert (CAPTURED / "squeue_format.txt").read_text().strip() == sp.squeue_format(",")


# --- sbatch --------------------------------------------------------------------------------


def test_sbatch_parsable():
    result = sp.parse_sbatch_parsable(text("sbatch_parsable.txt"))
    assert (result.job_id, result.cluster) == ("481", None)
    result = sp.parse_sbatch_parsable("123;minicluster\n")
    assert (result.job_id, result.cluster) == ("123", "minicluster")


@pytest.mark.parametrize("garbage", ["", "\n", "Submitted batch job 12", "abc;x", "12a"])
def test_sbatch_parsable_garbage_is_an_error(garbage):
    with pytest.raises(SlurmexpError, match="job id"):
        sp.parse_sbatch_parsable(garbage)


def test_test_only_messages():
    assert sp.parse_test_only(text("sbatch_test_only_ok.txt")) == ("482", "2026-11-21T14:44:32")
    assert sp.parse_test_only(text("sbatch_test_only_refused_partition.txt")) is None
    assert sp.parse_test_only(text("sbatch_test_only_refused_gres.txt")) is None


@pytest.mark.parametrize("stderr,kind", [
    ("sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)",
     "unavailable"),
    ("squeue: error: slurm_load_jobs error: Socket timed out on send/recv operation", "unavailable"),
    ("sacct: error: Problem talking to the database: Connection refused", "unavailable"),
    ("sacctmgr: error: slurmdbd: Sending PersistInit msg: Connection refused", "unavailable"),
    ("sbatch: error: Batch job submission failed: Zero Bytes were transmitted or received",
     "unavailable"),
    # squeue on 24.11 while slurmctld restarted (CI, test_slurmctld_restart_mid_sweep_loses_nothing)
    ((CAPTURED.parent / "24.11" / "squeue_ctld_restarting.txt").read_text(), "unavailable"),
    ("squeue: fatal: Could not get cluster information", "unavailable"),
    (text("sbatch_test_only_refused_partition.txt"), "refused"),
    ("sbatch: error: Batch job submission failed: Invalid qos specification", "refused"),
])
def test_classify_error(stderr, kind):
    assert sp.classify_error(stderr) == kind


# --- host lists ----------------------------------------------------------------------------


def test_expand_hostlist():
    assert sp.expand_hostlist("c[1-3],g[1-2],x01") == ["c1", "c2", "c3", "g1", "g2", "x01"]
    assert sp.expand_hostlist("n[001-003,010]") == ["n001", "n002", "n003", "n010"]
    assert sp.expand_hostlist("r[1-2]n[1-2]") == ["r1n1", "r1n2", "r2n1", "r2n2"]
    assert sp.expand_hostlist("(null)") == [] and sp.expand_hostlist("") == []
    with pytest.raises(SlurmexpError):
        sp.expand_hostlist("c[1-3")


# --- scontrol ------------------------------------------------------------------------------


def test_nodes_from_scontrol():
    nodes = sp.nodes_from(sp.parse_scontrol_records(text("scontrol_node.txt")))
    assert sorted(nodes) == ["c1", "c2", "c3", "g1", "g2"]
    g1 = nodes["g1"]
    assert (g1.cpus, g1.mem_mb, g1.gres, g1.partitions) == (8, 7900, {"a100": 2}, ["gpu"])
    assert g1.tres["gres/gpu:a100"] == "2"
    assert nodes["g2"].gres == {"v100": 2}
    assert nodes["c1"].gres == {} and nodes["c1"].partitions == ["cpu", "debug"]
    assert nodes["c3"].state == "idle+reserved"
    assert nodes["c1"].features == []


def test_values_with_spaces_do_not_swallow_keys():
    (rec,) = sp.parse_scontrol_records(text("scontrol_node_down.txt"))
    # OS= holds spaces and "#1"; the key after it must still be found.
    assert rec["OS"] == "Linux 6.18.44-fc-v669 #1 SMP PREEMPT_DYNAMIC @0"
    assert rec["RealMemory"] == "3900"
    assert rec["Reason"] == "slurmexp fault injection [root@2026-11-21T14:40:32]"
    (node,) = sp.nodes_from([rec]).values()
    assert node.state == "down" and node.reason.startswith("slurmexp fault injection")
    # A lower-case "x=y" inside a Reason stays part of it.
    (rec,) = sp.parse_scontrol_records("NodeName=n1 Reason=bad dimm slot=3 [admin] State=DOWN")
    assert rec["Reason"] == "bad dimm slot=3 [admin]" and rec["State"] == "DOWN"


def test_parse_gres():
    assert sp.parse_gres("gpu:a100:2(S:0-1)") == {"a100": 2}
    assert sp.parse_gres("gpu:2") == {"": 2}
    assert sp.parse_gres("gpu:a100:2(S:0-1),gpu:v100:1") == {"a100": 2, "v100": 1}
    assert sp.parse_gres("gpu:tesla:no_consume:4,mps:200") == {"tesla": 4}
    assert sp.parse_gres("(null)") == {}


def test_partitions_from_scontrol():
    parts = sp.partitions_from(sp.parse_scontrol_records(text("scontrol_partition.txt")))
    assert list(parts) == ["cpu", "gpu", "debug"]
    cpu, gpu, debug = parts["cpu"], parts["gpu"], parts["debug"]
    assert cpu.default and not gpu.default and not debug.default
    assert cpu.nodes == ["c1", "c2", "c3"] and gpu.nodes == ["g1", "g2"] and debug.nodes == ["c1", "c2"]
    assert (cpu.max_time_min, gpu.max_time_min, debug.max_time_min) == (1440, 2880, 5)
    assert debug.default_time_min == 1
    assert cpu.allow_qos is None and cpu.state == "UP"


def test_reservations_from_scontrol():
    resv = sp.reservations_from(sp.parse_scontrol_records(text("scontrol_reservation.txt")))
    r = resv["resv1"]
    assert (r.state, r.nodes, r.users, r.accounts) == ("ACTIVE", ["c3"], ["root"], [])
    assert r.start == datetime(2026, 11, 21, 14, 35, 41)
    assert r.end == datetime(2027, 11, 21, 14, 35, 41)
    assert "IGNORE_JOBS" in r.flags
    assert sp.parse_scontrol_records("No reservations in the system\n") == []


def test_scontrol_config():
    config = sp.parse_scontrol_config(text("scontrol_config.txt"))
    assert config["ClusterName"] == "minicluster"
    assert config["MaxArraySize"] == "1001"
    assert config["MaxJobCount"] == "10000"
    assert config["SLURM_VERSION"] == "22.05.8"
    assert config["AccountingStorageTRES"].endswith("gres/gpu:a100,gres/gpu:v100")


# --- sacctmgr ------------------------------------------------------------------------------


def test_qos():
    qos = sp.parse_sacctmgr_qos(text("sacctmgr_qos.txt"))
    assert set(qos) == {"normal", "low", "high"}
    high = qos["high"]
    assert high.max_wall_min == 240
    assert high.max_tres_pu == {"gres/gpu": 2}
    assert high.preempt == ["low"] and high.flags == ["DenyOnLimit"]
    assert qos["low"].max_wall_min == 2880 and qos["low"].preempt == []
    assert units.parse_tres("gres/gpu=2,cpu=8,mem=16G") == {"gres/gpu": 2, "cpu": 8, "mem": 16384}


def test_associations():
    assocs = sp.parse_sacctmgr_assoc(text("sacctmgr_assoc.txt"), cluster="minicluster")
    research = next(a for a in assocs if a.account == "research")
    assert research.user == "root" and research.is_default_account
    assert research.qos == ["high", "low", "normal"] and research.default_qos == "normal"
    other = next(a for a in assocs if a.account == "root")
    assert not other.is_default_account and other.default_qos is None
    assert sp.parse_sacctmgr_assoc(text("sacctmgr_assoc.txt"), cluster="elsewhere") == []


# --- sacct ---------------------------------------------------------------------------------


def test_completed_array_steps_folded():
    rows = by_id(sacct("sacct_completed_array.txt"))
    assert sorted(rows) == ["677_0", "677_1", "677_2", "677_3"]
    t0 = rows["677_0"]
    assert (t0.array_job_id, t0.array_task, t0.pending_tasks) == ("677", 0, None)
    # JobIDRaw is each task's own job id, not array id + index; the last task keeps the array's.
    assert [rows[f"677_{i}"].job_id_raw for i in range(4)] == ["678", "679", "680", "677"]
    assert t0.state == "COMPLETED" and (t0.exit_code, t0.signal) == (0, 0)
    # MaxRSS is the largest over the steps: the srun step's 74992K, not the batch step's 10.50M.
    assert t0.max_rss_mb == pytest.approx(74992 / 1024)
    assert rows["677_3"].max_rss_mb == pytest.approx(74948 / 1024)
    assert t0.total_cpu_s == pytest.approx(1.128)
    assert t0.elapsed_s == 8
    assert (t0.node_list, t0.partition, t0.qos, t0.account) == ("c1", "cpu", "high", "research")
    assert t0.req_mem == "300M" and t0.alloc_cpus == 1
    assert (t0.job_name, t0.comment, t0.cluster) == ("sx-test-cap-array", "slurmexp:capture", "minicluster")
    assert (t0.submit, t0.start, t0.end) == ("2026-11-21T14:40:08", "2026-11-21T14:40:08",
                                             "2026-11-21T14:40:16")
    assert not t0.incomplete and t0.known_state


def test_pending_arrays():
    rows = by_id(sacct("sacct_pending_array.txt"))
    held, begin = rows["484_[0-9%4]"], rows["485_[1,3,5-7]"]
    assert (held.array_job_id, held.array_task) == ("484", None)
    assert held.pending_tasks == list(range(10))
    assert begin.pending_tasks == [1, 3, 5, 6, 7]
    assert held.state == "PENDING" and held.reason == "JobHeldUser" and begin.reason == "BeginTime"
    assert held.start is None and held.end is None and held.node_list is None
    assert held.exit_code is None  # sacct prints 0:0 before a job has exited


def test_cancelled_pending_array():
    (row,) = sacct("sacct_cancelled_pending_array.txt")
    assert (row.state, row.state_raw) == ("CANCELLED", "CANCELLED by 0")
    assert row.pending_tasks == list(range(10)) and row.start is None


def test_cut_pending_array_id_is_tolerated():
    line = text("sacct_pending_array.txt").splitlines()[1].replace("485_[1,3,5-7]", "485_[1,3,5-")
    (row,) = sp.parse_sacct(line + "\n", SEP, SACCT_FIELDS)
    assert row.array_job_id == "485" and row.pending_tasks == [1, 3, 5]


def test_failed_job():
    (row,) = sacct("sacct_failed.txt")
    assert (row.job_id, row.state, row.exit_code, row.signal) == ("748", "FAILED", 3, 0)
    assert row.array_job_id is None and row.array_task is None and row.pending_tasks is None


def test_cancelled_job():
    (row,) = sacct("sacct_cancelled.txt")
    assert (row.state, row.state_raw) == ("CANCELLED", "CANCELLED by 0")
    assert row.node_list == "c1" and row.elapsed_s == 3


def test_node_fail_job():
    (row,) = sacct("sacct_node_fail.txt")
    assert (row.job_id, row.state, row.node_list) == ("788", "NODE_FAIL", "c2")
    assert row.partition == "cpu" and row.qos == "high"


def test_gpu_job_alloc_tres():
    (row,) = sacct("sacct_gpu.txt")
    assert row.node_list == "g1" and row.partition == "gpu"
    assert row.alloc_tres == "billing=1,cpu=1,gres/gpu:a100=1,gres/gpu=1,mem=250M,node=1"
    assert units.parse_tres(row.alloc_tres)["gres/gpu:a100"] == 1


def test_timeout_job_and_duplicate_rows():
    # The job ran in reservation resv1; with -D slurmdbd printed it once per resv1 record.
    assert text("sacct_timeout.txt").count("\n") == 16
    (row,) = sacct("sacct_timeout.txt")
    assert (row.job_id, row.state, row.node_list, row.elapsed_s) == ("472", "TIMEOUT", "c3", 69)
    assert row.max_rss_mb == pytest.approx(3184 / 1024)
    assert row.total_cpu_s == pytest.approx(0.002)  # duplicated steps are not summed twice


def test_preempted_and_requeued_job():
    rows = sacct("sacct_preempted.txt")
    assert len(rows) == 2
    first, second = rows
    assert first.job_id == second.job_id == first.job_id_raw
    assert first.state == "PREEMPTED" and first.qos == "low" and first.node_list == "c2"
    # The requeued attempt is a new record with a later submit time: the attempt key.
    assert (first.submit, second.submit) == ("2026-11-21T14:41:09", "2026-11-21T14:41:14")
    assert first.end == second.submit
    # Slurm held the requeued job back (Reason BeginTime) for about two minutes before rerunning.
    assert (second.state, second.reason, second.start) == ("COMPLETED", "BeginTime", "2026-11-21T14:43:17")
    assert first.alloc_cpus == second.alloc_cpus == 4  # --exclusive took the whole node
    assert second.max_rss_mb == pytest.approx(3212 / 1024) and first.max_rss_mb is None


def test_incomplete_record_and_bare_array_id():
    # Seconds after a short job ended, accounting had its end but not its submit record.
    (row,) = sacct("sacct_failed_incomplete.txt")
    assert row.incomplete and row.job_name == "allocation"
    assert (row.state, row.exit_code, row.node_list) == ("FAILED", 3, "c1")
    assert row.partition is None and row.qos is None and row.comment is None
    # A just-started array, seen under its bare id.
    (row,) = sacct("sacct_array_early.txt")
    assert (row.job_id, row.state, row.array_job_id) == ("677", "PENDING", None)
    assert row.incomplete
    (row,) = sacct("sacct_array_early.txt", array_ids=["677"])
    assert (row.array_job_id, row.array_task, row.pending_tasks) == ("677", None, None)


def test_unknown_state_is_kept_and_flagged():
    line = text("sacct_failed.txt").replace("FAILED", "WEIRD_NEW_STATE extra")
    (row,) = sp.parse_sacct(line, SEP, SACCT_FIELDS)
    assert row.state == "WEIRD_NEW_STATE" and row.state_raw == "WEIRD_NEW_STATE extra"
    assert not row.known_state


def test_newline_in_comment_is_joined_back():
    line = text("sacct_completed_array.txt").splitlines()[0]
    broken = line.replace("slurmexp:capture", "slurmexp:cap\nture")
    (row,) = sp.parse_sacct(broken + "\n", SEP, SACCT_FIELDS)
    assert row.comment == "slurmexp:cap\nture" and row.job_id == "677_0"


def test_all_captured_rows_together():
    rows = sacct("sacct_all.txt")
    states = {r.job_id: r.state for r in rows}
    assert states["748"] == "FAILED" and states["788"] == "NODE_FAIL" and states["472"] == "TIMEOUT"
    assert all(r.known_state for r in rows)


@pytest.mark.parametrize("value,mb", [("1234K", 1234 / 1024), ("5M", 5.0), ("1.5G", 1536.0),
                                      ("10.50M", 10.5), ("0", 0.0), ("", None)])
def test_mem_sizes(value, mb):
    assert sp.parse_mem_mb(value) == (pytest.approx(mb) if mb is not None else None)


@pytest.mark.parametrize("value,seconds", [("00:01.128", 1.128), ("01:02:03", 3723.0),
                                           ("2-01:00:00", 176400.0), ("", None)])
def test_cpu_times(value, seconds):
    assert sp.parse_cpu_seconds(value) == (pytest.approx(seconds) if seconds is not None else None)


# --- squeue --------------------------------------------------------------------------------


def test_squeue_pending_array_expanded():
    rows = sp.parse_squeue(text("squeue_pending_array_r.txt"))
    held = [r for r in rows if r.array_job_id == "484"]
    assert [r.array_task for r in held] == list(range(10))
    assert all(r.state == "PENDING" and r.reason == "JobHeldUser" for r in held)
    assert held[0].job_id == "484_0" and held[0].comment == "slurmexp:capture"
    assert held[0].submit == "2026-11-21T14:39:32" and held[0].node_list is None
    begin = [r for r in rows if r.array_job_id == "485"]
    assert [r.array_task for r in begin] == [1, 3, 5, 6, 7] and begin[0].comment is None


def test_squeue_pending_array_collapsed():
    rows = {r.array_job_id: r for r in sp.parse_squeue(text("squeue_pending_array.txt"))}
    assert rows["484"].pending_tasks == list(range(10)) and rows["484"].array_task is None
    assert rows["485"].pending_tasks == [1, 3, 5, 6, 7]


def test_squeue_running_array():
    rows = sp.parse_squeue(text("squeue_running_array.txt"))
    assert sorted(r.array_task for r in rows) == [0, 1, 2, 3]
    assert all(r.state == "RUNNING" and r.node_list == "c1" and r.name == "sx-test-cap-array"
               for r in rows)
    plain = sp.parse_squeue(SEP.join(["42", "42", "N/A", "PENDING", "Priority",
                                      "2026-01-01T00:00:00", "", "job", "(null)"]) + "\n")
    assert plain[0].array_job_id is None and plain[0].array_task is None


def test_squeue_rows_are_the_dataclass_rows_field_for_field():
    # parse_squeue fills each row's fields directly (no __init__): the same rows, in every field.
    from dataclasses import fields

    from slurmexp.backends.facts import SqueueRow
    from slurmexp.backends.slurm.parse import squeue

    assert squeue._ROW_FIELDS == tuple(f.name for f in fields(SqueueRow))
    (row,) = sp.parse_squeue(SEP.join(["7_3", "7", "3", "CANCELLED by 0", "None",
                                       "2026-01-01T00:00:00", "c[1-2]", "job", "slurmexp:e"]) + "\n")
    assert row == SqueueRow(job_id="7_3", array_job_id="7", array_task=3, pending_tasks=None,
                            state="CANCELLED", reason=None, submit="2026-01-01T00:00:00",
                            node_list="c[1-2]", name="job", comment="slurmexp:e", known_state=True)
    (odd,) = sp.parse_squeue(SEP.join(["8", "8", "2", "WEIRD", "", "", "", "j", ""]) + "\n")
    assert (odd.array_job_id, odd.array_task, odd.state, odd.known_state) == ("8", 2, "WEIRD", False)
