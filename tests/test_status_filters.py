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


# --- archive and rm ---------------------------------------------------------------------------

def test_archive_hides_and_undo_shows_again(tmp_path, three):
    a, b, c = three
    result = cli(tmp_path, "archive", a)
    assert result.exit_code == 0 and "archived" in result.output
    assert ids(tmp_path) == [b, c]
    assert ids(tmp_path, "--archived") == [a, b, c]
    assert ids(tmp_path, "--archived", "--tag", "baseline") == [a]
    text = cli(tmp_path, "status").stdout
    assert a not in text and "1 archived experiment(s) not listed" in text
    assert "archived" in cli(tmp_path, "status", "--archived").stdout
    assert cli(tmp_path, "status", a).exit_code == 0          # still there by its id
    assert cli(tmp_path, "archive", a, "--undo").exit_code == 0
    assert ids(tmp_path) == [a, b, c]


def test_rm_asks_removes_rows_and_only_its_own_folder(tmp_path, three):
    a, b, c = three
    led = Ledger(tmp_path / "ledger.db")
    folder = Path(led.get_experiment(b)["exp_dir"])
    led.close()
    result = CliRunner().invoke(main, ["--ledger", str(tmp_path / "ledger.db"), "rm", b], input="n\n")
    assert result.exit_code == 1 and ids(tmp_path) == [a, b, c]
    result = CliRunner().invoke(main, ["--ledger", str(tmp_path / "ledger.db"), "rm", b], input="y\n")
    assert result.exit_code == 0 and "folder" in result.output and "kept" in result.output
    assert ids(tmp_path) == [a, c] and folder.is_dir()
    led = Ledger(tmp_path / "ledger.db")
    for table in ("runs", "submissions", "attempts", "events"):
        assert led.db.execute(f"SELECT COUNT(*) FROM {table} WHERE exp_id = ?", [b]).fetchone()[0] == 0
    assert led.db.execute("SELECT COUNT(*) FROM runs WHERE exp_id = ?", [a]).fetchone()[0] == 2
    c_folder = Path(led.get_experiment(c)["exp_dir"])
    led.close()
    result = cli(tmp_path, "rm", c, "--yes", "--files")
    assert result.exit_code == 0 and not c_folder.exists()
    # A folder that is not the experiment's own is never deleted.
    led = Ledger(tmp_path / "ledger.db")
    led.db.execute("UPDATE experiments SET exp_dir = ? WHERE exp_id = ?", [str(tmp_path), a])
    led.db.conn.commit()
    led.close()
    result = cli(tmp_path, "rm", a, "--yes", "--files")
    assert result.exit_code == 1 and "left alone" in result.output
    assert tmp_path.is_dir() and ids(tmp_path) == [a]


def test_rm_refuses_an_active_experiment(tmp_path):
    led = Ledger(tmp_path / "ledger.db")
    runs = [dict(run_id=f"r{i}", idx=i, params={"i": i}, run_dir=f"/exp/r{i}", chunk=0, task_index=i)
            for i in range(2)]
    led.create_experiment("live-00000001", "live", "fp", "mini", "slurm", None, None, None, None,
                          None, None, {}, runs)
    led.close()
    result = cli(tmp_path, "rm", "live-00000001", "--yes")
    assert result.exit_code == 1 and "still active; nothing removed" in result.output
    assert "2 PLANNED" in result.output and "slurmexp cancel live-00000001" in result.output
    assert ids(tmp_path) == ["live-00000001"]


# --- diff --------------------------------------------------------------------------------------

def test_diff_names_what_changed(tmp_path):
    a = launch(tmp_path, sweep(tmp_path, "lr-d", '[resources]\ntime = "00:10:00"\n'))
    site2 = tmp_path / "site2.toml"
    site2.write_text(Path(SITE).read_text().replace("[defaults]\ncpus = 1", "[defaults]\ncpus = 2", 1)
                     .replace('template = "templates/', f'template = "{REPO}/templates/'))
    path = tmp_path / "lr-d2.toml"
    path.write_text('name = "lr-d"\ncommand = "echo {x}"\n[params]\nx = [0, 1, 5]\n'
                    '[resources]\ntime = "00:20:00"\n')
    result = cli(tmp_path, "launch", str(path), "--site", str(site2), "--backend", "local")
    assert result.exit_code == 0, result.output
    b = result.stdout.strip().splitlines()[-1]
    led = Ledger(tmp_path / "ledger.db")
    env = Path(led.get_experiment(b)["exp_dir"]) / "provenance" / "environment.txt"
    led.close()
    env.write_text(env.read_text() + "made-up-dist==9.9\n")
    data = json.loads(cli(tmp_path, "diff", a, b, "--format", "json").stdout)
    sweep_keys = {r["key"]: r for r in data["sections"]["sweep"]}
    assert sweep_keys["params.x"] == {"key": "params.x", "a": [0, 1], "b": [0, 1, 5]}
    assert sweep_keys["resources.time"]["b"] == "00:20:00"
    assert {r["key"] for r in data["sections"]["site"]} == {"defaults.cpus", "template"}
    res = {r["key"]: r for r in data["sections"]["resources"]}
    assert res["group 0.time_min"] == {"key": "group 0.time_min", "a": 10, "b": 20}
    assert res["group 0.cpus"]["b"] == 2
    assert {"key": "distribution.made-up-dist", "b": "9.9"} in data["sections"]["provenance"]
    text = cli(tmp_path, "diff", a, b).stdout
    assert "~ params.x: [0, 1] -> [0, 1, 5]" in text and "+ distribution.made-up-dist = 9.9" in text
    same = cli(tmp_path, "diff", a, a).stdout
    assert "sweep: same" in same and "provenance: same" in same
