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


# ---------------------------------------------------------------- item 1: explicit defaults

def captured(**override):
    from test_discover import captured_facts

    return captured_facts(**override)


def apply_set_fix(sweep: Path, fix: str) -> None:
    """Apply a fix of the form `set KEY = VALUE in [TABLE]` as a user would, in the editor."""
    key, value, table = re.match(r"set (\w+) = (.+?) in \[(\w+)\]", fix).groups()
    lines = sweep.read_text().splitlines()
    lines = [line for line in lines if not line.startswith(f"{key} =")]
    at = lines.index(f"[{table}]") + 1 if f"[{table}]" in lines else len(lines)
    if f"[{table}]" not in lines:
        lines.append(f"[{table}]")
        at += 1
    lines.insert(at, f"{key} = {value}")
    sweep.write_text("\n".join(lines) + "\n")


def test_discover_writes_defaults_from_the_cluster(tmp_path):
    from slurmexp.sites.discover import discover_site
    from slurmexp.sites.model import parse_site

    facts = captured()
    assert facts.def_mem_per_cpu_mb == 250 and facts.partitions["cpu"].default_time_min == 10
    text = discover_site(facts)
    site = parse_site(text, tmp_path / "site.toml")
    assert (site.defaults.cpus, site.defaults.mem_per_cpu, site.defaults.time) == (1, "250M", "00:10:00")
    assert "# the cluster's DefMemPerCPU" in text and "# partition cpu's DefaultTime" in text
    assert site.defaults.mem_mb_for(4) == 1000


def test_discover_without_cluster_defaults_writes_sensible_ones(tmp_path):
    from test_discover import CAPTURED

    from slurmexp.sites.discover import discover_site
    from slurmexp.sites.model import parse_site

    config = "\n".join(line for line in (CAPTURED / "scontrol_config.txt").read_text().splitlines()
                       if not line.startswith("DefMemPerCPU"))
    partitions = re.sub(r"DefaultTime=\S+", "DefaultTime=NONE", (CAPTURED / "scontrol_partition.txt").read_text())
    facts = captured(config=config, partitions=partitions)
    assert facts.def_mem_per_cpu_mb is None and facts.partitions["cpu"].default_time_min is None
    text = discover_site(facts)
    site = parse_site(text, tmp_path / "site.toml")
    # c1-c3: 4 CPUs and 3900 MiB each; cpu's MaxTime is a day, so an hour.
    assert (site.defaults.mem_per_cpu, site.defaults.time) == ("975M", "01:00:00")
    assert "sets no DefMemPerCPU" in text and "has no DefaultTime" in text


def test_mem_and_mem_per_cpu_together_are_refused(tmp_path):
    from slurmexp.errors import SpecError
    from slurmexp.sites.model import load_site

    path = tmp_path / "site.toml"
    path.write_text(SITE.read_text().replace('mem = "500M"\n', 'mem = "500M"\nmem_per_cpu = "1G"\n', 1))
    with pytest.raises(SpecError) as info:
        load_site(path)
    assert "not both" in info.value.format() and "defaults" in info.value.format()


def sweep_file(tmp_path: Path, resources: str = "") -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(f'name = "t"\ncommand = "echo {{x}}"\n[params]\nx = [1, 2]\n[resources]\n{resources}')
    return path


def test_explain_marks_what_came_from_site_toml(tmp_path):
    result = run(tmp_path, "explain", str(sweep_file(tmp_path, "cpus = 2\n")), "--site", str(SITE))
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if "resources:" in x)
    assert "cpus 2," in line and "mem 500M*" in line and "time 00:10:00*" in line and "qos normal*" in line
    assert "(* from site.toml, [defaults] or account: not set in the sweep's [resources])" in result.output


def test_mem_per_cpu_default_scales_with_cpus(tmp_path):
    site = tmp_path / "site.toml"
    site.write_text(SITE.read_text().replace('mem = "500M"\n', 'mem_per_cpu = "300M"\n', 1)
                    .replace("templates/", f"{REPO}/templates/"))
    result = run(tmp_path, "render", str(sweep_file(tmp_path, "cpus = 4\n")), "--site", str(site))
    assert result.exit_code == 0, result.output
    assert "#SBATCH --mem=1200M" in result.output and "mem 1200M*" in result.output


def test_an_error_about_a_default_says_so_and_its_fix_passes(tmp_path):
    site = tmp_path / "site.toml"
    site.write_text(SITE.read_text().replace('time = "00:10:00"', 'time = "01:00:00"', 1)
                    .replace("templates/", f"{REPO}/templates/"))
    sweep = sweep_file(tmp_path, 'partition = "debug"\n')
    result = run(tmp_path, "validate", "--offline", str(sweep), "--site", str(site))
    assert result.exit_code == 2, result.output
    assert "time 01:00:00 (from site.toml [defaults]) over max_time 00:05:00" in result.output
    fix = fix_of(result.output)
    assert fix.startswith('set time = "00:05:00" in [resources]')
    apply_set_fix(sweep, fix)
    result = run(tmp_path, "validate", "--offline", str(sweep), "--site", str(site))
    assert result.exit_code == 0, result.output


# ---------------------------------------------------------------- item 2: a stale site.toml

def stale_site(tmp_path: Path, cluster_name: str = "minicluster") -> Path:
    """The repository's site.toml after the admins renamed partition gpu and swapped g1's GPUs:
    it still routes GPU runs to `oldgpu` and believes g1 has h100s."""
    text = (SITE.read_text().replace('cluster = "minicluster"', f'cluster = "{cluster_name}"')
            .replace("templates/", f"{REPO}/templates/")
            .replace("gpus = { a100 = 2 }", "gpus = { h100 = 2 }")
            .replace('gpu = ["gpu"]', 'gpu = ["oldgpu", "gpu"]'))
    text += '\n[partitions.oldgpu]\nnodes = ["g1", "g2"]\nmax_time = "2-00:00:00"\n'
    path = tmp_path / "site.toml"
    path.write_text(text)
    return path


def site_facts():
    from test_validate import facts  # the cluster as the repository's site.toml describes it

    return facts()


def test_a_stale_site_is_one_problem_naming_site_toml_and_its_keys(tmp_path):
    from slurmexp.launch.launcher import prepare
    from slurmexp.launch.validate import validate

    prep = prepare(sweep_file(tmp_path), SITE)
    assert validate(prep.sweep, prep.site, prep.plan, facts=site_facts()).ok   # the site agrees
    site = stale_site(tmp_path)
    for resources in ("gpus = 1\n", 'gpus = 1\ngpu_type = "a100"\n'):
        prep = prepare(sweep_file(tmp_path, resources), site)
        report = validate(prep.sweep, prep.site, prep.plan, facts=site_facts())
        # Neither "[resources.partition] partition 'oldgpu' does not exist" for a sweep that names
        # none, nor the static "a100 on no node here" that the live check would contradict.
        assert [(p.file, p.key) for p in report.problems] == [(str(site), "partitions.oldgpu, nodes.g1.gpus")], \
            report.format()
        problem = report.problems[0]
        assert problem.fix.startswith("re-run `slurmexp site discover`: compare first: ")
        assert "node g1 has GPUs a100 x2, site.toml says h100 x2" in problem.message
        assert any("no longer matches" in s for s in report.skipped)


@pytest.mark.cluster
def test_a_stale_site_fix_line_makes_validation_pass(cluster, tmp_path):
    site = stale_site(tmp_path, cluster.name)
    sweep = sweep_file(tmp_path, 'gpus = 1\ntime = "00:05:00"\nmem = "100M"\n')
    result = run(tmp_path, "validate", str(sweep), "--site", str(site), "--fresh")
    assert result.exit_code == 2, result.output
    problems = [line for line in result.output.splitlines() if line.startswith("problem:")]
    assert len(problems) == 1, result.output
    assert all(line.startswith(f"problem: {site}: [") for line in problems)
    assert "[resources" not in result.output
    fixes = {line.split("fix: ", 1)[1] for line in result.output.splitlines() if "fix: " in line}
    assert len(fixes) == 1, fixes          # one fix for the whole disagreement
    diff, force = re.fullmatch(r"re-run `slurmexp site discover`: compare first: (.*); then replace it: (.*)",
                               fixes.pop()).groups()
    env = user_shell(tmp_path)
    shown = subprocess.run(["bash", "-c", diff], capture_output=True, text=True, env=env, timeout=120)
    assert shown.returncode == 1 and "oldgpu" in shown.stdout, shown.stderr
    forced = subprocess.run(["bash", "-c", force], capture_output=True, text=True, env=env, timeout=120)
    assert forced.returncode == 0, forced.stderr
    result = run(tmp_path, "validate", str(sweep), "--site", str(site))
    assert result.exit_code == 0, result.output


# ---------------------------------------------------------------- item 4: site show says it all

def test_site_show_lists_reservations_routing_and_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    result = run(tmp_path, "site", "show", "--site", str(SITE))
    assert result.exit_code == 0, result.output
    rows = {cells[0]: cells for cells in
            ([c.strip() for c in line.split("│")[1:-1]] for line in result.stdout.splitlines()
             if line.startswith("│"))}
    assert rows["resv1"] == ["resv1", "c3", "root", "", "", ""]
    assert rows["normal"][2] == "gres/gpu=4"
    assert rows["gpu"] == ["gpu", "gpu"]                       # routing: the last row of that key
    assert "partitions tried in order" in result.stdout
    assert rows["time"] == ["time", "00:10:00"] and rows["mem"] == ["mem", "500M"]
    assert rows["qos"] == ["qos", "normal"]
    assert max(len(line) for line in result.stdout.splitlines()) <= 80


# ---------------------------------------------------------------- item 5: reserved nodes

def test_explain_does_not_count_nodes_held_by_another_reservation(tmp_path):
    result = run(tmp_path, "explain", str(sweep_file(tmp_path)), "--site", str(SITE))
    assert result.exit_code == 0, result.output
    assert "fit on c1, c2; not c3 (reservation resv1)" in result.output    # resv1 holds c3
    sweep = sweep_file(tmp_path, 'reservation = "resv1"\n')
    result = run(tmp_path, "explain", str(sweep), "--site", str(SITE))
    assert "fit on c3\n" in result.output and "reservation resv1 has nodes here" in result.output


def test_explain_when_every_fitting_node_is_reserved(tmp_path):
    site = tmp_path / "site.toml"
    site.write_text(SITE.read_text().replace("templates/", f"{REPO}/templates/")
                    .replace('[reservations.resv1]\nnodes = ["c3"]',
                             '[reservations.resv1]\nnodes = ["c1", "c2", "c3"]\nend = "2030-01-01T08:00:00"'))
    result = run(tmp_path, "explain", str(sweep_file(tmp_path)), "--site", str(site))
    assert result.exit_code == 0, result.output
    assert ("fit on no node outside a reservation (the runs wait for it to end); not "
            "c1 (reservation resv1 until 2030-01-01 08:00:00)") in result.output


# ---------------------------------------------------------------- item 6: fixes that work

def apply_fix(sweep: Path, fix: str) -> None:
    """Make the edit a fix line asks for, as a user would: its first alternative, literally."""
    first = re.split(r", or | \(", fix, maxsplit=1)[0]
    lines = sweep.read_text().splitlines()
    tables = [i for i, line in enumerate(lines) if line.startswith("[")]

    def table_range(table: str | None) -> tuple[int, int]:
        if table is None:
            return 0, tables[0] if tables else len(lines)
        start = lines.index(f"[{table}]") + 1
        return start, next((i for i in tables if i >= start), len(lines))

    def put(key: str, value: str, table: str | None) -> None:
        start, end = table_range(table)
        kept = [i for i in range(start, end) if not lines[i].startswith(f"{key} =")]
        body = [lines[i] for i in kept]
        lines[start:end] = body + [f"{key} = {value}"]

    if m := re.fullmatch(r"set (\w+) = (.+) in \[(\w+)\]", first):
        put(m[1], m[2], m[3])
    elif m := re.fullmatch(r"set (\w+) = (.+) at the top of the sweep file", first):
        put(m[1], m[2], None)
    elif m := re.fullmatch(r"remove (\w+) from \[(\w+)\]", first):
        start, end = table_range(m[2])
        lines[start:end] = [x for x in lines[start:end] if not x.startswith(f"{m[1]} =")]
    elif m := re.fullmatch(r"create it: (mkdir -p .+)", first):
        subprocess.run(first.split(": ", 1)[1], shell=True, check=True)
    elif m := re.fullmatch(r"(?:write .* e\.g\. |write the number without quotes: )?(\w+) = (.+)", first):
        put(m[1], m[2], "resources")
    else:
        raise AssertionError(f"not a fix a user can apply: {fix!r}")
    sweep.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("resources, top", [
    ('gpus = "one"', ""), ('gpus = "2"', ""), ('time = "-1"', ""), ('time = "UNLIMITED"', ""),
    ('gpus = 1\npartition = "cpu"', ""),               # GPUs on a CPU partition
    ('reservation = "resv1"\npartition = "debug"', ""),  # a reservation on the wrong partition
    ('reservation = "resv9"', ""), ("nodes = 9", ""), ('constraint = "fast"', ""),
    ('gpus = 1\ngpu_type = "h100"', ""), ("gpus = 3", ""), ("cpus = 99", ""), ('mem = "64G"', ""),
    ('qos = "gold"', ""), ('partition = "cpus"', ""), ('partition = "debug"\ntime = "00:30:00"', ""),
    ('qos = "high"\ntime = "10:00:00"', ""),
    ("", 'workdir = "afile"'), ("", 'workdir = "nodir/sub"'),
])
def test_every_fix_line_applied_makes_validation_pass(tmp_path, resources, top):
    (tmp_path / "afile").write_text("not a folder\n")
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(f'name = "t"\ncommand = "echo {{x}}"\n{top}\n[params]\nx = [1, 2]\n[resources]\n{resources}\n')
    for _round in range(4):
        result = run(tmp_path, "validate", "--offline", str(sweep), "--site", str(SITE))
        if result.exit_code == 0:
            break
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        fixes = [line.split("fix: ", 1)[1] for line in result.output.splitlines() if "fix: " in line]
        assert fixes, result.output              # every problem has a fix line
        for fix in fixes:
            apply_fix(sweep, fix)
    assert result.exit_code == 0, (sweep.read_text(), result.output)
    assert _round <= 1, sweep.read_text()       # one round of fixes, two for a fix then a default


# ---------------------------------------------------------------- item 7: one problem, one message

@pytest.mark.parametrize("resources, key", [
    ('qos = "gold"', "resources.qos"),                     # site.toml, the cluster, the associations
    ('gpus = 1\npartition = "cpu"', "resources.gpus"),      # "at most 2" and "at most 0"
    ('gpus = 1\ngpu_type = "h100"', "resources.gpu_type"),
])
def test_one_problem_is_one_message(tmp_path, resources, key):
    from slurmexp.launch.launcher import prepare
    from slurmexp.launch.validate import validate

    prep = prepare(sweep_file(tmp_path, resources + "\n"), SITE)
    report = validate(prep.sweep, prep.site, prep.plan, facts=site_facts())
    assert [p.key for p in report.problems] == [key], report.format()
    assert "not allowed" not in report.format()


def test_a_qos_missing_only_on_the_cluster_is_not_also_not_allowed(tmp_path):
    from slurmexp.launch.launcher import prepare
    from slurmexp.launch.validate import validate

    prep = prepare(sweep_file(tmp_path, 'qos = "low"\n'), SITE)       # in site.toml, gone live
    report = validate(prep.sweep, prep.site, prep.plan, facts=site_facts())
    assert [p.message for p in report.problems] == ["QOS 'low' does not exist on cluster minicluster"]
    assert report.problems[0].fix.startswith('set qos = "normal" in [resources]')


@pytest.mark.cluster
def test_a_qos_typo_on_the_live_cluster_is_one_problem(cluster, tmp_path):
    sweep = sweep_file(tmp_path, 'qos = "gold"\ntime = "00:05:00"\nmem = "100M"\n')
    site = tmp_path / "site.toml"
    site.write_text(SITE.read_text().replace('cluster = "minicluster"', f'cluster = "{cluster.name}"')
                    .replace("templates/", f"{REPO}/templates/"))
    result = run(tmp_path, "validate", str(sweep), "--site", str(site), "--fresh")
    assert result.exit_code == 2, result.output
    problems = [line for line in result.output.splitlines() if line.startswith("problem:")]
    assert len(problems) == 1 and "[resources.qos]" in problems[0], result.output
    apply_fix(sweep, fix_of(result.output))
    result = run(tmp_path, "validate", str(sweep), "--site", str(site))
    assert result.exit_code == 0, result.output


# ---------------------------------------------------------------- item 8: [sample] at once

SAMPLE = """\
name = "t"
command = "echo {lr} {x}"
[params]
x = [1, 2]
[sample]
n = 4
[sample.params.lr]
dist = "loguniform"
low = 0.1
[sample.params.drop]
dist = "normal"
low = 0
high = 1
[sample.params.k]
dist = "int"
low = 5
high = 1
"""


def apply_sample_fix(text: str, key: str, fix: str) -> str:
    """The edits the [sample] fixes ask for, made in the file's text as a user would."""
    table = key.rsplit(".", 1)[0] if key.count(".") >= 3 or key == "sample.seed" else key
    lines = text.splitlines()
    if m := re.fullmatch(r"add (\w+) = (.+) under \[(.+)\]", fix):
        lines.insert(lines.index(f"[{m[3]}]") + 1, f"{m[1]} = {m[2]}")
    elif m := re.fullmatch(r"(\w+) = (.+)", fix):
        start = lines.index(f"[{table}]")
        at = next(i for i in range(start, len(lines)) if lines[i].startswith(f"{m[1]} ="))
        lines[at] = fix
    elif fix == "swap them":
        start = lines.index(f"[{key}]")
        low = next(i for i in range(start, len(lines)) if lines[i].startswith("low ="))
        high = next(i for i in range(start, len(lines)) if lines[i].startswith("high ="))
        lines[low], lines[high] = "low" + lines[high][4:], "high" + lines[low][3:]
    elif m := re.fullmatch(r"use \{(\w+)\} in command, .*", fix):
        lines[1] = lines[1][:-1] + f" {{{m[1]}}}\""
    else:
        raise AssertionError(f"not a fix a user can apply: {fix!r}")
    return "\n".join(lines) + "\n"


def test_sample_problems_are_reported_at_once_and_their_fixes_pass(tmp_path):
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(SAMPLE)
    result = run(tmp_path, "validate", "--offline", str(sweep), "--site", str(SITE))
    assert result.exit_code == 2, result.output
    found = re.findall(r"\[(sample[\w.]*)\] (.*)\n    fix: (.*)", result.output)
    keys = [key for key, _, _ in found]
    assert keys == ["sample.seed", "sample.params.drop.dist", "sample.params.lr.high", "sample.params.k",
                    "sample.params.drop", "sample.params.k"], result.output
    text = SAMPLE
    for key, _message, fix in found:
        text = apply_sample_fix(text, key, fix)
    sweep.write_text(text)
    result = run(tmp_path, "validate", "--offline", str(sweep), "--site", str(SITE))
    assert result.exit_code == 0, (text, result.output)       # one round was enough


def test_live_reservation_fixes_are_edits_that_pass(tmp_path):
    from slurmexp.launch.launcher import prepare
    from slurmexp.launch.validate import validate

    sweep = sweep_file(tmp_path, 'reservation = "resv1"\n')
    prep = prepare(sweep, SITE)
    report = validate(prep.sweep, prep.site, prep.plan, facts=site_facts())   # resv1 admits root only
    assert [p.key for p in report.problems] == ["resources.reservation"], report.format()
    apply_fix(sweep, report.problems[0].fix)
    prep = prepare(sweep, SITE)
    assert validate(prep.sweep, prep.site, prep.plan, facts=site_facts()).ok
