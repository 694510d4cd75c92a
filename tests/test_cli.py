"""CLI tests with CliRunner; results are checked through the library (the ledger), not only
through printed text. No cluster needed: these use --offline and the local backend."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from slurmexp.cli import main
from slurmexp.ledger import Ledger

REPO = Path(__file__).resolve().parent.parent
SITE = str(REPO / "site.toml")

TRAIN = """\
import json, os, sys
out = os.path.join(os.environ["SLURMEXP_RUN_DIR"], "seen.json")
json.dump(sys.argv[1:], open(out, "w"))
import slurmexp
slurmexp.log_metrics(score=float(len(sys.argv)))
if "fail" in sys.argv:
    print("boom", file=sys.stderr)
    sys.exit(3)
"""


def make_sweep(tmp_path: Path, params: str = 'x = ["a", "b", "fail"]') -> Path:
    (tmp_path / "train.py").write_text(TRAIN)
    path = tmp_path / "sweep.toml"
    path.write_text(f'name = "cli"\ncommand = "{sys.executable} train.py {{x}}"\n[params]\n{params}\n'
                    '[resources]\narray_parallelism = 2\n')
    return path


def run(tmp_path, *args, ok=True):
    result = CliRunner().invoke(main, ["--ledger", str(tmp_path / "ledger.db"), *args],
                                catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_launch_local_records_every_run(tmp_path):
    sweep = make_sweep(tmp_path)
    result = run(tmp_path, "launch", str(sweep), "--site", SITE, "--backend", "local")
    exp_id = result.stdout.strip().splitlines()[-1]
    ledger = Ledger(tmp_path / "ledger.db")
    (sub,) = ledger.submissions(exp_id)
    # the job id, said as one: "submitted: 8" read as a count of 8
    assert f"submitted job {sub['job_id']} (3 tasks in 1 array)\n" in result.stderr
    runs = {r["params"]["x"]: r for r in ledger.runs(exp_id)}
    assert {k: r["state"] for k, r in runs.items()} == {"a": "COMPLETED", "b": "COMPLETED", "fail": "FAILED"}
    assert runs["fail"]["reason"] == "exit code 3"
    assert json.loads((Path(runs["a"]["run_dir"]) / "seen.json").read_text()) == ["a"]
    attempts = ledger.attempts(exp_id)
    assert len(attempts) == 3 and all(a["start_time"] and a["end_time"] for a in attempts)
    # The event log shows the path through the same states as on Slurm.
    states = [e["to_state"] for e in ledger.events(exp_id, runs["a"]["run_id"]) if e["to_state"]]
    assert states[0] == "SUBMITTED" and "RUNNING" in states and states[-1] == "COMPLETED"
    exp = ledger.get_experiment(exp_id)
    assert exp["provenance"]["python"] and Path(exp["sweep_copy_path"]).read_text() == sweep.read_text()

    status = json.loads(run(tmp_path, "status", exp_id, "--format", "json").stdout)
    assert sorted(r["state"] for r in status) == ["COMPLETED", "COMPLETED", "FAILED"]


def test_launch_twice_submits_once_unless_new(tmp_path):
    sweep = make_sweep(tmp_path, 'x = ["a"]')
    first = run(tmp_path, "launch", str(sweep), "--site", SITE, "--backend", "local").stdout.split()[-1]
    again = run(tmp_path, "launch", str(sweep), "--site", SITE, "--backend", "local")
    assert again.stdout.split()[-1] == first and "nothing submitted" in again.stderr
    ledger = Ledger(tmp_path / "ledger.db")
    assert len(ledger.experiments()) == 1
    new = run(tmp_path, "launch", str(sweep), "--site", SITE, "--backend", "local", "--new").stdout.split()[-1]
    assert new == first + "-2"
    assert len(ledger.experiments()) == 2


def test_validate_refusal_exits_2_and_names_key(tmp_path):
    sweep = make_sweep(tmp_path)
    sweep.write_text(sweep.read_text() + 'gpu_type = "h100"\ngpus = 1\n')
    result = run(tmp_path, "validate", str(sweep), "--site", SITE, "--offline", ok=False)
    assert result.exit_code == 2
    assert "resources.gpu_type" in result.stderr and "h100" in result.stderr


def test_launch_refusal_writes_nothing(tmp_path):
    sweep = make_sweep(tmp_path)
    sweep.write_text(sweep.read_text() + "bogus = 1\n")
    result = run(tmp_path, "launch", str(sweep), "--site", SITE, "--backend", "local", ok=False)
    assert result.exit_code == 2 and "resources.bogus" in result.stderr
    assert Ledger(tmp_path / "ledger.db").experiments() == []
    assert not (tmp_path / "slurmexp-runs").exists()


def test_dry_run_prints_plan_and_scripts(tmp_path):
    sweep = make_sweep(tmp_path)
    result = run(tmp_path, "launch", str(sweep), "--site", SITE, "--backend", "local", "--dry-run")
    assert "#SBATCH --array=0-2%2" in result.stdout
    assert "partition cpu" in result.stdout
    assert not (tmp_path / "slurmexp-runs").exists()


def test_help_and_status_do_not_import_pandas(tmp_path):
    # `slurmexp --help` and `slurmexp status` must stay fast: pandas is for `report` only.
    # status reads an existing ledger only (it never creates one): make it first.
    Ledger(tmp_path / "l.db").close()
    code = ("import sys; from click.testing import CliRunner; from slurmexp.cli import main; "
            f"r = CliRunner().invoke(main, ['--ledger', {str(tmp_path / 'l.db')!r}, 'status']); "
            "assert r.exit_code == 0, r.output; assert 'pandas' not in sys.modules, 'pandas imported'; "
            "assert 'sqlite_utils' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_report_show_and_logs_after_local_launch(tmp_path):
    import io

    import pandas as pd

    sweep = make_sweep(tmp_path)
    exp_id = run(tmp_path, "launch", str(sweep), "--site", SITE, "--backend", "local").stdout.split()[-1]
    csv = run(tmp_path, "report", exp_id, "--format", "csv").stdout
    frame = pd.read_csv(io.StringIO(csv))
    assert {"run_id", "state", "param.x", "metric.score"} <= set(frame.columns)
    assert dict(zip(frame["param.x"], frame["state"])) == {"a": "COMPLETED", "b": "COMPLETED", "fail": "FAILED"}
    assert set(frame["metric.score"]) == {2.0}
    out = tmp_path / "r.html"
    run(tmp_path, "report", exp_id, "--format", "html", "--output", str(out))
    assert "<svg" in out.read_text()

    ledger = Ledger(tmp_path / "ledger.db")
    failed = ledger.runs(exp_id, state="FAILED")[0]
    shown = run(tmp_path, "show", f"{exp_id}:{failed['run_id']}").stdout
    assert failed["run_id"] in shown and "FAILED" in shown
    assert run(tmp_path, "logs", failed["run_id"], "--stderr").stdout == "boom\n"
    assert run(tmp_path, "report", exp_id, "--best", "score", "--max").exit_code == 0


def test_cron_line_runs_a_real_pass(tmp_path):
    """The printed crontab line, run as cron would (sh -c), reconciles and leaves a heartbeat."""
    ledger_path = tmp_path / "ledger.db"
    Ledger(ledger_path).close()
    line = run(tmp_path, "cron", "--every", "10").stdout.strip()
    fields = line.split(" ", 5)
    assert fields[:5] == ["*/10", "*", "*", "*", "*"]
    command = fields[5].split(" # slurmexp")[0].replace("\\%", "%")
    subprocess.run(["sh", "-c", command], check=True, timeout=60)
    assert (tmp_path / "reconcile.log").exists()
    health = run(tmp_path, "health", "--max-age", "5")
    assert "ok" in health.stdout
