"""[[override]]: resources per group of runs. Schema, matching, the plan's groups, explain,
validation per group, the settings retries and escalation read per group, --dry-run."""
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from slurmexp.cli import main
from slurmexp.errors import SpecError, ValidationError
from slurmexp.launch import launcher
from slurmexp.launch.validate import validate
from slurmexp.reconcile.policy import RetryPolicy, decide_retry, escalation_for
from slurmexp.settings import ExperimentSettings
from slurmexp.sites.model import load_site
from slurmexp.sweep.plan import describe, make_plan
from slurmexp.sweep.spec import load_sweep

ROOT_SITE = Path(__file__).resolve().parents[1] / "site.toml"

BASE = """
name = "ov"
command = "python3 train.py --model {model} --lr {lr}"
[params]
model = ["resnet", "vit"]
lr = [0.1, 0.01]
[resources]
mem = "1G"
time = "00:10:00"
"""


@pytest.fixture(scope="module")
def site():
    return load_site(ROOT_SITE)


def write(tmp_path: Path, extra: str, base: str = BASE) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(textwrap.dedent(base) + textwrap.dedent(extra))
    (tmp_path / "train.py").write_text("")
    return path


def sweep_with(tmp_path, extra, base=BASE):
    return load_sweep(write(tmp_path, extra, base))


def problems(tmp_path, extra, base=BASE):
    with pytest.raises(SpecError) as err:
        sweep_with(tmp_path, extra, base)
    return err.value.problems


def groups_of(plan):
    """(mem, time, partition, throttle, sorted params) per chunk."""
    return [(c.resources.mem_mb, c.resources.time_min, c.resources.partition, c.throttle,
             sorted((r.params["model"], r.params["lr"]) for r in c.runs)) for c in plan.chunks]


# ---------------------------------------------------------------- schema


def test_unknown_key_in_override_is_refused_with_did_you_mean(tmp_path):
    (p,) = problems(tmp_path, """
        [[override]]
        where = { model = "vit" }
        memm = "8G"
        """)
    assert p.key == "override[0].memm" and "did you mean 'mem'" in p.message
    assert p.fix == "rename it to 'mem'"


def test_override_values_are_checked_as_resources_are(tmp_path):
    found = problems(tmp_path, """
        [[override]]
        where = { model = "vit" }
        mem = "lots"
        gpus = -1
        """)
    assert {p.key for p in found} == {"override[0].mem", "override[0].gpus"}
    # the same value in [resources] gives the same message
    same = problems(tmp_path, "", BASE.replace('mem = "1G"', 'mem = "lots"'))
    assert [p.message for p in same] == [p.message for p in found if p.key.endswith(".mem")]


def test_where_is_required(tmp_path):
    (p,) = problems(tmp_path, """
        [[override]]
        mem = "8G"
        """)
    assert p.key == "override[0].where" and "missing" in p.message


def test_where_naming_no_parameter_is_refused_with_did_you_mean(tmp_path):
    (p,) = problems(tmp_path, """
        [[override]]
        where = { model = "vit" }
        mem = "2G"
        [[override]]
        where = { modle = "vit" }
        mem = "8G"
        """)
    assert p.key == "override[1].where.modle" and str(tmp_path / "sweep.toml") == p.file
    assert "table 1" in p.message and "not a parameter" in p.message
    assert p.fix.startswith("did you mean 'model'?")


def test_empty_where_is_refused(tmp_path):
    (p,) = problems(tmp_path, """
        [[override]]
        where = {}
        mem = "8G"
        """)
    assert p.key == "override[0].where" and "every run" in p.message


def test_where_matching_no_run_is_refused_naming_file_and_table(tmp_path, site):
    sweep = sweep_with(tmp_path, """
        [[override]]
        where = { model = "vit" }
        mem = "2G"
        [[override]]
        where = { model = "vit", lr = 0.5 }
        time = "00:30:00"
        """)
    with pytest.raises(ValidationError) as err:
        make_plan(sweep, site)
    (p,) = err.value.problems
    assert p.file == str(sweep.path) and p.key == "override[1].where"
    assert "table 1" in p.message and "matches none of the 4 runs" in p.message
    assert "lr: 0.1, 0.01" in p.fix
    # The fix pastes and passes.
    fixed = sweep.path.read_text().replace("lr = 0.5", "lr = 0.01")
    sweep.path.write_text(fixed)
    make_plan(load_sweep(sweep.path), site)


def test_cli_refuses_a_bad_override_with_exit_2_no_traceback(tmp_path):
    path = write(tmp_path, """
        [[override]]
        where = { model = "vti" }
        mem = "2G"
        """)
    result = CliRunner().invoke(main, ["--ledger", str(tmp_path / "l.db"), "validate", "--offline",
                                       str(path), "--site", str(ROOT_SITE)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "[override[0].where]" in result.output and "matches none" in result.output


def test_canonical_without_override_is_unchanged_and_with_it_differs(tmp_path):
    plain = sweep_with(tmp_path, "")
    assert "override" not in plain.canonical()
    with_table = sweep_with(tmp_path, """
        [[override]]
        where = { model = "vit" }
        mem = "2G"
        """)
    assert with_table.canonical()["override"] == [{"where": {"model": ["vit"]}, "mem": "2G",
                                                   "mem_mb": 2048, "time_min": None}]


# ---------------------------------------------------------------- plan


def test_each_resource_group_is_its_own_array_later_tables_win_key_by_key(tmp_path, site):
    sweep = sweep_with(tmp_path, """
        [[override]]
        where = { model = "vit" }
        mem = "2G"
        time = "00:20:00"
        [[override]]
        where = { model = "vit", lr = [0.01, 0.5] }
        time = "00:30:00"
        array_parallelism = 1
        """)
    plan = make_plan(sweep, site)
    assert len(plan.placements) == 3 and [c.group for c in plan.chunks] == [0, 1, 2]
    assert groups_of(plan) == [
        (1024, 10, "cpu", None, [("resnet", 0.01), ("resnet", 0.1)]),
        (2048, 20, "cpu", None, [("vit", 0.1)]),
        (2048, 30, "cpu", 1, [("vit", 0.01)]),      # mem from table 0, time from table 1
    ]
    assert [r.index for r in plan.runs] == [0, 1, 2, 3]      # the file's order, kept
    assert plan.groups[2].setters == {"mem": 0, "time": 1, "array_parallelism": 1}


def test_override_routes_its_group_elsewhere(tmp_path, site):
    sweep = sweep_with(tmp_path, """
        [[override]]
        where = { model = "vit" }
        gpus = 1
        gpu_type = "a100"
        """)
    plan = make_plan(sweep, site)
    assert [(c.resources.partition, c.resources.gres) for c in plan.chunks] == \
        [("cpu", None), ("gpu", "gpu:a100:1")]


def test_tables_giving_the_same_resources_make_one_group(tmp_path, site):
    sweep = sweep_with(tmp_path, """
        [[override]]
        where = { lr = 0.1 }
        mem = "2G"
        [[override]]
        where = { model = "vit" }
        mem = "2G"
        """)
    plan = make_plan(sweep, site)
    assert [len(c.runs) for c in plan.chunks] == [3, 1]
    assert plan.groups[0].tables == (0, 1) and plan.chunks[1].resources.mem_mb == 1024


def test_values_match_by_type_and_number(tmp_path, site):
    sweep = sweep_with(tmp_path, """
        [[override]]
        where = { n = 1.0 }
        mem = "2G"
        [[override]]
        where = { flag = 1 }
        time = "00:20:00"
        """, base="""
        name = "types"
        command = "run {n} {flag}"
        [params]
        n = [1, 2]
        flag = [true, false]
        """)
    with pytest.raises(ValidationError) as err:      # 1 is not true: table 1 matches nothing
        make_plan(sweep, site)
    assert [p.key for p in err.value.problems] == ["override[1].where"]
    sweep.path.write_text(sweep.path.read_text().replace("flag = 1 }", "flag = true }"))
    plan = make_plan(load_sweep(sweep.path), site)
    got = {(r.params["n"], r.params["flag"]): (c.resources.mem_mb, c.resources.time_min)
           for c in plan.chunks for r in c.runs}
    assert got == {(1, True): (2048, 20), (1, False): (2048, 10),
                   (2, True): (500, 20), (2, False): (500, 10)}


def test_sbatch_in_override_replaces_and_its_absence_keeps(tmp_path, site):
    sweep = sweep_with(tmp_path, """
        [[override]]
        where = { model = "vit", lr = 0.1 }
        sbatch = []
        [[override]]
        where = { model = "vit", lr = 0.01 }
        sbatch = ["--exclusive"]
        [[override]]
        where = { model = "resnet" }
        time = "00:20:00"
        """, base=BASE + 'sbatch = ["--mail-type=END"]\n')
    plan = make_plan(sweep, site)
    got = {(r.params["model"], r.params["lr"]): c.resources.sbatch for c in plan.chunks for r in c.runs}
    assert got[("vit", 0.1)] == () and got[("vit", 0.01)] == ("--exclusive",)
    assert got[("resnet", 0.1)] == ("--mail-type=END",)


# ---------------------------------------------------------------- explain, validation, dry run


def test_explain_shows_each_group_with_its_resources_and_run_count(tmp_path, site):
    sweep = sweep_with(tmp_path, """
        [[override]]
        where = { model = "vit" }
        mem = "2G"
        time = "00:20:00"
        """)
    text = describe(make_plan(sweep, site))
    assert text.startswith("4 runs in 2 resource groups, 2 job arrays")
    assert "group 0: 2 runs -> partition cpu\n  from: [resources] only" in text
    assert "group 1: 2 runs -> partition cpu\n  from: [resources] with [[override]] 0" in text
    assert "  resources: cpus 1*, mem 1G, time 00:10:00" in text
    assert "  resources: cpus 1*, mem 2G, time 00:20:00" in text


def test_validation_runs_per_group_and_names_the_override_key(tmp_path, site):
    sweep = sweep_with(tmp_path, """
        [[override]]
        where = { model = "vit" }
        time = "3-00:00:00"
        """)
    report = validate(sweep, site, make_plan(sweep, site))
    (p,) = [p for p in report.problems if p.check == "route"]
    assert p.key == "override[0].time" and p.message.startswith("group 1 (2 runs): ")
    assert "over max_time 1-00:00:00" in p.message
    assert p.fix == 'set time = "1-00:00:00" in [[override]] table 0'
    # a group within the limits is not refused
    sweep.path.write_text(sweep.path.read_text().replace("3-00:00:00", "1-00:00:00"))
    sweep = load_sweep(sweep.path)
    assert validate(sweep, site, make_plan(sweep, site)).ok


def test_validation_of_resources_keeps_its_key_without_override(tmp_path, site):
    sweep = sweep_with(tmp_path, "", BASE.replace("00:10:00", "3-00:00:00"))
    report = validate(sweep, site, make_plan(sweep, site))
    (p,) = [p for p in report.problems if p.check == "route"]
    assert p.key == "resources.time" and not p.message.startswith("group")


def test_dry_run_shows_every_groups_script(tmp_path):
    path = write(tmp_path, """
        [[override]]
        where = { model = "vit" }
        mem = "2G"
        time = "00:20:00"
        """)
    text = launcher.dry_run_text(launcher.prepare(path, ROOT_SITE))
    scripts = text.split("# ---- chunk ")[1:]
    assert len(scripts) == 2
    assert "#SBATCH --mem=1024M" in scripts[0] and "#SBATCH --time=0-00:10:00" in scripts[0]
    assert "#SBATCH --mem=2048M" in scripts[1] and "#SBATCH --time=0-00:20:00" in scripts[1]


# ---------------------------------------------------------------- retries and escalation


def test_settings_and_escalation_are_per_group(tmp_path):
    """Group 1 goes to the debug partition (MaxTime 5 min): its escalation stops there, while
    group 0's (partition cpu, 1 day) does not; each escalates from its own time."""
    path = write(tmp_path, """
        [[override]]
        where = { model = "vit" }
        partition = "debug"
        time = "00:02:00"
        mem = "200M"
        """, base=BASE + '[retry]\nescalate = true\nescalate_factor = 4.0\n')
    prep = launcher.prepare(path, ROOT_SITE)
    settings = ExperimentSettings.from_json(launcher.settings_for(prep).to_json())
    text = describe(prep.plan)
    assert "why debug:\n    - asked for in the sweep's [[override]] 0 partition" in text
    assert "why cpu:\n    - CPU run" in text
    g0, g1 = settings.groups
    assert (g0.chunks, g0.partition, g0.time_min, g0.mem_mb, g0.max_time_min) == ((0,), "cpu", 10, 1024, 24 * 60)
    assert (g1.chunks, g1.partition, g1.time_min, g1.mem_mb, g1.max_time_min) == ((1,), "debug", 2, 200, 5)
    p0, p1 = RetryPolicy.for_chunk(settings, 0), RetryPolicy.for_chunk(settings, 1)
    assert escalation_for(p0, 1, 0).time_min == 40
    assert escalation_for(p1, 1, 0).time_min == 5             # 8 min, capped by debug's 5
    assert escalation_for(p1, 0, 1).mem_mb == 800
    from datetime import datetime, timezone
    now = datetime.now(timezone.utc)
    assert decide_retry(p1, "TIMEOUT", "resources", 1, ["TIMEOUT"], now, now).note == \
        "retry 2/3 with time 00:05:00"
    assert "already at the partition limit" in \
        decide_retry(p1, "TIMEOUT", "resources", 2, ["TIMEOUT", "TIMEOUT"], now, now).note


def test_override_keys_get_the_checks_resources_get(tmp_path):
    found = problems(tmp_path, """
        [[override]]
        where = { model = "vit" }
        gpu_type = "a100"
        [[override]]
        where = { model = "resnet" }
        time = "00:01:00"
        [checkpoint]
        signal = "USR1"
        before = "90s"
        """)
    assert {(p.key, p.message.split(":")[0]) for p in found} == {
        ("override[0].gpu_type", "gpu_type = 'a100' but gpus is 0"),
        ("checkpoint.before", "before = '90s' is not shorter than the time limit (00"),
    }
    assert "in override[1]" in next(p.message for p in found if p.key == "checkpoint.before")


def test_readme_example_later_tables_win_key_by_key(tmp_path, site):
    sweep = sweep_with(tmp_path, """
        [[override]]
        where = { model = "vit" }
        mem = "8G"
        time = "02:00:00"
        gpus = 1
        [[override]]
        where = { model = "vit", lr = [0.01, 0.001] }
        time = "04:00:00"
        """, base=BASE.replace('mem = "1G"', 'mem = "4G"'))
    got = {(r.params["model"], r.params["lr"]): (c.resources.mem_mb, c.resources.time_min, c.resources.gpus)
           for c in make_plan(sweep, site).chunks for r in c.runs}
    assert got[("vit", 0.01)] == (8192, 240, 1) and got[("vit", 0.1)] == (8192, 120, 1)
    assert got[("resnet", 0.01)] == (4096, 10, 0)


def test_each_groups_array_parallelism_is_shared_by_that_groups_arrays(tmp_path, site):
    """One group: the sweep's limit for all its arrays together. With [[override]] groups, each
    group's own value is split among that group's arrays (MaxArraySize 2 here)."""
    base = BASE.replace('lr = [0.1, 0.01]', 'lr = [0.1, 0.01, 0.001, 0.0001, 0.00001]')
    small = site.model_copy(update={"max_array_size": 2})
    one = make_plan(sweep_with(tmp_path, "array_parallelism = 4\n", base), small)
    assert [c.throttle for c in one.chunks] == [1, 1, 1, 1, 1] and one.throttle == 4   # 5 arrays > 4
    plan = make_plan(sweep_with(tmp_path, """
        array_parallelism = 3
        [[override]]
        where = { model = "vit" }
        mem = "2G"
        array_parallelism = 4
        """, base), small)
    by_group: dict[int, list] = {}
    for c in plan.chunks:
        by_group.setdefault(c.group, []).append((c.size, c.throttle))
    assert by_group[0] == [(2, 1), (2, 1), (1, 1)]          # 3 for 3 arrays
    assert [size for size, _ in by_group[1]] == [2, 2, 1]
    assert sum(t for _, t in by_group[1]) == 4 and all(t >= 1 for _, t in by_group[1]), by_group
