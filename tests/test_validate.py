"""Validation before launch: static checks against site.toml and the file system, and live
checks against ClusterFacts (built here by hand; the real cluster's facts are tested in
test_launch_cluster.py)."""
from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from slurmexp.backends.facts import Association, ClusterFacts, NodeFacts, PartitionFacts, QosFacts, ReservationFacts
from slurmexp.errors import SpecError
from slurmexp.launch.launcher import check, prepare
from slurmexp.launch.validate import script_named, validate

REPO = Path(__file__).resolve().parent.parent
SITE = REPO / "site.toml"


def write_sweep(tmp_path: Path, resources: str = "", command: str = "python3 train.py --lr {lr}",
                extra: str = "", script: bool = True) -> Path:
    if script:
        (tmp_path / "train.py").write_text("print('hi')\n")
    path = tmp_path / "sweep.toml"
    path.write_text(f'name = "t"\ncommand = "{command}"\n{extra}\n[params]\nlr = [0.1, 0.01]\n'
                    f"[resources]\n{resources}\n")
    return path


def problems(tmp_path, **kw):
    prep = prepare(write_sweep(tmp_path, **kw), SITE)
    report = check(prep)
    return report, {p.key for p in report.problems}


def test_a_good_sweep_passes_static_checks(tmp_path):
    report, keys = problems(tmp_path, resources='gpus = 1\ngpu_type = "a100"\ntime = "01:00:00"')
    assert report.ok, report.format()
    assert any("live cluster checks" in s for s in report.skipped)


@pytest.mark.parametrize("resources, key, words", [
    ('partition = "debug"\ntime = "00:30:00"', "resources.time", "max_time"),
    ('gpus = 1\ngpu_type = "h100"', "resources.gpu_type", "h100"),
    ("gpus = 9", "resources.gpus", "9"),
    ('qos = "platinum"', "resources.qos", "platinum"),
    ('reservation = "nosuch"', "resources.reservation", "nosuch"),
    ('qos = "high"\ntime = "10:00:00"', "resources.time", "MaxWall"),
    ('qos = "high"\ngpus = 2\ngpu_type = "a100"\npartition = "gpu"', None, None),
])
def test_static_refusals_name_the_key(tmp_path, resources, key, words):
    report, keys = problems(tmp_path, resources=resources)
    if key is None:
        assert report.ok, report.format()
        return
    assert key in keys, report.format()
    text = report.format()
    assert words in text
    assert str(tmp_path / "sweep.toml") in text
    assert all(p.fix for p in report.problems if p.key == key)


def test_gpus_over_qos_per_user_limit(tmp_path):
    # high allows gres/gpu=2 per user: a 3-GPU task could never start there (a node has only 2
    # GPUs anyway, which routing reports as well).
    report, keys = problems(tmp_path, resources='qos = "high"\ngpus = 3')
    assert "resources.gpus" in keys
    assert "MaxTRESPerUser" in report.format()


def test_missing_script_and_setup_file(tmp_path):
    path = write_sweep(tmp_path, script=False, extra='[env]\nsetup = ["source .venv/bin/activate"]')
    report = check(prepare(path, SITE))
    keys = {p.key for p in report.problems}
    assert {"command", "env.setup[0]"} <= keys, report.format()


def test_placeholder_without_parameter_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError) as err:
        prepare(write_sweep(tmp_path, command="python3 train.py --lr {lr} --wd {wd}"), SITE)
    assert any(p.key == "command" and "wd" in p.message for p in err.value.problems)


def test_unknown_key_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError) as err:
        prepare(write_sweep(tmp_path, resources="gpu = 1"), SITE)
    assert any(p.key == "resources.gpu" and "gpus" in p.message + p.fix for p in err.value.problems)


@pytest.mark.parametrize("command, script", [
    ("python3 train.py --lr {lr}", "train.py"),
    ("python -u src/train.py {lr}", "src/train.py"),
    ("python -m pkg.train {lr}", None),
    ("./run.sh {lr}", "./run.sh"),
    ("OMP_NUM_THREADS=1 bash scripts/go.sh {lr}", "scripts/go.sh"),
    ("echo {lr}", None),
])
def test_script_named(command, script):
    assert script_named(command) == script


def facts(**over) -> ClusterFacts:
    f = ClusterFacts(
        cluster="minicluster", user="alice", max_array_size=1001, max_job_count=10000,
        # As the repository's site.toml describes them (else it would be a stale site.toml).
        partitions={"cpu": PartitionFacts("cpu", "UP", 1440, ["c1", "c2", "c3"], True),
                    "gpu": PartitionFacts("gpu", "UP", 2880, ["g1", "g2"]),
                    "debug": PartitionFacts("debug", "UP", 5, ["c1", "c2"])},
        nodes={**{n: NodeFacts(n, "idle", 16, 8000, {}, ["cpu"]) for n in ("c1", "c2", "c3")},
               "g1": NodeFacts("g1", "idle", 8, 7900, {"a100": 2}, ["gpu"]),
               "g2": NodeFacts("g2", "idle", 8, 7900, {"v100": 2}, ["gpu"])},
        reservations={"resv1": ReservationFacts("resv1", "ACTIVE", ["c3"], ["root"], [],
                                                datetime.now() - timedelta(days=1),
                                                datetime.now() + timedelta(days=1))},
        qos={"normal": QosFacts("normal", 1440, {"gres/gpu": 4}),
             "high": QosFacts("high", 240, {"gres/gpu": 2})},
        associations=[Association("research", "alice", ["normal", "high"], "normal")])
    for k, v in over.items():
        setattr(f, k, v)
    return f


def live_keys(tmp_path, resources: str, **over):
    prep = prepare(write_sweep(tmp_path, resources=resources), SITE)
    report = validate(prep.sweep, prep.site, prep.plan, facts=facts(**over))
    return report, {p.key for p in report.problems}


def test_live_partition_down_and_missing_qos(tmp_path):
    f = facts()
    f.partitions["gpu"].state = "DOWN"
    report, keys = live_keys(tmp_path, 'gpus = 1\ngpu_type = "a100"', partitions=f.partitions)
    assert "resources.partition" in keys and "DOWN" in report.format()
    report, keys = live_keys(tmp_path, 'qos = "low"')
    assert "resources.qos" in keys, report.format()


def test_live_account_association(tmp_path):
    report, keys = live_keys(tmp_path, 'account = "other"')
    assert "resources.account" in keys
    assert "research" in report.format()  # the fix lists the accounts the user has


def test_live_reservation_must_admit_user(tmp_path):
    report, keys = live_keys(tmp_path, 'reservation = "resv1"\npartition = "cpu"')
    assert "resources.reservation" in keys
    assert "does not admit user alice" in report.format()


def test_live_unreadable_sacctmgr_is_skipped_not_failed(tmp_path):
    report, keys = live_keys(tmp_path, 'qos = "normal"', qos=None, associations=None,
                             skipped=["QOS and associations: sacctmgr: permission denied"])
    assert report.ok, report.format()
    assert any("sacctmgr" in s for s in report.skipped)


def test_live_max_array_size_smaller_than_site(tmp_path):
    report, keys = live_keys(tmp_path, "", max_array_size=500)
    assert "max_array_size" in keys


# --- room in the queue (issue 9 item 6) ------------------------------------------------------

def _capacity_facts(**kw) -> ClusterFacts:
    base = dict(cluster="minicluster", user="root", max_job_count=None, qos={}, associations=[
        Association(account="research", user="root", qos=["normal", "high", "low"],
                    default_qos="normal", is_default_account=True)])
    base.update(kw)
    return ClusterFacts(**base)


def test_max_job_count_is_reached_at_equal_counting_what_is_queued(tmp_path):
    from slurmexp.launch.capacity import capacity_problems

    plan = prepare(write_sweep(tmp_path), SITE).plan      # 2 runs
    file = str(tmp_path / "sweep.toml")
    # Slurm refuses when jobs + tasks >= MaxJobCount: 2 runs against MaxJobCount 2 never fit.
    assert capacity_problems(file, plan, _capacity_facts(max_job_count=3)) == []
    [p] = capacity_problems(file, plan, _capacity_facts(max_job_count=2))
    assert "MaxJobCount (2" in p.message and "at most 1 fit" in p.message
    # 7 queued jobs of the user's own count too.
    queued = {"normal": 5, "high": 2}
    [p] = capacity_problems(file, plan, _capacity_facts(max_job_count=9, queued_by_qos=queued))
    assert "plus the 7 job(s) you have queued" in p.message and p.fix
    assert capacity_problems(file, plan, _capacity_facts(max_job_count=10, queued_by_qos=queued)) == []


def test_qos_submit_limit_counts_the_users_jobs_in_that_qos(tmp_path):
    from slurmexp.launch.capacity import capacity_problems

    plan = prepare(write_sweep(tmp_path), SITE).plan      # 2 runs, default QOS normal
    file = str(tmp_path / "sweep.toml")
    qos = {"normal": QosFacts(name="normal", max_submit_pu=3)}
    # MaxSubmitJobsPerUser refuses past the limit (>): 2 runs + 1 queued = 3 fit.
    assert capacity_problems(file, plan, _capacity_facts(qos=qos, queued_by_qos={"normal": 1})) == []
    [p] = capacity_problems(file, plan, _capacity_facts(qos=qos, queued_by_qos={"normal": 2, "high": 50}))
    assert p.key == "resources.qos" and "QOS normal plus the 2 you have queued" in p.message
    assert "MaxSubmitJobsPerUser (3)" in p.message and "at most 1 fit" in p.message
