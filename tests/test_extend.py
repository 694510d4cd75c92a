"""Issue 15 items 1 and 8 without a cluster: `launch --skip-completed` (launch.reuse,
ledger.reuse) and `[notify]` (reconcile.notify), through the local backend and a real
reconcile pass."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from slurmexp.cli import main
from slurmexp.errors import SpecError
from slurmexp.launch import launcher
from slurmexp.ledger import Ledger
from slurmexp.reconcile.one_pass import reconcile_pass
from slurmexp.report.build import build_report
from slurmexp.sweep.spec import load_sweep

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
# Each run writes its parameter's square as a metric, in its own run folder.
JOB = "import json, sys\nopen(sys.argv[2] + '/metrics.json', 'w').write(json.dumps({'y': int(sys.argv[1]) ** 2}))\n"


def write_sweep(tmp_path: Path, values: list[int], *, mem: str = "100M", extra: str = "") -> Path:
    (tmp_path / "job.py").write_text(JOB)
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(f'name = "ext"\ncommand = "{PY} job.py {{x}} {{run_dir}}"\n'
                     f'[params]\nx = {values}\n[resources]\ntime = "00:05:00"\nmem = "{mem}"\n'
                     + extra)
    return sweep


@pytest.fixture
def site(tmp_path) -> Path:
    path = tmp_path / "site.toml"
    path.write_text((REPO / "site.toml").read_text().replace('"templates/', f'"{REPO}/templates/'))
    return path


@pytest.fixture
def ledger(tmp_path):
    led = Ledger(tmp_path / "ledger.db")
    yield led
    led.close()


def test_extending_a_sweep_reuses_the_completed_runs(tmp_path, site, ledger):
    first = launcher.launch(write_sweep(tmp_path, [1, 2]), site, backend="local", ledger=ledger)
    assert {r["state"] for r in ledger.runs(first.exp_id)} == {"COMPLETED"}
    assert first.reuse_message == ""

    # Without the flag: everything runs again, and launch says how much need not have.
    plain = launcher.launch(write_sweep(tmp_path, [1, 2, 3]), site, backend="local", ledger=ledger)
    assert "2 of 3 run(s) completed before" in plain.reuse_message
    assert "--skip-completed" in plain.reuse_message
    assert len(ledger.attempts(plain.exp_id)) == 3

    ext = launcher.launch(write_sweep(tmp_path, [1, 2, 4]), site, backend="local", ledger=ledger,
                          skip_completed=True)
    assert ext.reuse_message.startswith("reused 2 of 3 run(s)")
    runs = {r["run_id"]: r for r in ledger.runs(ext.exp_id)}
    assert len(runs) == 3 and {r["state"] for r in runs.values()} == {"COMPLETED"}
    assert len(ledger.attempts(ext.exp_id)) == 1          # only x = 4 ran
    assert ledger.get_experiment(ext.exp_id)["n_runs"] == 3
    assert ledger.get_experiment(ext.exp_id)["state"] == "FINISHED"
    report = build_report(ledger, ext.exp_id)
    table = report.runs.set_index("run_id")
    assert sorted(table["metric.y"].tolist()) == [1, 4, 16]
    reused = table[table["reused_from"].notna()]
    # The newest experiment that ran them is the source; their folders are its.
    assert set(reused["reused_from"]) == {plain.exp_id}
    assert all(str(d).startswith(str(launcher.prepare(write_sweep(tmp_path, [1]), site)
                                      .exp_dir(plain.exp_id))) for d in reused["run_dir"])
    assert all("reused: completed in" in r for r in reused["reason"])


def test_other_resources_are_not_the_same_run(tmp_path, site, ledger):
    launcher.launch(write_sweep(tmp_path, [1, 2]), site, backend="local", ledger=ledger)
    ext = launcher.launch(write_sweep(tmp_path, [1, 2, 3], mem="200M"), site, backend="local",
                          ledger=ledger, skip_completed=True)
    assert ext.reuse_message == "" and len(ledger.attempts(ext.exp_id)) == 3


def test_failed_runs_are_run_again(tmp_path, site, ledger):
    (tmp_path / "fail.py").write_text("import sys\nsys.exit(int(sys.argv[1]) - 1)\n")
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(f'name = "f"\ncommand = "{PY} fail.py {{x}}"\n'
                     '[params]\nx = [1, 2]\n[resources]\ntime = "00:05:00"\nmem = "100M"\n')
    launcher.launch(sweep, site, backend="local", ledger=ledger)
    sweep.write_text(sweep.read_text().replace("[1, 2]", "[1, 2, 3]"))
    ext = launcher.launch(sweep, site, backend="local", ledger=ledger, skip_completed=True)
    assert ext.reuse_message.startswith("reused 1 of 3")
    assert len(ledger.attempts(ext.exp_id)) == 2


def test_a_sweep_whose_every_run_completed_submits_nothing(tmp_path, site, ledger):
    launcher.launch(write_sweep(tmp_path, [1, 2]), site, backend="local", ledger=ledger)
    ext = launcher.launch(write_sweep(tmp_path, [2, 1]), site, backend="local", ledger=ledger,
                          skip_completed=True)
    exp = ledger.get_experiment(ext.exp_id)
    assert exp["state"] == "FINISHED" and not ledger.attempts(ext.exp_id) and exp["n_runs"] == 2
    assert not ledger.submissions(ext.exp_id)


def test_the_cli_flag_and_the_stderr_line(tmp_path, site):
    db = str(tmp_path / "cli.db")
    runner = CliRunner()
    first = runner.invoke(main, ["--ledger", db, "launch", str(write_sweep(tmp_path, [1, 2])),
                                 "--site", str(site), "--backend", "local"])
    assert first.exit_code == 0, first.output
    args = ["--ledger", db, "launch", str(write_sweep(tmp_path, [1, 2, 3])), "--site", str(site),
            "--backend", "local"]
    res = runner.invoke(main, [*args, "--skip-completed"])
    assert res.exit_code == 0, res.output
    assert "reused 2 of 3 run(s)" in res.stderr
    with Ledger(tmp_path / "cli.db") as led:
        assert len(led.attempts(res.stdout.strip())) == 1
    again = runner.invoke(main, [*args[:3], str(write_sweep(tmp_path, [1, 2, 3, 5])), *args[4:]])
    lines = [line for line in again.stderr.splitlines() if "--skip-completed" in line]
    assert len(lines) == 1 and "3 of 4 run(s)" in lines[0]


def test_the_python_api_takes_the_keyword():
    import inspect

    import slurmexp.functions.api as api
    import slurmexp.functions.launch as functions_launch

    # slurmexp.sweep(..., skip_completed=True) is launch_sweep's, which is launcher.launch's.
    assert inspect.signature(api.sweep).parameters["skip_completed"].default is False
    assert "skip_completed" in inspect.signature(functions_launch.launch_sweep).parameters
    assert "notify" in inspect.signature(api.sweep).parameters


# --- [notify] -----------------------------------------------------------------------------


def notify_sweep(tmp_path: Path, command: str, timeout: str = "10s") -> Path:
    return write_sweep(tmp_path, [1, 2], extra=f'[notify]\ncommand = {command!r}\ntimeout = "{timeout}"\n')


def test_notify_runs_once_with_the_summary(tmp_path, site, ledger):
    out = tmp_path / "notified.txt"
    cmd = (f'echo "$SLURMEXP_EXPERIMENT $SLURMEXP_STATE $SLURMEXP_RUNS $SLURMEXP_COUNT_COMPLETED '
           f'$SLURMEXP_COUNTS|$SLURMEXP_REPORT" >> {out}')
    exp = launcher.launch(notify_sweep(tmp_path, cmd), site, backend="local", ledger=ledger)
    assert ledger.notification(exp.exp_id)[0] == "pending" and not out.exists()
    first = reconcile_pass(ledger)
    assert first.ok and not first.warnings
    lines = out.read_text().splitlines()
    assert lines == [f"{exp.exp_id} FINISHED 2 2 COMPLETED=2|slurmexp --ledger {ledger.path} "
                     f"report {exp.exp_id}"]
    second = reconcile_pass(ledger)
    assert second.ok and out.read_text().splitlines() == lines      # never twice
    state, outcome = ledger.notification(exp.exp_id)
    assert state == "done" and outcome["ok"] and outcome["exit_code"] == 0


def test_a_failing_notify_command_is_a_warning_not_a_failed_pass(tmp_path, site, ledger):
    exp = launcher.launch(notify_sweep(tmp_path, "echo no mail server >&2; exit 3"), site,
                          backend="local", ledger=ledger)
    summary = reconcile_pass(ledger)
    assert summary.ok and summary.exit_code == 0
    assert summary.warnings == [f"{exp.exp_id}: [notify] command exit 3: no mail server; "
                                "it is not run again"]
    assert reconcile_pass(ledger).warnings == []
    assert ledger.notification(exp.exp_id)[1]["exit_code"] == 3


def test_a_notify_command_past_its_timeout_is_killed(tmp_path, site, ledger):
    exp = launcher.launch(notify_sweep(tmp_path, "sleep 30", timeout="1s"), site,
                          backend="local", ledger=ledger)
    summary = reconcile_pass(ledger)
    assert summary.ok and summary.seconds < 10
    assert summary.warnings == [f"{exp.exp_id}: [notify] command timed out after 1s (killed); "
                                "it is not run again"]


def test_notify_waits_for_the_experiment_to_finish(tmp_path, site, ledger):
    exp = launcher.launch(notify_sweep(tmp_path, f"touch {tmp_path / 'n'}"), site,
                          backend="local", ledger=ledger)
    ledger.set_experiment_state(exp.exp_id, "SUBMITTED")
    reconcile_pass(ledger)
    assert not (tmp_path / "n").exists()
    ledger.set_experiment_state(exp.exp_id, "CANCELLED")
    reconcile_pass(ledger)
    assert (tmp_path / "n").exists()


def test_notify_is_claimed_once(tmp_path, site, ledger):
    exp = launcher.launch(notify_sweep(tmp_path, "true"), site, backend="local", ledger=ledger)
    assert ledger.claim_notification(exp.exp_id) is True
    assert ledger.claim_notification(exp.exp_id) is False       # a racing pass
    assert ledger.notifications_due(["FINISHED"]) == []


def test_notify_table_is_strict(tmp_path):
    sweep = write_sweep(tmp_path, [1], extra='[notify]\ncomand = "x"\ntimeout = "5"\n')
    with pytest.raises(SpecError) as err:
        load_sweep(sweep)
    text = "\n".join(p.format() for p in err.value.problems)
    assert "[notify.comand] unknown key 'comand'" in text and "[notify.timeout] bad timeout '5'" in text
    assert "[notify.command]" in text          # required
    blank = write_sweep(tmp_path, [1], extra='[notify]\ncommand = "  "\n')
    with pytest.raises(SpecError):
        load_sweep(blank)


def test_notify_is_not_part_of_the_fingerprint(tmp_path, site):
    plain = launcher.prepare(write_sweep(tmp_path, [1]), site).fingerprint
    noted = launcher.prepare(write_sweep(tmp_path, [1], extra='[notify]\ncommand = "true"\n'), site)
    assert noted.fingerprint == plain


def test_python_sweep_skip_completed(tmp_path, monkeypatch):
    from test_functions import SITE, FakeScheduler, metric_fn, use_scheduler

    import slurmexp
    from slurmexp.errors import SlurmexpWarning

    fake = FakeScheduler()
    use_scheduler(monkeypatch, fake)
    kw = dict(site=SITE, ledger=tmp_path / "l.db", workdir=tmp_path)
    first = slurmexp.sweep(metric_fn, params={"lr": [0.1, 0.01]}, **kw)
    with Ledger(tmp_path / "l.db") as led:
        for a in led.attempts(first.id):
            led.update_attempt(a["attempt_id"], state="COMPLETED")
    with pytest.warns(SlurmexpWarning, match="pass skip_completed=True"):
        slurmexp.sweep(metric_fn, params={"lr": [0.1, 0.01, 0.002]}, **kw)
    assert fake.submitted[-1]["array"] == "0-2"
    ext = slurmexp.sweep(metric_fn, params={"lr": [0.1, 0.01, 0.001]}, skip_completed=True, **kw)
    assert fake.submitted[-1]["array"] == "0"          # one task: lr = 0.001
    assert ext.status() == {"COMPLETED": 2, "SUBMITTED": 1}


def test_reconcile_prints_a_failed_notify_as_a_warning(tmp_path, site):
    db = tmp_path / "cli.db"
    with Ledger(db) as led:
        exp = launcher.launch(notify_sweep(tmp_path, "exit 4"), site, backend="local", ledger=led)
    res = CliRunner().invoke(main, ["--ledger", str(db), "reconcile"])
    assert res.exit_code == 0, res.output
    assert f"warning: {exp.exp_id}: [notify] command exit 4; it is not run again" in res.output
    again = CliRunner().invoke(main, ["--ledger", str(db), "reconcile"])
    assert again.exit_code == 0 and "notify" not in again.output


def test_python_sweep_notify_keyword(tmp_path, monkeypatch):
    from test_functions import SITE, FakeScheduler, metric_fn, use_scheduler

    import slurmexp

    use_scheduler(monkeypatch, FakeScheduler())
    exp = slurmexp.sweep(metric_fn, params={"lr": [0.1]}, site=SITE, ledger=tmp_path / "l.db",
                         workdir=tmp_path, notify={"command": "echo done", "timeout": "5s"})
    with Ledger(tmp_path / "l.db") as led:
        assert led.notification(exp.id)[0] == "pending"
        notify = led.experiment_settings(exp.id).notify
        assert (notify.command, notify.timeout_s, notify.workdir) == ("echo done", 5, str(tmp_path))


def test_dry_run_shows_the_plan_without_the_reused_runs(tmp_path, site):
    db = str(tmp_path / "cli.db")
    runner = CliRunner()
    assert runner.invoke(main, ["--ledger", db, "launch", str(write_sweep(tmp_path, [1, 2])),
                                "--site", str(site), "--backend", "local"]).exit_code == 0
    res = runner.invoke(main, ["--ledger", db, "launch", str(write_sweep(tmp_path, [1, 2, 3])),
                               "--site", str(site), "--backend", "local", "--dry-run", "--skip-completed"])
    assert res.exit_code == 0, res.output
    assert "reused 2 of 3 run(s)" in res.stderr and "runs: 1" in res.stdout
    with Ledger(tmp_path / "cli.db") as led:
        assert len(led.experiments()) == 1          # nothing recorded


def test_a_run_of_another_cluster_is_not_reused(tmp_path, site, ledger):
    from slurmexp.launch.reuse import plan_reuse

    launcher.launch(write_sweep(tmp_path, [1, 2]), site, backend="local", ledger=ledger)
    sweep = write_sweep(tmp_path, [1, 2, 3])
    assert plan_reuse(launcher.prepare(sweep, site), ledger, skip=False).skippable == 2
    other = tmp_path / "other-site.toml"
    text = site.read_text()
    other.write_text(text.replace(f'cluster = "{launcher.prepare(sweep, site).site.cluster}"',
                                  'cluster = "elsewhere"', 1))
    assert other.read_text() != text
    assert plan_reuse(launcher.prepare(sweep, other), ledger, skip=True).reused == []
