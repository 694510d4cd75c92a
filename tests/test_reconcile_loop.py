"""Reconcile without cron (issue 15 item 3), offline: `reconcile --loop` (passes go on when Slurm
is unavailable or a pass raises; SIGINT/SIGTERM stop it cleanly, tested on a real process),
`status --refresh`, `cron --remove`, and `cron --scrontab` against a fake scrontab command (the
real one is tests/test_scron_cluster.py)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_reconcile import FakeBackend, make_exp, row, states, submit

from slurmexp.cli import main
from slurmexp.ledger import Ledger
from slurmexp.reconcile import context as pc
from slurmexp.reconcile import cron, loop, scron
from slurmexp.reconcile.context import PassSummary

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def ledger(tmp_path):
    led = Ledger(tmp_path / "home" / "ledger.db")
    yield led
    led.close()


def cli(ledger_path, *args):
    return CliRunner().invoke(main, ["--ledger", str(ledger_path), *args])


# --- reconcile --loop ------------------------------------------------------------------------

def test_loop_goes_on_when_slurm_is_unavailable(ledger, tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "MIN_INTERVAL_S", 0.01)
    scripts = make_exp(ledger, tmp_path)
    t0 = datetime.now().astimezone().replace(microsecond=0)
    submit(ledger, scripts, "100", submit_time=t0)
    fake = FakeBackend()
    fake.unavailable = {"sacct"}
    seen: list[PassSummary] = []

    def report(summary):
        seen.append(summary)
        # slurmdbd is back for the next pass
        fake.unavailable = set()
        fake.rows = [row(f"100_{i}", "COMPLETED", t0) for i in range(4)]

    n = loop.run_loop(ledger, 0.01, report=report, max_passes=2, backend=fake)
    assert n == 2
    assert not seen[0].ok and seen[0].exit_code == 3 and "Connection refused" in seen[0].error
    assert seen[1].ok
    assert set(states(ledger).values()) == {"COMPLETED"}


def test_loop_survives_a_pass_that_raises(ledger, monkeypatch):
    monkeypatch.setattr(loop, "MIN_INTERVAL_S", 0.01)
    calls = []

    def flaky(_ledger, **_kw):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("disk full")
        return PassSummary()

    seen = []
    assert loop.run_loop(ledger, 0.01, report=seen.append, max_passes=3, pass_fn=flaky) == 3
    assert seen[0].error == "OSError: disk full" and seen[0].exit_code == 1
    assert seen[1].ok and seen[2].ok


def test_loop_refuses_a_short_interval(tmp_path):
    result = cli(tmp_path / "l.db", "reconcile", "--loop", "1")
    assert result.exit_code == 1
    assert "--loop 1 is too short" in result.output and "at least 5" in result.output


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_loop_stops_cleanly_on_a_signal(tmp_path, sig):
    """A real `slurmexp reconcile --loop` process: passes, then SIGTERM/SIGINT -> exit 0."""
    ledger_path = tmp_path / "ledger.db"
    Ledger(ledger_path).close()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "slurmexp", "--ledger", str(ledger_path),
                             "reconcile", "--loop", "5"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        beat = None
        while beat is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            led = Ledger(ledger_path)
            beat = led.last_heartbeat()
            led.close()
        assert beat is not None and beat["ok"], proc.poll()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "a pass every 5s" in err and "stopped after 1 pass(es)" in err
    assert "Traceback" not in err
    assert "reconcile: 0 active attempt(s)" in out and out.startswith("[")


# --- status --refresh ------------------------------------------------------------------------

def test_status_refresh_runs_a_pass_first(tmp_path):
    ledger_path = tmp_path / "ledger.db"
    Ledger(ledger_path).close()
    assert cli(ledger_path, "status").exit_code == 0
    led = Ledger(ledger_path)
    assert led.last_heartbeat() is None              # plain status asks no one
    led.close()
    result = cli(ledger_path, "status", "--refresh")
    assert result.exit_code == 0, result.output
    led = Ledger(ledger_path)
    assert led.last_heartbeat()["ok"]
    # Another pass holds the lock: said, and the table is still shown.
    with pc.pass_lock(led) as got:
        assert got
        result = cli(ledger_path, "status", "--refresh")
    led.close()
    assert result.exit_code == 0 and "another reconcile pass is running" in result.output


def test_status_refresh_with_slurm_unavailable_warns_and_shows(ledger, tmp_path, monkeypatch):
    scripts = make_exp(ledger, tmp_path)
    submit(ledger, scripts, "100")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))   # no sacct: SlurmUnavailable
    result = cli(ledger.path, "status", "--refresh")
    assert result.exit_code == 0, result.output
    assert "refresh: the reconcile pass failed" in result.output and "sacct" in result.output
    assert "SUBMITTED" in result.output


# --- cron --remove ---------------------------------------------------------------------------

def _fake_table(tmp_path, name: str, initial: str | None, disabled: bool = False) -> Path:
    """A fake crontab/scrontab on PATH: -l, - (stdin), -r; or 'disabled' like Slurm's."""
    store = tmp_path / f"{name}.txt"
    if initial is not None:
        store.write_text(initial)
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    exe = bindir / name
    fatal = f'echo "{name}: fatal: scrontab is disabled on this cluster" >&2; exit 1' if disabled else ":"
    exe.write_text(f"""#!/bin/bash
{fatal}
case "$1" in
  -l) [ -f {store} ] || {{ echo "no crontab for $USER" >&2; exit 1; }}; cat {store} ;;
  -) cat > {store} ;;
  -r) [ -f {store} ] || {{ echo "no crontab for $USER" >&2; exit 1; }}; rm {store} ;;
  *) exit 2 ;;
esac
""")
    exe.chmod(0o755)
    return exe


def test_remove_cron_keeps_the_other_lines(tmp_path):
    line = cron.cron_line(5, tmp_path / "ledger.db", "/x/slurmexp")
    exe = _fake_table(tmp_path, "crontab", f"MAILTO=me\n0 1 * * * backup.sh\n{line}\n")
    assert cron.remove_cron(crontab=str(exe))
    assert (tmp_path / "crontab.txt").read_text() == "MAILTO=me\n0 1 * * * backup.sh\n"
    assert not cron.remove_cron(crontab=str(exe))
    assert not cron.remove_cron(crontab=str(tmp_path / "nope"))


def test_cron_line_carries_pythonpath_only_for_python_m(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/src/sx")
    assert "PYTHONPATH=/src/sx" in cron.cron_line(5, "/l.db", ["/usr/bin/python3", "-m", "slurmexp"])
    assert "PYTHONPATH" not in cron.cron_line(5, "/l.db", "/opt/bin/slurmexp")


# --- cron --scrontab against a fake scrontab --------------------------------------------------

OTHER = "#SCRON --job-name=mine\n0 0 * * * /home/me/backup.sh\n"


def test_scron_entry_block(tmp_path, monkeypatch):
    monkeypatch.delenv("PYTHONPATH", raising=False)
    entry = scron.scron_entry(5, tmp_path / "ledger.db", "/opt/sx/bin/slurmexp",
                              path_env="/usr/bin:/bin", options=["--partition=debug"])
    lines = entry.splitlines()
    assert lines[:6] == [f"#SCRON --job-name={scron.SCRON_JOB_NAME}", f"#SCRON --time={scron.SCRON_TIME}",
                         "#SCRON --ntasks=1", f"#SCRON --output={tmp_path}/reconcile.log",
                         "#SCRON --open-mode=append", "#SCRON --partition=debug"]
    assert lines[6].startswith("*/5 * * * * PATH=/usr/bin:/bin ")
    assert lines[6].endswith(f"--ledger {tmp_path}/ledger.db reconcile --quiet {scron.SCRON_MARKER}")
    assert ">>" not in lines[6]                        # the log is Slurm's --output
    with pytest.raises(Exception, match="would expand"):
        scron.scron_entry(5, "/data/$USER/ledger.db", "/x")


def test_cli_scrontab_install_replace_remove(tmp_path, monkeypatch):
    _fake_table(tmp_path, "scrontab", OTHER)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    ledger_path = tmp_path / "ledger.db"
    result = cli(ledger_path, "cron", "--scrontab", "--every", "2")
    assert result.exit_code == 0, result.output
    table = (tmp_path / "scrontab.txt").read_text()
    assert table.startswith(OTHER) and table.count(scron.SCRON_MARKER) == 1
    assert "*/2 * * * *" in table
    result = cli(ledger_path, "cron", "--scrontab", "--every", "10", "--scron-option", "--qos=low")
    table = (tmp_path / "scrontab.txt").read_text()
    assert table.startswith(OTHER) and table.count(scron.SCRON_MARKER) == 1
    assert "*/10 * * * *" in table and "#SCRON --qos=low" in table and "*/2 " not in table
    assert table.count("#SCRON --job-name=") == 2
    result = cli(ledger_path, "cron", "--scrontab", "--remove")
    assert result.exit_code == 0 and "removed" in result.output
    assert (tmp_path / "scrontab.txt").read_text() == OTHER
    assert "no slurmexp scrontab entry" in cli(ledger_path, "cron", "--scrontab", "--remove").output
    # Our block alone: removing it removes the table (scrontab -r).
    (tmp_path / "scrontab.txt").unlink()
    assert cli(ledger_path, "cron", "--scrontab").exit_code == 0
    assert cli(ledger_path, "cron", "--scrontab", "--remove").exit_code == 0
    assert not (tmp_path / "scrontab.txt").exists()


def test_cli_scrontab_disabled_or_missing_says_what_to_do(tmp_path, monkeypatch):
    _fake_table(tmp_path, "scrontab", None, disabled=True)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    result = cli(tmp_path / "ledger.db", "cron", "--scrontab")
    assert result.exit_code == 1
    assert "scrontab is disabled on this cluster" in result.output
    assert "ScronParameters=enable" in result.output and "reconcile --loop 300" in result.output
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result = cli(tmp_path / "ledger.db", "cron", "--scrontab", "--remove")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "no scrontab command" in result.output and "reconcile --loop 300" in result.output
    assert "cron --install" in result.output
    result = cli(tmp_path / "ledger.db", "cron", "--scron-option", "-p debug")
    assert result.exit_code == 2 and "--scron-option needs --scrontab" in result.output


def test_loop_process_goes_on_when_sacct_is_missing(tmp_path):
    """A real loop whose Slurm commands are not on PATH (SlurmUnavailable, exit 3 for a single
    pass): each pass is printed as FAILED with its time, the loop keeps going, SIGTERM ends it."""
    led = Ledger(tmp_path / "home" / "ledger.db")
    submit(led, make_exp(led, tmp_path), "100")
    led.close()
    empty = tmp_path / "empty"
    empty.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO), PATH=str(empty))
    proc = subprocess.Popen([sys.executable, "-m", "slurmexp", "--ledger", str(tmp_path / "home" / "ledger.db"),
                             "reconcile", "--loop", "5"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 40     # two passes, 5 s apart: two (failed) heartbeats
        beats = 0
        while beats < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.3)
            led = Ledger(tmp_path / "home" / "ledger.db")
            beats = led.db.execute("SELECT COUNT(*) FROM heartbeats WHERE ok = 0").fetchone()[0]
            led.close()
        assert beats == 2 and proc.poll() is None, proc.poll()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    failed = [ln for ln in out.splitlines() if "reconcile: FAILED" in ln]
    assert len(failed) == 2 and all(ln.startswith("[") for ln in failed), out
    assert "sacct: command not found" in out and "stopped after 2 pass(es)" in err
