"""`slurmexp cron --scrontab` against a REAL cluster's scrontab.

The 24.11 and 26.05 roots have `ScronParameters=enable` (cluster.sh writes it where the Slurm
has the scrontab command): there the test installs the entry next to an unrelated entry of the
user's, sees the crontab job in squeue, waits (at most ~2.5 min: the schedule's granularity is
one minute) until Slurm has run the entry as a job and that job's pass left a heartbeat in the
ledger, removes it, and checks the user's own entry survived both. Debian 12's Slurm 22.05 (the
native cluster) ships no scrontab: there the test checks the refusal that says what to use
instead. Run it with SX_TEST_CLUSTER=26.05 (or 24.11) for the scrontab half.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from slurmexp.cli import main
from slurmexp.ledger import Ledger
from slurmexp.reconcile.scron import SCRON_JOB_NAME, SCRON_MARKER

pytestmark = pytest.mark.cluster

# Not "sx-..." / "sx.": the test cluster's `up` cancels leftover jobs by those names.
OTHER_NAME = "scrontest-other"
OTHER = f"#SCRON --job-name={OTHER_NAME}\n0 0 1 1 * true\n"


def _sh(*argv: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=check, input=stdin)


def _queued(name: str) -> list[str]:
    out = _sh("squeue", "-h", "--name", name, "-o", "%i %j %T").stdout
    return [ln for ln in out.splitlines() if ln.strip()]


def _cli(ledger, *args: str):
    return CliRunner().invoke(main, ["--ledger", str(ledger), "cron", "--scrontab", *args],
                              catch_exceptions=False)


@pytest.fixture
def python_m_slurmexp(monkeypatch):
    """The entry runs `python -m slurmexp` with this checkout on PYTHONPATH (a console script
    found on PATH may be a pyenv shim the cluster's nodes do not have, or another checkout)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    monkeypatch.setenv("PYTHONPATH", here)
    path = [p for p in os.environ["PATH"].split(os.pathsep)
            if not os.path.exists(os.path.join(p, "slurmexp"))]
    monkeypatch.setenv("PATH", os.pathsep.join(path))
    assert shutil.which("slurmexp") is None and sys.executable


def test_scrontab_install_runs_and_remove(cluster, tmp_path, python_m_slurmexp):
    ledger = tmp_path / "ledger.db"
    Ledger(ledger).close()
    if shutil.which("scrontab") is None:
        # Debian 12's 22.05: no scrontab. The refusal says so and names what to use instead.
        result = CliRunner().invoke(main, ["--ledger", str(ledger), "cron", "--scrontab"])
        assert result.exit_code == 1, result.output
        assert "no scrontab command" in result.output and "reconcile --loop" in result.output
        assert "Traceback" not in result.output
        return
    _sh("scrontab", "-", stdin=OTHER)
    try:
        result = _cli(ledger, "--every", "1")
        assert result.exit_code == 0, result.output
        table = _sh("scrontab", "-l").stdout
        assert SCRON_MARKER in table and OTHER_NAME in table, table
        assert f"#SCRON --job-name={SCRON_JOB_NAME}" in table
        assert _queued(SCRON_JOB_NAME), "scrontab made no crontab job"
        # Installing again replaces our block, never doubles it.
        result = _cli(ledger, "--every", "1")
        assert result.exit_code == 0, result.output
        assert _sh("scrontab", "-l").stdout.count(SCRON_MARKER) == 1
        # Slurm runs the entry at the next minute; the job's pass leaves a heartbeat.
        deadline = time.monotonic() + 150
        beat = None
        while beat is None and time.monotonic() < deadline:
            time.sleep(3)
            led = Ledger(ledger)
            beat = led.last_heartbeat()
            led.close()
        log = tmp_path / "reconcile.log"
        assert beat is not None, (f"the scrontab entry's pass did not run within 150 s: "
                                  f"{_queued(SCRON_JOB_NAME)}; log: "
                                  f"{log.read_text() if log.exists() else 'none'}")
        assert beat["ok"], beat
        assert log.exists(), "the entry's job wrote no --output log"

        result = _cli(ledger, "--remove")
        assert result.exit_code == 0 and "removed" in result.output, result.output
        table = _sh("scrontab", "-l", check=False).stdout
        assert SCRON_MARKER not in table and OTHER_NAME in table, table
        deadline = time.monotonic() + 30
        while _queued(SCRON_JOB_NAME) and time.monotonic() < deadline:
            time.sleep(1)
        assert not _queued(SCRON_JOB_NAME), "the removed entry's job is still queued"
        result = _cli(ledger, "--remove")
        assert result.exit_code == 0 and "no slurmexp scrontab entry" in result.output, result.output
    finally:
        _sh("scrontab", "-r", check=False)
