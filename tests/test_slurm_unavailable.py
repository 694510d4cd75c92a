"""Slurm unusable from this machine (issue 9 item 12): validate and `site discover` stop at the
first command that finds it so, within a bounded time, exit 3 and name the command and why.

Before, SLURM_CONF naming no file made validate wait about 8 minutes in silence (Slurm retries
reading the file for 60 s, for each of its commands in turn) and discover 6, and a controller
nobody answered made validate go on to `sbatch --test-only` and exit 0 with the live checks
"skipped".
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from clusterlib import CURRENT

from slurmexp.backends.slurm import backend as slurm_backend
from slurmexp.backends.slurm.backend import SlurmBackend, run_slurm
from slurmexp.cli import main
from slurmexp.errors import SlurmUnavailable

REPO = Path(__file__).resolve().parent.parent
SITE = str(CURRENT.site_toml)


def sweep_file(tmp_path: Path) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text('name = "unavail"\ncommand = "true {x}"\n[params]\nx = [1, 2]\n'
                    '[resources]\ntime = "00:05:00"\n')
    return path


def slurmexp(tmp_path: Path, *args: str, conf: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "SLURM_CONF": conf, "SLURMEXP_HOME": str(tmp_path / "home"),
           "PYTHONPATH": str(REPO)}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "slurmexp", "--ledger", str(tmp_path / "ledger.db"), *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)
    return proc, time.monotonic() - started


def test_slurm_conf_naming_nothing_is_said_before_any_command_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", "/nonexistent/slurm.conf")
    slurm_backend.reset_call_log()
    with pytest.raises(SlurmUnavailable) as err:
        run_slurm(["scontrol", "show", "config"])
    assert "scontrol not run: SLURM_CONF=/nonexistent/slurm.conf does not exist" in err.value.message
    assert err.value.exit_code == 3 and err.value.problems[0].key == "SLURM_CONF"
    assert "point SLURM_CONF at" in err.value.problems[0].fix
    monkeypatch.setenv("SLURM_CONF", str(tmp_path))
    with pytest.raises(SlurmUnavailable, match="is a folder"):
        run_slurm(["sinfo"])
    assert slurm_backend.CALL_COUNTS == {}          # nothing was run


@pytest.mark.parametrize("command", [["validate"], ["site", "discover"]])
def test_validate_and_discover_with_slurm_conf_at_nothing_exit_3_in_seconds(tmp_path, command):
    args = [*command, str(sweep_file(tmp_path)), "--site", SITE] if command == ["validate"] else command
    proc, seconds = slurmexp(tmp_path, *args, conf="/nonexistent")
    assert proc.returncode == 3, proc.stderr
    assert seconds < 15, seconds                     # was about 8 minutes (validate), 6 (discover)
    assert "SLURM_CONF=/nonexistent does not exist" in proc.stderr, proc.stderr
    assert re.search(r"(scontrol|squeue|sacctmgr) not run", proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("error:") == 1, proc.stderr          # said once, not per command
    assert not (tmp_path / "ledger.db").exists()


# --- the real Slurm commands -----------------------------------------------------------------

def host_conf() -> Path:
    if CURRENT.version:
        pytest.skip("the version clusters' commands are chroot wrappers that ignore SLURM_CONF")
    return Path(os.environ.get("SLURM_CONF") or "/etc/slurm/slurm.conf")


@pytest.mark.cluster
def test_an_unusable_slurm_conf_is_unavailable_not_a_refusal(tmp_path, cluster):
    # The real scontrol on an empty slurm.conf: "fatal: Unable to process configuration file".
    host_conf()
    empty = tmp_path / "slurm.conf"
    empty.write_text("")
    proc, seconds = slurmexp(tmp_path, "validate", str(sweep_file(tmp_path)), "--site", SITE, conf=str(empty))
    assert proc.returncode == 3, proc.stderr
    assert seconds < 30, seconds
    assert "Unable to process configuration file" in proc.stderr, proc.stderr
    assert "could not reach a Slurm daemon" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.cluster
def test_a_controller_nobody_answers_stops_validation_at_its_first_command(tmp_path, cluster, monkeypatch):
    # The cluster's own slurm.conf with the controller's port moved to one nobody listens on:
    # scontrol answers "Unable to contact slurm controller" after Slurm's own retries (~9 s).
    text = host_conf().read_text()
    assert re.search(r"(?m)^SlurmctldPort=", text), "slurm.conf without SlurmctldPort"
    dead = tmp_path / "slurm.conf"
    dead.write_text(re.sub(r"(?m)^SlurmctldPort=.*$", "SlurmctldPort=6899", text))
    monkeypatch.setenv("SLURM_CONF", str(dead))
    monkeypatch.setenv("SLURMEXP_HOME", str(tmp_path / "home"))
    slurm_backend.reset_call_log()
    started = time.monotonic()
    with pytest.raises(SlurmUnavailable) as err:
        SlurmBackend(cluster=CURRENT.name).cluster_facts(timeout=60)
    seconds = time.monotonic() - started
    assert err.value.message.startswith("scontrol could not reach a Slurm daemon"), err.value.message
    assert "Unable to contact slurm controller" in err.value.message
    assert seconds < 45, seconds                     # one round of Slurm's retries, not seven
    slurm_backend.reset_call_log()
    result = CliRunner().invoke(main, ["--ledger", str(tmp_path / "ledger.db"), "validate",
                                       str(sweep_file(tmp_path)), "--site", SITE], catch_exceptions=False)
    assert result.exit_code == 3, result.output
    assert "error: scontrol could not reach a Slurm daemon" in result.stderr, result.stderr
    assert "ok:" not in result.stderr
    assert "sbatch" not in slurm_backend.CALL_COUNTS     # --test-only was not tried after it


def test_launch_with_slurm_conf_at_nothing_exits_3_and_writes_nothing(tmp_path):
    proc, seconds = slurmexp(tmp_path, "launch", str(sweep_file(tmp_path)), "--site", SITE,
                             conf="/nonexistent")
    assert proc.returncode == 3, proc.stderr
    assert seconds < 15 and "SLURM_CONF=/nonexistent does not exist" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    from slurmexp.ledger import Ledger
    if (tmp_path / "ledger.db").exists():
        assert Ledger(tmp_path / "ledger.db", mode="read").experiments() == []
    assert not (tmp_path / "slurmexp-runs").exists(), "run files were written"
