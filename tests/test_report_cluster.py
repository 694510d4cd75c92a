"""`slurmexp report` on a sweep that really ran on the test cluster: completed runs with
metrics, one FAILED run, and runs retried after a node failure."""
from __future__ import annotations

import io
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

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parent.parent
TRAIN = """\
import sys, time
import slurmexp
x = sys.argv[1]
time.sleep(12)
if x == "bad":
    print("diverged", file=sys.stderr)
    sys.exit(2)
slurmexp.log_metrics(score=float(x) * 10, step=1)
"""


def cli(tmp_path, *args):
    result = CliRunner().invoke(main, ["--ledger", str(tmp_path / "ledger.db"), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def launch_sweep(tmp_path, name: str, train: str, params: str, resources: str):
    """Launch a one-parameter sweep of `train` (as train.py) through the CLI on the test
    cluster: (experiment id, its ledger, a backend to reconcile it with)."""
    (tmp_path / "train.py").write_text(train)
    sweep = tmp_path / f"{name}.toml"
    sweep.write_text(f'name = "{name}"\ncommand = "{sys.executable} train.py {{x}}"\n'
                     f'[params]\n{params}\n[resources]\n{resources}\n')
    exp_id = cli(tmp_path, "launch", str(sweep), "--site", str(CURRENT.site_toml)).split()[-1]
    return exp_id, Ledger(tmp_path / "ledger.db"), SlurmBackend(cluster=CURRENT.name)


def test_report_of_a_real_sweep_with_failure_and_node_fail_retry(tmp_path, cluster):
    exp_id, ledger, backend = launch_sweep(
        tmp_path, "rep", TRAIN, 'x = ["1", "2", "3", "bad"]',
        'gpus = 1\ngpu_type = "a100"\ntime = "00:05:00"\n[retry]\nmax_attempts = 3\nbackoff_s = 0')

    # Fail g1 while two tasks run on it (g1 has 2 a100s; the other tasks wait).
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        reconcile_pass(ledger, backend, grace_s=600)
        if sum(a["state"] == "RUNNING" for a in ledger.attempts(exp_id)) >= 1:
            break
        time.sleep(1)
    time.sleep(2)
    cluster.fail_node("g1")
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            reconcile_pass(ledger, backend, grace_s=600)
            if all(r["state"] in ("COMPLETED", "FAILED") for r in ledger.runs(exp_id)):
                break
            time.sleep(2)
    finally:
        cluster.resume_node("g1")
    runs = {r["params"]["x"]: r for r in ledger.runs(exp_id)}
    assert {x: r["state"] for x, r in runs.items()} == {"1": "COMPLETED", "2": "COMPLETED", "3": "COMPLETED",
                                                        "bad": "FAILED"}
    attempts = ledger.attempts(exp_id)
    node_failed = [a for a in attempts if a["state"] == "NODE_FAIL"]
    assert node_failed, [a["state"] for a in attempts]

    import pandas as pd

    frame = pd.read_csv(io.StringIO(cli(tmp_path, "report", exp_id, "--format", "csv")))
    documented = (REPO / "docs" / "REPORT.md").read_text()
    for column in frame.columns:
        if not column.startswith(("param.", "metric.")):
            assert f"`{column}`" in documented, column
    rows = {str(r["param.x"]): r for _, r in frame.iterrows()}
    assert rows["bad"]["state"] == "FAILED" and "exit code 2" in rows["bad"]["reason"]
    assert "diverged" in rows["bad"]["reason"]
    for x in ("1", "2", "3"):
        assert rows[x]["state"] == "COMPLETED" and rows[x]["metric.score"] == float(x) * 10
    assert pd.isna(rows["bad"]["metric.score"])
    # GPU-hours from AllocTRES (gres/gpu=1) x elapsed, summed over each run's attempts.
    for x, run in runs.items():
        mine = [a for a in attempts if a["run_id"] == run["run_id"]]
        assert all("gres/gpu=1" in a["alloc_tres"] for a in mine if a["alloc_tres"])
        expected = sum((a["elapsed_s"] or 0) for a in mine) / 3600
        assert rows[x]["gpu_hours"] == pytest.approx(expected, rel=1e-6, abs=1e-9)
        assert rows[x]["attempts"] == len(mine)
        assert rows[x]["node"] == "g1"
    retried = [x for x, r in runs.items() if r["n_attempts"] > 1]
    assert retried and all(rows[x]["gpu_hours_wasted"] > 0 for x in retried)

    summary = json.loads(cli(tmp_path, "report", exp_id, "--format", "json"))
    text = json.dumps(summary)
    assert "NODE_FAIL" in text and "infrastructure" in text


STORED_TRAIN = """\
import sys
import slurmexp
x = sys.argv[1]
if x != "none":
    slurmexp.log_metrics(step=1, loss=float(x), eval={"acc": 0.5})
if x == "2":
    slurmexp.log_metrics(step=2, loss=0.25)
"""


def test_a_real_pass_stores_a_finished_runs_metrics_and_the_report_uses_them(tmp_path, cluster):
    from slurmexp.metrics import read_metrics
    from slurmexp.report.build import build_report, render_report

    exp_id, ledger, backend = launch_sweep(
        tmp_path, "stored", STORED_TRAIN, 'x = ["1", "2", "none"]',
        'partition = "cpu"\ncpus = 1\nmem = "100M"\ntime = "00:05:00"')
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        reconcile_pass(ledger, backend, grace_s=600)
        if all(r["state"] == "COMPLETED" for r in ledger.runs(exp_id)):
            break
        time.sleep(2)
    runs = {r["params"]["x"]: r for r in ledger.runs(exp_id)}
    assert {x: r["state"] for x, r in runs.items()} == {"1": "COMPLETED", "2": "COMPLETED",
                                                        "none": "COMPLETED"}
    stored = {x: json.loads(ledger.attempts(exp_id, run_id=r["run_id"])[-1]["metrics_json"])
              for x, r in runs.items()}
    assert stored == {"1": {"loss": 1.0, "eval.acc": 0.5}, "2": {"loss": 0.25, "eval.acc": 0.5},
                      "none": {}}
    assert all(stored[x] == (read_metrics(r["run_dir"]) or {}) for x, r in runs.items())

    from_files = render_report(build_report(ledger, [exp_id], from_files=True), "csv")
    assert cli(tmp_path, "report", exp_id, "--format", "csv") == from_files
    for r in runs.values():                  # the report of a finished sweep opens no metrics file
        for name in ("metrics.json", "metrics.jsonl"):
            (Path(r["run_dir"]) / name).unlink(missing_ok=True)
    assert cli(tmp_path, "report", exp_id, "--format", "csv") == from_files
    ledger.close()
