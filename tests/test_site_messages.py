"""Issue 14, items 1-5: what `site discover` writes and keeps, and what a site.toml that no
longer matches the cluster looks like to a user. Every fix line a message gives is applied
here, as a user would paste it, and must then pass."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from slurmexp.cli import main

REPO = Path(__file__).resolve().parent.parent
SITE = REPO / "site.toml"


def run(tmp_path, *args):
    return CliRunner().invoke(main, ["--ledger", str(tmp_path / "ledger.db"), *args],
                              catch_exceptions=False)


def user_shell(tmp_path: Path) -> dict:
    """An environment whose `slurmexp` on PATH is this checkout's, for pasting fix lines."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / "slurmexp"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={REPO} exec {sys.executable} -m slurmexp "$@"\n')
    wrapper.chmod(0o755)
    return dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}",
                SLURMEXP_HOME=str(tmp_path / "home"))


def fix_of(output: str) -> str:
    return output.split("fix: ", 1)[1].strip()


# ---------------------------------------------------------------- item 3: no silent overwrite

def test_discover_refuses_to_overwrite_before_asking_slurm(tmp_path):
    out = tmp_path / "site.toml"
    out.write_text("# reviewed by hand\n")
    result = run(tmp_path, "site", "discover", "-o", str(out))
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert f"{out} exists; discover does not overwrite it" in result.output
    assert "--force" in fix_of(result.output)
    assert out.read_text() == "# reviewed by hand\n"


def test_discover_overwrite_fix_names_the_remote_options(tmp_path):
    out = tmp_path / "site.toml"
    out.write_text("x\n")
    result = run(tmp_path, "site", "discover", "--remote", "alice@login", "--port", "2222",
                 "--ssh-option", "ProxyJump=b", "-o", str(out))
    assert result.exit_code == 1
    fix = fix_of(result.output)
    command = "slurmexp site discover --remote alice@login --port 2222 --ssh-option ProxyJump=b"
    assert f"diff {out} <({command})" in fix and f"{command} -o {out} --force" in fix


@pytest.mark.cluster
def test_discover_overwrite_fix_lines_work(cluster, tmp_path):
    out = tmp_path / "site.toml"
    out.write_text("# reviewed by hand\n")
    result = run(tmp_path, "site", "discover", "-o", str(out))
    assert result.exit_code == 1, result.output
    diff, force = re.fullmatch(r"compare first: (.*); then replace it: (.*)", fix_of(result.output)).groups()
    env = user_shell(tmp_path)
    shown = subprocess.run(["bash", "-c", diff], capture_output=True, text=True, env=env, timeout=120)
    assert shown.returncode == 1 and "< # reviewed by hand" in shown.stdout, shown.stderr
    assert f"> cluster = \"{cluster.name}\"" in shown.stdout
    forced = subprocess.run(["bash", "-c", force], capture_output=True, text=True, env=env, timeout=120)
    assert forced.returncode == 0, forced.stderr
    assert f'cluster = "{cluster.name}"' in out.read_text()
    shown = run(tmp_path, "site", "show", "--site", str(out))
    assert shown.exit_code == 0, shown.output
