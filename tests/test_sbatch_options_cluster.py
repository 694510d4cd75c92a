"""`[resources] sbatch = [...]` raw options against the real test cluster: they reach the job
(Slurm's own record says so), and a bad one is refused by `sbatch --test-only` at validation
with Slurm's message, before anything is submitted (issue 15 item 4)."""
from __future__ import annotations

import re
import subprocess

import pytest
from clusterlib import CURRENT
from test_launch_cluster import SITE, cli, launch, wait_done, write_sweep

from slurmexp.backends.slurm.backend import SlurmBackend
from slurmexp.ledger import Ledger

pytestmark = pytest.mark.cluster


def test_raw_sbatch_options_reach_the_job(tmp_path, cluster):
    sweep = write_sweep(tmp_path, "rawopts", "x = [1]",
                        'sbatch = ["--exclusive", "--mail-type=END", "--nice=7"]')
    exp_id = launch(tmp_path, sweep)
    ledger = Ledger(tmp_path / "ledger.db")
    job = ledger.submissions(exp_id)[0]["job_id"]
    # While the job is known to the controller (MinJobAge keeps it 60 s after its end).
    shown = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True,
                           timeout=60, check=True).stdout
    assert re.search(r"\bMailType=END\b", shown), shown
    assert re.search(r"\bNice=7\b", shown), shown
    assert re.search(r"\bOverSubscribe=NO\b", shown), shown       # what --exclusive sets
    ledger = wait_done(tmp_path, exp_id)
    attempts = ledger.attempts(exp_id)
    assert [a["state"] for a in attempts] == ["COMPLETED"]
    # --exclusive: the task got its whole node (16 CPUs on c1-c3), though it asked for one.
    assert "cpu=16" in (attempts[0]["alloc_tres"] or ""), attempts[0]["alloc_tres"]
    script = (tmp_path / "slurmexp-runs" / exp_id / "scripts" / "chunk-000.sbatch").read_text()
    assert "#SBATCH --exclusive\n#SBATCH --mail-type=END\n#SBATCH --nice=7\n" in script


def test_a_bad_raw_option_is_refused_by_test_only(tmp_path, cluster):
    sweep = write_sweep(tmp_path, "rawbad", "x = [1, 2]", 'sbatch = ["--mail-type=SOMETIMES"]')
    result = cli(tmp_path, "validate", str(sweep), "--site", SITE)
    assert result.exit_code == 2, result.output
    assert "Invalid --mail-type" in result.output, result.output
    result = cli(tmp_path, "launch", str(sweep), "--site", SITE)
    assert result.exit_code == 2, result.output
    assert Ledger(tmp_path / "ledger.db").experiments() == []
    assert SlurmBackend(cluster=CURRENT.name).squeue_rows(name_prefix="sx.rawbad-") == []


def test_an_owned_option_is_refused_before_slurm_is_asked(tmp_path, cluster):
    sweep = write_sweep(tmp_path, "rawowned", "x = [1]", 'sbatch = ["--exclusive", "--output=/tmp/x.log"]')
    result = cli(tmp_path, "launch", str(sweep), "--site", SITE)
    assert result.exit_code == 2, result.output
    assert "[resources.sbatch[1]]" in result.stderr and "--output" in result.stderr
    assert "slurmexp logs RUN" in result.stderr
    assert Ledger(tmp_path / "ledger.db").experiments() == []
