"""`slurmexp render`, `explain` and `site show` through the CLI (CliRunner), with no cluster:
their output, their exit codes, and that they write nothing; and what `retry` and `cancel` say
when there is nothing on a cluster to act on (tests/test_cli_cluster.py has them on one)."""
from __future__ import annotations

import errno
import json
import os
import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from slurmexp.cli import main
from slurmexp.ledger import Ledger

REPO = Path(__file__).resolve().parent.parent
SITE = REPO / "site.toml"

TRAIN = "import sys\nsys.exit(3 if 'fail' in sys.argv else 0)\n"


def make_sweep(folder: Path, name: str = "cli", params: str = 'x = ["a", "b", "fail"]',
               resources: str = "array_parallelism = 2") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.py").write_text(TRAIN)
    path = folder / "sweep.toml"
    path.write_text(f'name = "{name}"\ncommand = "{sys.executable} train.py {{x}}"\n[params]\n{params}\n'
                    f"[resources]\n{resources}\n")
    return path


def cli(tmp_path: Path, *args: str):
    return CliRunner().invoke(main, ["--ledger", str(tmp_path / "ledger.db"), *args],
                              catch_exceptions=False)


def chunk_sections(text: str) -> dict[str, str]:
    """`# ---- chunk N: NAME (array SPEC) ----` header -> the script text that follows it."""
    parts = re.split(r"^# ---- chunk (\d+): (\S+) \(array (\S+)\) ----$", text, flags=re.M)
    return {f"{parts[i]} {parts[i + 1]} {parts[i + 2]}": parts[i + 3].strip("\n")
            for i in range(1, len(parts), 4)}


# --- render ------------------------------------------------------------------------------------

def test_render_prints_the_plan_and_the_very_script_launch_submits(tmp_path):
    sweep = make_sweep(tmp_path / "s")
    # --backend local: the backend is part of the experiment id, which the script carries
    result = cli(tmp_path, "render", str(sweep), "--site", str(SITE), "--backend", "local")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    exp_id = lines[0].removeprefix("experiment: ")
    on_slurm = cli(tmp_path, "render", str(sweep), "--site", str(SITE)).stdout.splitlines()[0]
    assert re.fullmatch(r"experiment: cli-[0-9a-f]{8}", on_slurm) and on_slurm != lines[0]
    assert re.fullmatch(r"cli-[0-9a-f]{8}", exp_id), lines[0]
    assert lines[1] == "runs: 3"
    assert "group 0: 3 runs -> partition cpu" in result.stdout
    sections = chunk_sections(result.stdout)
    assert list(sections) == [f"0 sx.{exp_id}.000 0-2%2"]
    script = sections[f"0 sx.{exp_id}.000 0-2%2"]
    assert script.startswith("#!/bin/bash\n")
    for line in (f"#SBATCH --job-name=sx.{exp_id}.000", f"#SBATCH --comment=slurmexp:{exp_id}",
                 "#SBATCH --array=0-2%2", "#SBATCH --partition=cpu", "#SBATCH --time=0-00:10:00",
                 "#SBATCH --mem=500M", "#SBATCH --qos=normal", "#SBATCH --account=research",
                 "#SBATCH --open-mode=append"):
        assert line in script.splitlines(), line
    # Nothing was written: no experiment folder, no ledger.
    assert not (tmp_path / "s" / "slurmexp-runs").exists()
    assert not (tmp_path / "ledger.db").exists()

    # The script render printed is the one launch writes (and would hand to sbatch).
    launched = cli(tmp_path, "launch", str(sweep), "--site", str(SITE), "--backend", "local")
    assert launched.exit_code == 0, launched.output
    assert launched.stdout.split()[-1] == exp_id
    (sub,) = Ledger(tmp_path / "ledger.db").submissions(exp_id)
    assert Path(sub["script_path"]).read_text().strip("\n") == script


def test_render_and_dry_run_of_a_remote_site_show_the_clusters_paths(tmp_path):
    # A [remote] site: the script carries where the runs will be on the cluster (sources under
    # <root>/src/<content hash>/, the experiment under <root>/experiments/<id>/), computed here
    # without reaching the cluster (login.invalid does not exist).
    from slurmexp.transport.sources import content_hash, source_files

    site = tmp_path / "site.toml"
    site.write_text(SITE.read_text().replace('template = "templates/', f'template = "{REPO}/templates/')
                    + '\n[remote]\nhost = "login.invalid"\nroot = "/scratch/me/sx"\n')
    sweep = make_sweep(tmp_path / "s")
    result = cli(tmp_path, "render", str(sweep), "--site", str(site))
    assert result.exit_code == 0, result.output
    exp_id = result.stdout.splitlines()[0].removeprefix("experiment: ")
    (script,) = chunk_sections(result.stdout).values()
    digest = content_hash((tmp_path / "s").resolve(), source_files(tmp_path / "s"))
    assert f"/scratch/me/sx/src/{digest[:20]}" in script
    assert f"/scratch/me/sx/experiments/{exp_id}" in script
    assert str(tmp_path) not in script
    assert not (tmp_path / "ledger.db").exists()
    # launch --dry-run validates live, over SSH: a cluster it cannot reach is exit 3, said plainly.
    dry = cli(tmp_path, "launch", str(sweep), "--site", str(site), "--dry-run")
    assert dry.exit_code == 3 and "Traceback" not in dry.output
    assert "cluster login.invalid unreachable since " in dry.stderr and "[remote] host" in dry.stderr
    assert not (tmp_path / "ledger.db").exists()


def test_render_one_script_per_array(tmp_path):
    site = tmp_path / "site.toml"
    site.write_text(SITE.read_text().replace("max_array_size = 1001", "max_array_size = 4")
                    .replace('template = "templates/', f'template = "{REPO}/templates/'))
    sweep = make_sweep(tmp_path / "s", params="x = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]", resources="")
    result = cli(tmp_path, "render", str(sweep), "--site", str(site))
    assert result.exit_code == 0, result.output
    exp_id = result.stdout.splitlines()[0].removeprefix("experiment: ")
    assert list(chunk_sections(result.stdout)) == [
        f"0 sx.{exp_id}.000 0-3", f"1 sx.{exp_id}.001 0-3", f"2 sx.{exp_id}.002 0-1"]
    assert result.stdout.count("#!/bin/bash") == 3


def test_render_refuses_a_bad_sweep_with_exit_2(tmp_path):
    sweep = make_sweep(tmp_path / "s", resources="bogus = 1")
    result = cli(tmp_path, "render", str(sweep), "--site", str(SITE))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "resources.bogus" in result.stderr and str(sweep) in result.stderr


def test_render_without_a_site_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SLURMEXP_SITE", raising=False)
    monkeypatch.setenv("SLURMEXP_HOME", str(tmp_path / "home"))
    sweep = make_sweep(tmp_path / "s")
    result = cli(tmp_path, "render", str(sweep))
    assert result.exit_code == 1 and result.stdout == ""
    assert "no site.toml found" in result.stderr and "slurmexp site discover" in result.stderr
    assert str(tmp_path / "s" / "site.toml") in result.stderr


# --- explain -----------------------------------------------------------------------------------

def test_explain_says_where_runs_go_and_why_without_scripts(tmp_path):
    sweep = make_sweep(tmp_path / "s", params="x = [1, 2]", resources='gpus = 1\ngpu_type = "a100"')
    result = cli(tmp_path, "explain", str(sweep), "--site", str(SITE))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "runs: 2" in out and "group 0: 2 runs -> partition gpu" in out
    assert "gres gpu:a100:1" in out
    assert "why gpu:" in out and "GPU run: a100 x1 found on g1" in out
    assert "#SBATCH" not in out and "#!/bin/bash" not in out
    assert not (tmp_path / "s" / "slurmexp-runs").exists()


def test_explain_names_why_no_partition_can_take_the_runs(tmp_path):
    sweep = make_sweep(tmp_path / "s", params="x = [1, 2]", resources='gpus = 1\ngpu_type = "h100"')
    result = cli(tmp_path, "explain", str(sweep), "--site", str(SITE))
    assert result.exit_code == 0, result.output     # explain explains; validate/launch refuse
    assert "NO PARTITION CAN TAKE THESE RUNS" in result.stdout
    assert "- gpu: GPU type h100 on no node here (types here: a100, v100)" in result.stdout
    refused = cli(tmp_path, "validate", str(sweep), "--site", str(SITE), "--offline")
    assert refused.exit_code == 2 and "resources.gpu_type" in refused.stderr


def test_explain_refuses_a_bad_sweep_with_exit_2(tmp_path):
    sweep = make_sweep(tmp_path / "s", params="x = [1, 2]", resources="gpus = -1")
    result = cli(tmp_path, "explain", str(sweep), "--site", str(SITE))
    assert result.exit_code == 2 and result.stdout == ""
    assert "resources.gpus" in result.stderr


# --- site show ---------------------------------------------------------------------------------

def test_site_show_json_of_the_repository_site(tmp_path):
    result = cli(tmp_path, "site", "show", "--site", str(SITE), "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["cluster"] == "minicluster" and data["path"] == str(SITE)
    parts = {p["partition"]: p for p in data["partitions"]}
    assert list(parts) == ["cpu", "gpu", "debug"]
    assert parts["cpu"] == {"partition": "cpu", "max_time": "1-00:00:00", "nodes": "c1,c2,c3",
                            "gpus": "", "default": True}
    assert parts["gpu"]["gpus"] == "a100:2,v100:2" and parts["gpu"]["default"] is False
    assert parts["debug"]["max_time"] == "00:05:00"
    assert set(data["qos"]) == {"normal", "high", "low"}
    assert data["qos"]["high"]["preempt"] == ["low"]
    assert data["reservations"]["resv1"]["nodes"] == ["c3"]
    assert data["routing"] == {"cpu": ["cpu"], "gpu": ["gpu"]}
    assert data["defaults"] == {"cpus": 1, "mem": "500M", "time": "00:10:00", "qos": "normal"}


def test_site_show_table_finds_site_toml_in_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SLURMEXP_SITE", raising=False)
    monkeypatch.setenv("SLURMEXP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "200")
    (tmp_path / "site.toml").write_text(
        'cluster = "tiny"\ndefault_partition = "main"\n'
        '[nodes.n1]\ncpus = 4\nmem = "4000M"\n'
        '[nodes.n2]\ncpus = 4\nmem = "4000M"\ngpus = { l40s = 2 }\n'
        '[partitions.main]\nnodes = ["n1", "n2"]\nmax_time = "12:00:00"\n'
        '[partitions.short]\nnodes = ["n2"]\nmax_time = "00:30:00"\n')
    result = cli(tmp_path, "site", "show")
    assert result.exit_code == 0, result.output
    out = result.stdout
    title = "".join(line.strip() for line in out.split("┏", 1)[0].splitlines())  # rich wraps it
    assert title == f"tiny({tmp_path / 'site.toml'})", title
    rows = {cells[0]: cells for cells in
            ([c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines()
             if line.startswith("│"))}
    assert rows["main"] == ["main", "12:00:00", "n1,n2", "l40s:2", "*"]
    assert rows["short"] == ["short", "00:30:00", "n2", "l40s:2", ""]
    assert "QOS" not in out              # no [qos] in this site: no QOS table
    assert "reservation" not in out      # nor reservations
    assert rows["cpu"] == ["cpu", "main"] and rows["gpu"] == ["gpu", "main, short"]   # routing
    assert rows["time"] == ["time", "01:00:00"] and rows["cpus"] == ["cpus", "1"]    # defaults

    data = json.loads(cli(tmp_path, "site", "show", "--format", "json").stdout)
    assert data["cluster"] == "tiny" and data["qos"] == {} and data["reservations"] == {}


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_site_show_refuses_a_bad_site_with_exit_2(tmp_path, fmt):
    bad = tmp_path / "site.toml"
    bad.write_text(SITE.read_text().replace('default_partition = "cpu"', 'default_partition = "nope"'))
    result = cli(tmp_path, "site", "show", "--site", str(bad), "--format", fmt)
    assert result.exit_code == 2 and result.stdout == ""
    assert "default_partition" in result.stderr and str(bad) in result.stderr


def test_site_show_without_a_site_exits_1_and_says_how_to_make_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SLURMEXP_SITE", raising=False)
    monkeypatch.setenv("SLURMEXP_HOME", str(tmp_path / "home"))
    result = cli(tmp_path, "site", "show")
    assert result.exit_code == 1 and result.stdout == ""
    assert "no site.toml found" in result.stderr
    assert "slurmexp site discover --output site.toml" in result.stderr


# --- retry and cancel without a cluster to act on ------------------------------------------------

@pytest.mark.parametrize("command", ["retry", "cancel"])
def test_retry_and_cancel_of_an_unknown_experiment_exit_1_and_change_nothing(tmp_path, command):
    sweep = make_sweep(tmp_path / "s", params='x = ["a"]', resources="")
    exp_id = cli(tmp_path, "launch", str(sweep), "--site", str(SITE), "--backend", "local").stdout.split()[-1]
    result = cli(tmp_path, command, exp_id[:-1] + "x")
    assert result.exit_code == 1 and result.stdout == ""
    assert f"no experiment {exp_id[:-1] + 'x'!r}" in result.stderr
    assert f"did you mean {exp_id}" in result.stderr
    ledger = Ledger(tmp_path / "ledger.db")
    assert ledger.get_experiment(exp_id)["state"] == "FINISHED"
    assert len(ledger.submissions(exp_id)) == 1


def test_retry_of_a_local_experiment_is_refused(tmp_path):
    sweep = make_sweep(tmp_path / "s")
    exp_id = cli(tmp_path, "launch", str(sweep), "--site", str(SITE), "--backend", "local").stdout.split()[-1]
    ledger = Ledger(tmp_path / "ledger.db")
    assert ledger.get_experiment(exp_id)["state"] == "FINISHED_WITH_FAILURES"
    result = cli(tmp_path, "retry", exp_id)
    assert result.exit_code == 1 and result.stdout == ""
    assert "ran with the local backend" in result.stderr and "--new" in result.stderr
    assert len(ledger.submissions(exp_id)) == 1
    assert [r["n_attempts"] for r in ledger.runs(exp_id)] == [1, 1, 1]


@pytest.mark.parametrize("err, fix", [
    (errno.EACCES, "check the permissions of"), (errno.EROFS, "read-only file system"),
    (errno.ENOENT, "does not exist")])
def test_a_file_system_refusal_is_a_clear_error_not_a_traceback(tmp_path, monkeypatch, err, fix):
    # A folder that is not writable (or a read-only file system) while launch writes the run
    # files: exit 1 naming the file and what to do, never a Python traceback.
    from slurmexp.launch import launcher

    target = tmp_path / "out" / "manifests" / "chunk-000.files"

    def refuse(*args, **kwargs):
        raise OSError(err, os.strerror(err), str(target))

    monkeypatch.setattr(launcher, "write_manifest", refuse)
    sweep = tmp_path / "sweep.toml"
    sweep.write_text('name = "fs"\ncommand = "echo {x}"\n[params]\nx = [1, 2]\n'
                     '[resources]\ncpus = 1\nmem = "100M"\ntime = "00:01:00"\n')
    result = CliRunner().invoke(main, ["--ledger", str(tmp_path / "l.db"), "launch", str(sweep),
                                       "--site", str(SITE), "--backend", "local"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    assert str(target) in result.output and fix in result.output
