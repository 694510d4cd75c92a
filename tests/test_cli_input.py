"""Bad input through the CLI (issue 9, items 9, 13, 15): a clear message once, a documented exit
code, never a traceback, nothing written. No cluster needed (--offline, the local backend, a
fake Slurm backend)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from slurmexp.cli import main
from slurmexp.errors import ValidationError
from slurmexp.ledger import Ledger

REPO = Path(__file__).resolve().parent.parent
SITE = str(REPO / "site.toml")


def run(tmp_path, *args):
    return CliRunner().invoke(main, ["--ledger", str(tmp_path / "ledger.db"), *args],
                              catch_exceptions=False)


def huge_sweep(tmp_path: Path) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(f'name = "huge"\ncommand = "echo {{a}} {{b}} {{c}}"\n[params]\n'
                    f"a = {list(range(1000))}\nb = {list(range(100))}\nc = {list(range(100))}\n")
    return path


# ---------------------------------------------------------------- item 9: too many runs

@pytest.mark.parametrize("args", [
    ["validate", "--offline"], ["launch", "--backend", "local"],
    ["launch", "--backend", "local", "--dry-run"], ["explain"], ["render"]])
def test_huge_grid_refused_at_once_with_one_message(tmp_path, args):
    sweep = huge_sweep(tmp_path)
    result = run(tmp_path, *args, str(sweep), "--site", SITE)
    assert result.exit_code == 2, result.output
    assert result.output.count("10,000,000 runs") == 1, result.output
    assert "exceed the cluster's MaxJobCount" in result.output and "fix: split the sweep" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "slurmexp-runs").exists()


class CountingSlurm:
    """A Slurm backend that says MaxJobCount is 10000 and counts what it was asked."""

    def __init__(self):
        self.calls = []

    def cluster_facts(self, **kw):
        from slurmexp.backends.facts import ClusterFacts
        self.calls.append("cluster_facts")
        return ClusterFacts(cluster="minicluster", user="u", max_job_count=10000)

    def __getattr__(self, name):
        self.calls.append(name)
        raise AssertionError(f"{name} called")


def test_over_max_job_count_is_one_problem_not_static_plus_live(tmp_path):
    # 12,000 runs: site.toml and the live cluster both say MaxJobCount 10000; that was
    # reported twice (static and live check), after expanding every run.
    from slurmexp.launch.launcher import launch

    sweep = tmp_path / "sweep.toml"
    sweep.write_text(f'name = "big"\ncommand = "echo {{a}} {{b}}"\n[params]\n'
                     f"a = {list(range(100))}\nb = {list(range(120))}\n")
    slurm = CountingSlurm()
    with pytest.raises(ValidationError) as err:
        launch(sweep, SITE, ledger=Ledger(tmp_path / "ledger.db"), slurm=slurm)
    assert len(err.value.problems) == 1 and "12,000 runs" in err.value.problems[0].message
    assert slurm.calls == []


# ---------------------------------------------------------------- item 13: bad values, named at their key

def test_value_sbatch_would_split_names_the_sweep_key_not_the_template(tmp_path):
    sweep = tmp_path / "sweep.toml"
    sweep.write_text('name = "s"\ncommand = "echo hi"\n[resources]\npartition = "cpu debug"\n'
                     'constraint = "fast disk"\n')
    result = run(tmp_path, "render", str(sweep), "--site", SITE)
    assert result.exit_code == 2, result.output
    assert "[resources.partition]" in result.output and "[resources.constraint]" in result.output
    assert 'fix: partition = "cpu" (' in result.output
    assert "template" not in result.output and not re.search(r"line \d", result.output)


def test_blank_command_and_dash_name_refused_before_anything_runs(tmp_path):
    sweep = tmp_path / "sweep.toml"
    sweep.write_text('name = "-rf"\ncommand = "  "\n')
    result = run(tmp_path, "launch", str(sweep), "--site", SITE, "--backend", "local")
    assert result.exit_code == 2, result.output
    assert "[name]" in result.output and 'fix: name = "rf"' in result.output
    assert "[command] command is only whitespace" in result.output
    assert Ledger(tmp_path / "ledger.db").experiments() == []


def test_output_dir_warning_is_printed_once_and_launch_goes_on(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / "exp").mkdir()
    sweep = tmp_path / "exp" / "sweep.toml"
    sweep.write_text('name = "s"\ncommand = "true"\noutput_dir = "../runs"\n')
    result = run(tmp_path, "launch", str(sweep), "--site", SITE, "--backend", "local")
    assert result.exit_code == 0, result.output
    assert result.stderr.count("warning: ") == 1 and "leaves the sweep's folder" in result.stderr
    assert (tmp_path / "runs").is_dir()
    sweep.write_text('name = "s"\ncommand = "true"\noutput_dir = "../../elsewhere"\n')
    result = run(tmp_path, "launch", str(sweep), "--site", SITE, "--backend", "local")
    assert result.exit_code == 2 and "[output_dir]" in result.output
    assert not (tmp_path.parent / "elsewhere").exists()


@pytest.fixture
def launched(tmp_path):
    """A finished local experiment whose parameters a spreadsheet would misread."""
    sweep = tmp_path / "sweep.toml"
    sweep.write_text('name = "s"\ncommand = "echo {a} {b}"\n[params]\na = [1, -2]\nb = ["=1+1", "@x"]\n')
    result = run(tmp_path, "launch", str(sweep), "--site", SITE, "--backend", "local")
    assert result.exit_code == 0, result.output
    return result.stdout.split()[-1]


def test_report_by_the_same_parameter_twice(tmp_path, launched):
    result = run(tmp_path, "report", launched, "--by", "a,a")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.output.count("error:") == 1
    assert "fix: --by a" in result.output
    assert run(tmp_path, "report", launched, "--by", "a").exit_code == 0


def test_report_output_into_a_missing_folder(tmp_path, launched):
    import shlex
    import subprocess

    out = tmp_path / "no such" / "dir" / "r.csv"
    result = run(tmp_path, "report", launched, "--format", "csv", "-o", str(out))
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "[--output]" in result.output
    fix = result.output.split("fix: create it first: ")[1].strip()
    assert fix == f"mkdir -p {shlex.quote(str(out.parent))}"
    subprocess.run(fix, shell=True, check=True)
    assert run(tmp_path, "report", launched, "--format", "csv", "-o", str(out)).exit_code == 0
    assert out.read_text().startswith("exp_id,")


def test_site_discover_output_into_a_missing_folder_fails_before_asking_slurm(tmp_path):
    result = run(tmp_path, "site", "discover", "-o", str(tmp_path / "nope" / "site.toml"))
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "fix: create it first: mkdir -p" in result.output


# ---------------------------------------------------------------- item 15: CSV for spreadsheets

def test_report_excel_safe(tmp_path, launched):
    import csv
    import io

    exact = list(csv.DictReader(io.StringIO(run(tmp_path, "report", launched, "--format", "csv").stdout)))
    assert sorted(r["param.b"] for r in exact) == ["=1+1", "=1+1", "@x", "@x"]
    result = run(tmp_path, "report", launched, "--format", "csv", "--excel-safe")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert sorted(r["param.b"] for r in rows) == ["'=1+1", "'=1+1", "'@x", "'@x"]
    assert sorted(r["param.a"] for r in rows) == ["-2", "-2", "1", "1"]     # numbers stay numbers
    result = run(tmp_path, "report", launched, "--format", "json", "--excel-safe")
    assert result.exit_code == 1 and "Traceback" not in result.output


def test_every_exit_code_is_documented(tmp_path):
    import slurmexp.errors as errors

    codes = {cls.exit_code for cls in vars(errors).values()
             if isinstance(cls, type) and issubclass(cls, errors.SlurmexpError)} | {0, 1, 2}
    help_text = run(tmp_path, "--help").output
    readme = (REPO / "README.md").read_text().split("## Exit codes", 1)[1]
    for code in sorted(codes):
        assert re.search(rf"^\s+{code}\s", help_text, re.M), f"exit code {code} not in --help"
        assert f"\n| {code} |" in readme, f"exit code {code} not in README's table"
