"""Experiment management (issue 15 item 7, in part): tags and a note at launch (`--tag`,
`--note`, `[meta]`), and `status --state --since --name --tag`. Local backend: no cluster."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from slurmexp.cli import main
from slurmexp.errors import SlurmexpError
from slurmexp.ledger import Ledger
from slurmexp.report.filters import ExperimentFilter, parse_since

REPO = Path(__file__).resolve().parent.parent
SITE = str(REPO / "site.toml")


def cli(tmp_path, *args):
    return CliRunner().invoke(main, ["--ledger", str(tmp_path / "ledger.db"), *args])


def sweep(tmp_path, name: str, meta: str = "", fail: bool = False) -> Path:
    path = tmp_path / f"{name}.toml"
    command = "sh -c 'exit $0' {x}" if fail else "echo {x}"
    path.write_text(f'name = "{name}"\ncommand = "{command}"\n[params]\nx = [0, {int(fail) + 2 if fail else 1}]\n{meta}')
    return path


def launch(tmp_path, path, *args) -> str:
    result = cli(tmp_path, "launch", str(path), "--site", SITE, "--backend", "local", *args)
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[-1]


def ids(tmp_path, *args) -> list[str]:
    result = cli(tmp_path, "status", "--format", "json", *args)
    assert result.exit_code == 0, result.output
    return [e["exp_id"] for e in json.loads(result.stdout)]


@pytest.fixture
def three(tmp_path):
    a = launch(tmp_path, sweep(tmp_path, "lr-small", '[meta]\ntags = ["baseline"]\ndescription = "the first"\n'),
               "--tag", "v2", "--tag", "baseline")
    b = launch(tmp_path, sweep(tmp_path, "lr-big", fail=True), "--note", "one fails")
    c = launch(tmp_path, sweep(tmp_path, "wd-grid"), "--tag", "v2")
    return a, b, c


def test_tags_and_note_are_recorded(tmp_path, three):
    a, b, c = three
    led = Ledger(tmp_path / "ledger.db")
    assert led.get_experiment(a)["tags"] == ["baseline", "v2"]          # [meta] first, once each
    assert led.get_experiment(a)["note"] == "the first"                 # [meta] description
    assert led.get_experiment(b)["tags"] == [] and led.get_experiment(b)["note"] == "one fails"
    data = {e["exp_id"]: e for e in json.loads(cli(tmp_path, "status", "--format", "json").stdout)}
    assert data[c]["tags"] == ["v2"] and data[b]["note"] == "one fails"
    table = cli(tmp_path, "status").stdout
    assert "tags" in table and "baseline,v2" in table


def test_meta_is_not_part_of_the_fingerprint(tmp_path):
    plain = launch(tmp_path, sweep(tmp_path, "same"))
    again = cli(tmp_path, "launch", str(sweep(tmp_path, "same", '[meta]\ntags = ["x"]\n')),
                "--site", SITE, "--backend", "local")
    assert again.exit_code == 0 and "already launched" in again.output and plain in again.output


def test_status_filters(tmp_path, three):
    a, b, c = three
    assert ids(tmp_path) == [a, b, c]
    assert ids(tmp_path, "--tag", "v2") == [a, c]
    assert ids(tmp_path, "--tag", "v2", "--tag", "baseline") == [a]
    assert ids(tmp_path, "--name", "lr-*") == [a, b]
    assert ids(tmp_path, "--name", "wd-*", "--name", "lr-b*") == [b, c]
    assert ids(tmp_path, "--name", c[:9] + "*") == [c]                  # ids match too
    assert ids(tmp_path, "--state", "finished_with_failures") == [b]
    assert ids(tmp_path, "--state", "FINISHED,FINISHED_WITH_FAILURES") == [a, b, c]
    assert ids(tmp_path, "--since", "1h") == [a, b, c]
    tomorrow = (datetime.now() + timedelta(days=1)).strftime("%Y-%m-%d")
    assert ids(tmp_path, "--since", tomorrow) == []
    result = cli(tmp_path, "status", "--tag", "v2", "--state", "FAILED")
    assert result.exit_code == 0 and "no experiment matches: state FAILED, tag v2" in result.stdout


def test_bad_filters_and_tags_are_refused(tmp_path, three):
    result = cli(tmp_path, "status", "--state", "DONE")
    assert result.exit_code == 1 and "one of PLANNED" in result.output
    result = cli(tmp_path, "status", "--state", "FINISHD")
    assert "did you mean FINISHED" in result.output
    result = cli(tmp_path, "status", "--since", "yesterday")
    assert result.exit_code == 1 and '"2d"' in result.output
    result = cli(tmp_path, "status", three[0], "--tag", "v2")
    assert result.exit_code == 2 and "without EXPERIMENT" in result.output
    result = cli(tmp_path, "launch", str(sweep(tmp_path, "t")), "--backend", "local", "--tag", "a b")
    assert result.exit_code == 2 and "'a-b'" in result.output
    result = cli(tmp_path, "launch", str(sweep(tmp_path, "t2", '[meta]\ntags = ["ok", "no,comma"]\n')),
                 "--site", SITE, "--backend", "local")
    assert result.exit_code == 2 and "[meta.tags[1]]" in result.output


def test_parse_since():
    now = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)
    assert parse_since("2d", now) == now - timedelta(days=2)
    assert parse_since("90m", now) == now - timedelta(minutes=90)
    assert parse_since("1w", now) == now - timedelta(days=7)
    assert parse_since("2026-12-01T09:00+00:00") == datetime(2026, 12, 1, 9, tzinfo=timezone.utc)
    assert parse_since("2026-12-01").tzinfo is not None
    with pytest.raises(SlurmexpError):
        parse_since("2 days")
    assert not ExperimentFilter.from_options()
