"""Tables people read on an 80-column terminal: `status` and `report` fit it without cutting
what users type (experiment and run ids, states), and every command takes the same
experiment references (id, unique prefix, or name = its newest experiment).

Ledgers are built with the Ledger API as launch and reconcile fill them; output is what the
CLI prints (CliRunner), fitted to $COLUMNS.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from slurmexp.cli import main
from slurmexp.ledger import Ledger
from slurmexp.report.fit import Column, render

LONG = "zip-sample-13da2f0c-2"     # as launch names them: name, fingerprint, suffix
REASON = ("job exceeded its memory request: MaxRSS 15.9G of 16G; the OOM killer ended it on "
          "node gpu04\nsee slurm-1001_3.err for the trace\nand more lines")


def _ledger(root: Path) -> Ledger:
    led = Ledger(root / "ledger.db")
    runs = [dict(run_id=f"r{i:03d}", idx=i, params={"lr": 0.1 * i, "optimizer": "adamw-long-name"},
                 seed=None, source="grid", run_dir=root / "runs" / f"r{i:03d}", chunk=0,
                 task_index=i) for i in range(3)]
    for exp_id, name in ((LONG, "zip-sample"), ("demo-aaaa1111", "demo"),
                         ("demo-aaaa1111-2", "demo")):
        led.create_experiment(exp_id=exp_id, name=name, fingerprint=exp_id, cluster="minicluster",
                              backend="slurm", exp_dir=root / exp_id, sweep_path=None,
                              sweep_copy_path=None, site_path=None, site_hash=None,
                              template_hash=None, provenance=None, runs=runs)
    led.set_experiment_state(LONG, "FINISHED_WITH_FAILURES")
    led.set_run_state(LONG, ["r002"], "OUT_OF_MEMORY", REASON)
    return led


def cli(root: Path, *args: str, columns: int = 80):
    return CliRunner(env={"COLUMNS": str(columns)}).invoke(
        main, ["--ledger", str(root / "ledger.db"), *args], catch_exceptions=False)


@pytest.fixture
def root(tmp_path):
    _ledger(tmp_path).close()
    return tmp_path


def test_status_shows_every_column_when_they_fit(root):
    result = cli(root, "status", columns=110)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["experiment", "state", "runs", "cluster", "created"]
    row = next(line for line in lines if line.startswith(LONG))
    assert row.split()[:6] == [LONG, "FINISHED_WITH_FAILURES", "3:", "PLANNED=2",
                               "OUT_OF_MEMORY=1", "minicluster"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", row[-16:])   # local, to the minute
    assert "…" not in result.stdout and "left out" not in result.stdout


def test_status_fits_80_columns_leaving_out_created_first(root):
    result = cli(root, "status")
    lines = result.stdout.splitlines()
    assert max(map(len, lines)) <= 80, result.stdout
    assert lines[0].split() == ["experiment", "state", "runs", "cluster"]
    assert lines[-1] == "(left out to fit 80 columns: created; see --format json)"
    row = next(line for line in lines if line.startswith(LONG))
    assert row.split()[:2] == [LONG, "FINISHED_WITH_FAILURES"]
    assert row.split()[-1] == "minicluster"


def test_status_never_cuts_ids_or_states_even_when_too_narrow(root):
    result = cli(root, "status", columns=30)
    assert "…" not in result.stdout
    row = next(line for line in result.stdout.splitlines() if line.startswith(LONG))
    assert row.split() == [LONG, "FINISHED_WITH_FAILURES"] and len(row) > 30
    assert " ".join(result.stdout.splitlines()[-3:]) == (   # the note is wrapped to 30
        "(left out to fit 30 columns: created, cluster, runs; see --format json)")


def test_status_of_an_experiment_cuts_reasons_to_one_line(root):
    result = cli(root, "status", LONG)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"experiment {LONG}"
    assert max(map(len, lines)) <= 80, result.stdout
    assert len(lines) == 1 + 2 + 3 + 1        # title, header, rule, 3 runs, note
    row = next(line for line in lines if line.startswith("r002"))
    assert "OUT_OF_MEMORY" in row.split() and "job exceeded its" in row
    assert row.endswith("…")
    assert lines[-1] == "reasons cut to fit; `slurmexp show RUN` has them whole"
    data = json.loads(cli(root, "status", LONG, "--format", "json").stdout)
    assert [r["reason"] for r in data if r["run_id"] == "r002"] == [REASON]   # whole in JSON


@pytest.mark.parametrize("ref, exp_id", [
    (LONG, LONG), ("zip-s", LONG), ("zip-sample", LONG),
    ("demo", "demo-aaaa1111-2"),              # a name: its newest experiment
    ("demo-aaaa1111", "demo-aaaa1111"),       # an exact id beats the longer one it prefixes
])
def test_every_command_takes_ids_prefixes_and_names(root, ref, exp_id):
    result = cli(root, "status", ref)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == f"experiment {exp_id}"
    from slurmexp.report.refs import resolve_experiments
    led = Ledger(root / "ledger.db")
    assert resolve_experiments(led, [ref]) == [exp_id]
    assert resolve_experiments(led, [ref, exp_id]) == [exp_id]


def test_an_ambiguous_prefix_lists_the_candidates(root):
    result = cli(root, "status", "demo-a")
    assert result.exit_code == 1 and result.stdout == ""
    assert "experiment 'demo-a' is ambiguous" in result.stderr
    assert "type more of the id: demo-aaaa1111, demo-aaaa1111-2" in result.stderr


@pytest.mark.parametrize("command", ["retry", "cancel"])
def test_retry_and_cancel_take_a_prefix_too(root, command):
    # Nothing was submitted (no jobs), so neither needs a cluster to say so.
    result = cli(root, command, "zip-s")
    if command == "cancel":      # nothing was submitted: no job to scancel, runs marked
        assert result.exit_code == 0, result.output
        assert result.stdout == "2 run(s) cancelled\n"      # OUT_OF_MEMORY is over already
    else:                        # resolved to the full id, then refused: no chunk script
        assert result.exit_code == 1
        assert f"error: retry of {LONG} failed" in result.stderr


def test_fit_cuts_shrinkable_columns_before_leaving_any_out():
    cols = [Column("id", ["abc"], keep=True), Column("note", ["x" * 50], shrink_to=8),
            Column("when", ["2026-12-02 10:27"], priority=-1)]
    text = render(cols, 40)
    assert text.splitlines()[2] == "abc  " + "x" * 16 + "…  2026-12-02 10:27"
    text = render(cols, 20)
    assert text.splitlines()[2] == "abc  " + "x" * 14 + "…"
    assert " ".join(text.splitlines()[-2:]) == "(left out to fit 20 columns: when)"


def test_values_with_newlines_stay_on_one_line():
    text = render([Column("a", ["one\ntwo", "x"]), Column("b", ["1", "2"])], 80)
    assert text.splitlines()[2] == "one ⏎ two  1"
    assert len(text.splitlines()) == 4


def test_launch_says_the_job_ids_as_ids_and_counts_tasks_and_arrays(tmp_path):
    from slurmexp.cli import submitted_line
    led = _ledger(tmp_path)
    s0 = led.record_intent(LONG, 0, "0-1249%6", 1250, tmp_path / "a.sbatch", "h", "minicluster")
    s1 = led.record_intent(LONG, 1, "0-1249%6", 1250, tmp_path / "b.sbatch", "h", "minicluster")
    led.record_submitted(s0, "8", "2026-12-02T10:00:00")
    led.record_submitted(s1, "9", "2026-12-02T10:00:01")
    assert submitted_line(led, LONG, ["8", "9"]) == "submitted jobs 8, 9 (2,500 tasks in 2 arrays)"
    assert submitted_line(led, LONG, ["8"]) == "submitted job 8 (1,250 tasks in 1 array)"


def test_status_of_a_large_experiment_lists_the_first_runs_and_counts_all(tmp_path):
    from slurmexp.report.status import STATUS_ROWS
    n = STATUS_ROWS + 50
    led = Ledger(tmp_path / "ledger.db")
    led.create_experiment(
        exp_id="big-0001", name="big", fingerprint="big", cluster="minicluster", backend="slurm",
        exp_dir=tmp_path / "big", sweep_path=None, sweep_copy_path=None, site_path=None,
        site_hash=None, template_hash=None, provenance=None,
        runs=[dict(run_id=f"r{i:04d}", idx=i, params={"seed": i}, seed=None, source="grid",
                   run_dir=tmp_path / "runs" / f"r{i:04d}", chunk=0, task_index=i) for i in range(n)])
    led.set_run_state("big-0001", [f"r{i:04d}" for i in range(n - 7, n)], "FAILED", "exit 1")
    led.close()

    lines = cli(tmp_path, "status", "big-0001").stdout.splitlines()
    assert lines[1] == f"{n} runs: PLANNED={n - 7} FAILED=7"      # every run counted, by SQL
    listed = [line.split()[0] for line in lines if re.match(r"r\d{4} ", line)]
    assert listed == [f"r{i:04d}" for i in range(STATUS_ROWS)]       # the first ones, by index
    assert " ".join(lines[-2:]) == (f"the first {STATUS_ROWS} of {n} runs, by index; `slurmexp "
                                    "status big-0001 --all` lists every run, `--format json` "
                                    "gives them to programs")
    assert max(map(len, lines)) <= 80

    every = cli(tmp_path, "status", "big-0001", "--all").stdout
    assert len(re.findall(r"^r\d{4} ", every, re.M)) == n and "--all" not in every
    data = json.loads(cli(tmp_path, "status", "big-0001", "--format", "json").stdout)
    assert [r["run_id"] for r in data] == [f"r{i:04d}" for i in range(n)]
    assert data[-1]["state"] == "FAILED" and data[3]["params"] == {"seed": 3}
