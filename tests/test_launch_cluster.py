"""`slurmexp launch` against the real test cluster: placement, refusals, quoting, big sweeps."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from clusterlib import CURRENT

from slurmexp.backends.slurm.backend import SlurmBackend
from slurmexp.cli import main
from slurmexp.ledger import Ledger
from slurmexp.reconcile.one_pass import reconcile_pass
from slurmexp.states import TERMINAL_STATES

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parent.parent
SITE = str(CURRENT.site_toml)  # the repository's site.toml, or a version cluster's copy

# Writes its argv and a few facts of its allocation into the run directory.
TRAIN = """\
import json, os, sys
info = {"argv": sys.argv[1:], "gpus": os.environ.get("SLURM_GPUS_ON_NODE"),
        "node": os.environ.get("SLURMD_NODENAME"), "run_id": os.environ["SLURMEXP_RUN_ID"]}
json.dump(info, open(os.path.join(os.environ["SLURMEXP_RUN_DIR"], "seen.json"), "w"))
"""


def write_sweep(tmp_path: Path, name: str, params: str, resources: str = "", command: str | None = None) -> Path:
    (tmp_path / "train.py").write_text(TRAIN)
    command = command or f"{sys.executable} train.py " + " ".join(
        f"--{p} {{{p}}}" for p in [line.split("=")[0].strip() for line in params.strip().splitlines()])
    path = tmp_path / f"{name}.toml"
    if "time =" not in resources:
        resources = f'time = "00:05:00"\n{resources}'
    path.write_text(f"name = {json.dumps(name)}\ncommand = {json.dumps(command)}\n[params]\n{params}\n"
                    f"[resources]\n{resources}\n")
    return path


def cli(tmp_path: Path, *args: str):
    return CliRunner().invoke(main, ["--ledger", str(tmp_path / "ledger.db"), *args], catch_exceptions=False)


def launch(tmp_path: Path, sweep: Path) -> str:
    result = cli(tmp_path, "launch", str(sweep), "--site", SITE)
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[-1]


def wait_done(tmp_path: Path, exp_id: str, timeout: float = 240) -> Ledger:
    """Reconcile (one batched sacct per pass) until every run is terminal."""
    ledger = Ledger(tmp_path / "ledger.db")
    backend = SlurmBackend(cluster=CURRENT.name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reconcile_pass(ledger, backend, grace_s=600)
        runs = ledger.runs(exp_id)
        if all(r["state"] in TERMINAL_STATES for r in runs):
            return ledger
        time.sleep(2)
    raise AssertionError(f"{exp_id} not finished: {ledger.counts_by_state(exp_id)}")


def test_gpu_grid_lands_on_a100_partition_with_provenance(tmp_path, cluster):
    sweep = write_sweep(tmp_path, "gpugrid", 'lr = [0.1, 0.01]\nmodel = ["resnet18", "vit"]\nseed = [0, 1, 2]',
                        'gpus = 1\ngpu_type = "a100"')
    exp_id = launch(tmp_path, sweep)
    ledger = wait_done(tmp_path, exp_id)
    runs = ledger.runs(exp_id)
    assert len(runs) == 12 and all(r["state"] == "COMPLETED" for r in runs), ledger.counts_by_state(exp_id)
    attempts = ledger.attempts(exp_id)
    assert {a["node"] for a in attempts} == {"g1"}
    assert {a["partition"] for a in attempts} == {"gpu"}
    assert all(a["job_id"] and a["submit_time"] and a["cluster"] == CURRENT.name for a in attempts)
    assert all("gres/gpu:a100=1" in (a["alloc_tres"] or "") for a in attempts)
    for r in runs:
        seen = json.loads((Path(r["run_dir"]) / "seen.json").read_text())
        assert seen["gpus"] == "1" and seen["node"] == "g1"
        assert seen["argv"] == ["--lr", str(r["params"]["lr"]), "--model", r["params"]["model"],
                                "--seed", str(r["params"]["seed"])]
    exp = ledger.get_experiment(exp_id)
    prov = exp["provenance"]
    assert prov["python"] and prov["host"] and prov["user"] and prov["slurmexp_version"]
    assert Path(exp["sweep_copy_path"]).read_text() == sweep.read_text()
    assert exp["site_hash"] and exp["template_hash"]
    subs = ledger.submissions(exp_id)
    assert len(subs) == 1 and "#SBATCH --gres=gpu:a100:1" in Path(subs[0]["script_path"]).read_text()
    status = json.loads(cli(tmp_path, "status", exp_id, "--format", "json").stdout)
    assert [r["state"] for r in status] == ["COMPLETED"] * 12
    assert all(r["node"] == "g1" and r["job"] for r in status)


def test_cpu_sweep_lands_on_cpu_nodes(tmp_path, cluster):
    sweep = write_sweep(tmp_path, "cpusweep", "x = [1, 2, 3, 4]")
    exp_id = launch(tmp_path, sweep)
    ledger = wait_done(tmp_path, exp_id)
    attempts = ledger.attempts(exp_id)
    assert all(a["state"] == "COMPLETED" for a in attempts)
    nodes = {a["node"] for a in attempts}
    assert nodes <= set(cluster.cpu_nodes) - {cluster.reserved_node}, nodes
    assert {a["partition"] for a in attempts} == {"cpu"}


REFUSALS = [
    ("toolong", 'partition = "debug"\ntime = "00:30:00"', "resources.time", None),
    ("nogputype", 'gpus = 1\ngpu_type = "h100"', "resources.gpu_type", None),
    ("ninegpus", "gpus = 9", "resources.gpus", None),
    ("badqos", 'qos = "platinum"', "resources.qos", None),
    ("badresv", 'reservation = "nosuch"', "resources.reservation", None),
    ("badaccount", 'account = "other"', "resources.account", None),
    ("noscript", "", "command", "python3 missing.py --x {x}"),
    ("noparam", "", "command", "python3 train.py --x {x} --y {y}"),
    ("unknownkey", "gpu = 1", "resources.gpu", None),
]


@pytest.mark.parametrize("name, resources, key, command", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refused_with_exit_2_and_nothing_queued(tmp_path, cluster, name, resources, key, command):
    sweep = write_sweep(tmp_path, name, "x = [1, 2]", resources, command)
    result = cli(tmp_path, "launch", str(sweep), "--site", SITE)
    assert result.exit_code == 2, result.output
    assert f"[{key}]" in result.stderr and str(sweep) in result.stderr
    assert Ledger(tmp_path / "ledger.db").experiments() == []
    queued = SlurmBackend().squeue_rows(name_prefix=f"sx.{name}-")
    assert queued == []


def test_hostile_values_reach_the_run_literally(tmp_path, cluster):
    marker = tmp_path / "x"
    values = [f'"; touch {marker}; echo "', "$(id)", "a\nb", "`id`", "it's"]
    (tmp_path / "train.py").write_text(TRAIN)
    sweep = tmp_path / "hostile.toml"
    sweep.write_text('name = "hostile"\n'
                     f'command = "{sys.executable} train.py {{v}}"\n'
                     f"[params]\nv = {json.dumps(values)}\n")
    exp_id = launch(tmp_path, sweep)
    ledger = wait_done(tmp_path, exp_id)
    for run in ledger.runs(exp_id):
        assert run["state"] == "COMPLETED"
        seen = json.loads((Path(run["run_dir"]) / "seen.json").read_text())
        assert seen["argv"] == [run["params"]["v"]]
    assert sorted(r["params"]["v"] for r in ledger.runs(exp_id)) == sorted(values)
    assert not marker.exists()


def test_2500_runs_are_three_arrays_and_map_back(tmp_path, cluster):
    sweep = tmp_path / "big.toml"
    sweep.write_text('name = "big"\n'
                     'command = "echo {a} {b} > \\"$SLURMEXP_RUN_DIR/out\\""\n'
                     f"[params]\na = {list(range(50))}\nb = {list(range(50))}\n"
                     '[resources]\ntime = "00:02:00"\nmem = "100M"\n')
    exp_id = launch(tmp_path, sweep)
    ledger = Ledger(tmp_path / "ledger.db")
    subs = ledger.submissions(exp_id)
    assert [s["n_tasks"] for s in subs] == [1001, 1001, 498]
    assert [s["array_spec"] for s in subs] == ["0-1000", "0-1000", "0-497"]
    rows = SlurmBackend().squeue_rows([s["job_id"] for s in subs])
    assert {r.array_task for r in rows if r.array_task is not None} <= set(range(1001))
    ledger = wait_done(tmp_path, exp_id, timeout=900)
    runs = ledger.runs(exp_id)
    assert len(runs) == 2500 and all(r["state"] == "COMPLETED" for r in runs)
    for run in runs:
        assert (Path(run["run_dir"]) / "out").read_text().split() == [str(run["params"]["a"]),
                                                                      str(run["params"]["b"])]


def test_array_parallelism_is_shared_by_the_arrays_slurm_runs(tmp_path, cluster):
    """A sweep cut into two arrays by MaxArraySize with array_parallelism = 3: Slurm holds the
    arrays to 2 + 1 tasks at once, 3 for the sweep (not 3 per array)."""
    import subprocess

    site = tmp_path / "site.toml"
    text = Path(SITE).read_text()
    assert "max_array_size = 1001" in text
    site.write_text(text.replace("max_array_size = 1001", "max_array_size = 2")
                    .replace('"templates/', f'"{Path(SITE).resolve().parent}/templates/'))
    sweep = write_sweep(tmp_path, "shared", "x = [1, 2, 3, 4]", 'mem = "100M"\narray_parallelism = 3',
                        command="sleep 1; echo {x}")
    result = cli(tmp_path, "launch", str(sweep), "--site", str(site))
    assert result.exit_code == 0, result.output
    exp_id = result.stdout.strip().splitlines()[-1]
    subs = Ledger(tmp_path / "ledger.db").submissions(exp_id)
    assert [s["array_spec"] for s in subs] == ["0-1%2", "0-1%1"]
    throttles = []
    for sub in subs:
        shown = subprocess.run(["scontrol", "show", "job", sub["job_id"]], capture_output=True,
                               text=True, timeout=30).stdout
        throttles.append(next((w.split("=", 1)[1] for w in shown.split() if w.startswith("ArrayTaskThrottle=")),
                              None))
    assert throttles == ["2", "1"], throttles
    ledger = wait_done(tmp_path, exp_id)
    assert {r["state"] for r in ledger.runs(exp_id)} == {"COMPLETED"}


def test_launch_killed_after_sbatch_is_adopted_not_resubmitted(tmp_path, cluster):
    """SIGKILL the launch process right after sbatch created the job, before the ledger has its id.

    A wrapper `sbatch` first in PATH runs the real one, then kills its parent (slurmexp launch)
    with SIGKILL: a real crash at the worst moment, no hook in the product.
    """
    import os
    import shutil
    import subprocess

    bindir = tmp_path / "bin"
    bindir.mkdir()
    real = shutil.which("sbatch")
    wrapper = bindir / "sbatch"
    wrapper.write_text(f'#!/bin/bash\nout=$({real} "$@") || exit $?\necho "$out"\n'
                       'case " $* " in *" --test-only "*) exit 0 ;; esac\nkill -9 $PPID\n')
    wrapper.chmod(0o755)
    sweep = write_sweep(tmp_path, "crashy", "x = [1, 2, 3]")
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}")
    exe = [sys.executable, "-m", "slurmexp", "--ledger", str(tmp_path / "ledger.db")]
    proc = subprocess.run([*exe, "launch", str(sweep), "--site", SITE], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    ledger = Ledger(tmp_path / "ledger.db")
    (exp,) = ledger.experiments()
    (sub,) = ledger.submissions(exp["exp_id"])
    assert sub["state"] == "INTENT" and sub["job_id"] is None
    queued = SlurmBackend().squeue_rows(name_prefix=f"sx.{exp['exp_id']}.")
    assert queued, "the job sbatch created is in the queue"

    # Launching again submits nothing: the experiment is known.
    again = subprocess.run([*exe, "launch", str(sweep), "--site", SITE], capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0 and "nothing submitted" in again.stderr
    ledger = wait_done(tmp_path, exp["exp_id"])
    (sub,) = ledger.submissions(exp["exp_id"])
    assert sub["state"] == "ADOPTED" and sub["job_id"] == queued[0].array_job_id
    assert all(r["state"] == "COMPLETED" for r in ledger.runs(exp["exp_id"]))
    # Every job carrying the experiment's tag is that one array: nothing was submitted twice.
    rows = SlurmBackend().sacct_rows([], since="now-1hours", names=[f"sx.{exp['exp_id']}.000"])
    assert rows and {r.array_job_id or r.job_id_raw for r in rows} == {sub["job_id"]}


@pytest.mark.destructive(wipes_state=True)
def test_job_ids_reused_after_controller_state_loss_are_never_confused(tmp_path, cluster):
    """Wipe slurmctld's state twice so two experiments get the same job id; sacct then holds
    both jobs under that id, and the ledger must keep them apart by submit time."""
    cluster.reset()
    first = write_sweep(tmp_path, "reuse-a", "x = [1, 2]")
    exp_a = launch(tmp_path, first)
    ledger = wait_done(tmp_path, exp_a)
    (sub_a,) = ledger.submissions(exp_a)
    before = {a["attempt_id"]: dict(a) for a in ledger.attempts(exp_a)}
    assert {a["state"] for a in before.values()} == {"COMPLETED"}

    cluster.reset()
    second = write_sweep(tmp_path, "reuse-b", "x = [1, 2]", command="bash -c 'exit 3' {x}")
    exp_b = launch(tmp_path, second)
    (sub_b,) = ledger.submissions(exp_b)
    assert sub_b["job_id"] == sub_a["job_id"], "the reset should have given the same job id again"
    ledger = wait_done(tmp_path, exp_b)

    rows = SlurmBackend().sacct_rows([sub_a["job_id"]], since=CURRENT.since([]))
    assert len({r.submit for r in rows if r.array_job_id == sub_a["job_id"]}) >= 2, rows
    assert {r["state"] for r in ledger.runs(exp_b)} == {"FAILED"}
    after = {a["attempt_id"]: dict(a) for a in ledger.attempts(exp_a)}
    assert after == before, "the old experiment's attempts took state from the new jobs"
    keys_a = {(a["job_key"], a["submit_time"]) for a in after.values()}
    keys_b = {(a["job_key"], a["submit_time"]) for a in ledger.attempts(exp_b)}
    assert {k for k, _ in keys_a} == {k for k, _ in keys_b} and not keys_a & keys_b
