import json
import textwrap
import warnings

import pytest

from slurmexp.errors import SpecError
from slurmexp.sweep.spec import QUOTE_FIX, Sweep, load_sweep

FULL = """
name = "lr-sweep"
command = "python train.py --lr {lr} --model {model} --seed {seed} --warmup {warmup} --wd {wd} --opt {opt} --out {run_dir}"
workdir = "code"
output_dir = "runs-out"
template = "tpl/site.sh.j2"
allow_unused = ["tag"]

[params]
model = ["resnet", "vit"]
seed = 1
tag = "x"

[[zip]]
lr = [0.1, 0.01]
warmup = [100, 10]

[[runs]]
lr = 0.5
model = "vit"
seed = 9
warmup = 5
wd = 0.0
opt = "sgd"

[sample]
seed = 0
n = 4
[sample.params]
wd = { dist = "uniform", low = 0.0, high = 0.1 }
opt = { dist = "choice", values = ["sgd", "adam"] }

[resources]
gpus = 1
gpu_type = "a100"
cpus = 4
mem = "8G"
time = "01:00:00"
array_parallelism = 8

[env]
setup = ["source .venv/bin/activate"]
modules = ["cuda/12"]
vars = { OMP_NUM_THREADS = "4" }

[retry]
max_attempts = 2
escalate = true
escalate_factor = 1.5
"""

MINIMAL = """
name = "s"
command = "python train.py --lr {lr}"
[params]
lr = [0.1, 0.01]
"""


def write(tmp_path, text, name="sweep.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        load_sweep(path)
    for p in info.value.problems:
        assert p.file == str(path.resolve())
    return info.value.problems


def by_key(probs, key):
    found = [p for p in probs if p.key == key]
    assert found, f"no problem for {key!r}; got {[(p.key, p.message) for p in probs]}"
    return found[0]


def test_full_example_loads(tmp_path):
    path = write(tmp_path, FULL)
    sweep = load_sweep(path)
    assert isinstance(sweep, Sweep)
    assert sweep.name == "lr-sweep"
    assert sweep.path == path.resolve()
    assert sweep.raw_text == path.read_text()
    assert sweep.workdir == (tmp_path / "code").resolve()
    assert sweep.output_dir == (tmp_path / "runs-out").resolve()
    assert sweep.template == (tmp_path / "tpl" / "site.sh.j2").resolve()
    assert sweep.params == {"model": ["resnet", "vit"], "seed": [1], "tag": ["x"]}
    assert sweep.zip == [{"lr": [0.1, 0.01], "warmup": [100, 10]}]
    assert sweep.runs[0]["lr"] == 0.5
    assert sweep.sample.seed == 0 and sweep.sample.n == 4
    assert sweep.sample.params["opt"].values == ["sgd", "adam"]
    assert sweep.resources.mem == "8G" and sweep.resources.mem_mb == 8192
    assert sweep.resources.time == "01:00:00" and sweep.resources.time_min == 60
    assert sweep.resources.array_parallelism == 8
    assert sweep.env.vars == {"OMP_NUM_THREADS": "4"}
    assert sweep.retry.max_attempts == 2 and sweep.retry.escalate_factor == 1.5
    assert sweep.param_names() == ["model", "seed", "tag", "lr", "warmup", "wd", "opt"]
    assert sweep.placeholder_names() == ["lr", "model", "seed", "warmup", "wd", "opt", "run_dir"]


def test_defaults_when_sections_are_absent(tmp_path):
    sweep = load_sweep(write(tmp_path, MINIMAL))
    assert sweep.workdir == tmp_path.resolve()
    assert sweep.output_dir == (tmp_path / "slurmexp-runs").resolve()
    assert sweep.template is None
    assert sweep.resources.mem_mb is None and sweep.resources.time_min is None
    assert sweep.retry.max_attempts == 3 and sweep.retry.escalate is False
    assert sweep.sample is None and sweep.zip == [] and sweep.runs == []


def test_canonical_is_json_sorted_and_excludes_provenance(tmp_path):
    sweep = load_sweep(write(tmp_path, FULL))
    canon = sweep.canonical()
    assert "path" not in canon and "raw_text" not in canon
    assert json.loads(json.dumps(canon)) == canon
    assert list(canon) == sorted(canon)
    assert list(canon["resources"]) == sorted(canon["resources"])
    assert canon["resources"]["mem_mb"] == 8192


def test_canonical_ignores_parameter_order_and_comments(tmp_path):
    a = load_sweep(write(tmp_path, """
        name = "s"
        command = "x {a} {b}"
        [params]
        a = [1, 2]
        b = ["p", "q"]
        """, "a.toml"))
    b = load_sweep(write(tmp_path, """
        # same sweep, other order
        name = "s"
        command = "x {a} {b}"
        [params]
        b = ["p", "q"]
        a = [1, 2]
        """, "b.toml"))
    assert a.canonical() == b.canonical()
    assert a.raw_text != b.raw_text


def test_unknown_top_level_key_lists_allowed_and_suggests(tmp_path):
    probs = problems(tmp_path, 'comand = "x"\n' + MINIMAL)
    p = by_key(probs, "comand")
    assert p.check == "unknown_key"
    assert "'comand'" in p.message
    for allowed in ("command", "params", "resources", "sample"):
        assert allowed in p.message
    assert "did you mean 'command'?" in p.message
    assert "'command'" in p.fix


def test_unknown_nested_key(tmp_path):
    probs = problems(tmp_path, MINIMAL + '[resources]\ngpu_typ = "a100"\n')
    p = by_key(probs, "resources.gpu_typ")
    assert "gpu_type" in p.fix
    assert "array_parallelism" in p.message


def test_unknown_key_in_distribution(tmp_path):
    probs = problems(tmp_path, """
        name = "s"
        command = "x {lr}"
        [sample]
        seed = 1
        n = 2
        [sample.params]
        lr = { dist = "uniform", lo = 0.0, high = 1.0 }
        """)
    p = by_key(probs, "sample.params.lr.lo")
    assert "'low'" in p.fix


def test_wrong_types_are_named_with_fix(tmp_path):
    probs = problems(tmp_path, MINIMAL + '[resources]\ngpus = "1"\ncpus = 2.5\n[env]\nvars = { OMP = 4 }\n')
    gpus = by_key(probs, "resources.gpus")
    assert gpus.check == "type" and "integer" in gpus.message and "gpus = 1" in gpus.fix
    assert "integer" in by_key(probs, "resources.cpus").message
    assert 'OMP = "4"' in by_key(probs, "env.vars.OMP").fix


def test_strict_types_do_not_coerce(tmp_path):
    probs = problems(tmp_path, 'allow_unused = [1]\n' + MINIMAL + '[resources]\ngpus = true\nnodes = 1.0\n'
                     '[retry]\nescalate = "yes"\n')
    assert by_key(probs, "allow_unused[0]").fix == 'put it in quotes: "1"'
    by_key(probs, "resources.gpus")
    by_key(probs, "resources.nodes")
    assert "true" in by_key(probs, "retry.escalate").fix


def test_all_problems_collected_at_once(tmp_path):
    probs = problems(tmp_path, """
        name = "bad name"
        command = "x {lr} {nope}"
        [params]
        lr = [0.1]
        [resources]
        time = "1:90:00"
        mem = "lots"
        [retry]
        max_attempts = 0
        """)
    keys = {p.key for p in probs}
    assert {"name", "command", "resources.time", "resources.mem", "retry.max_attempts"} <= keys


def test_name_pattern(tmp_path):
    p = by_key(problems(tmp_path, MINIMAL.replace('name = "s"', 'name = "my sweep/1"')), "name")
    assert "'my sweep/1'" in p.message


def test_missing_required_keys(tmp_path):
    probs = problems(tmp_path, '[params]\nlr = [1]\n')
    assert by_key(probs, "name").check == "missing_key"
    assert by_key(probs, "command").check == "missing_key"


def test_toml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, 'name = "s"\ncommand = "x"\n[params\nlr = 1\n')
    with pytest.raises(SpecError) as info:
        load_sweep(path)
    (p,) = info.value.problems
    assert p.check == "toml_syntax"
    assert p.file == str(path.resolve())
    assert "line 3" in p.message
    assert str(path.resolve()) in info.value.message


def test_missing_file(tmp_path):
    with pytest.raises(SpecError) as info:
        load_sweep(tmp_path / "nope.toml")
    assert "not found" in info.value.problems[0].message


def test_unknown_placeholder_suggests_close_parameter(tmp_path):
    p = by_key(problems(tmp_path, MINIMAL.replace("{lr}", "{lr} {l_r}")), "command")
    assert p.check == "placeholder" and "{l_r}" in p.message and "{lr}" in p.fix


def test_builtins_and_literal_braces_are_fine(tmp_path):
    sweep = load_sweep(write(tmp_path, MINIMAL.replace(
        "{lr}", "{lr} --out {run_dir} --id {run_id} --exp {experiment_id} --json {{}}")))
    assert sweep.placeholder_names() == ["lr", "run_dir", "run_id", "experiment_id"]


def test_unused_parameter_and_allow_unused(tmp_path):
    text = MINIMAL + "wd = [0.0, 0.1]\n"
    p = by_key(problems(tmp_path, text), "params.wd")
    assert p.check == "unused_parameter" and "allow_unused" in p.fix
    sweep = load_sweep(write(tmp_path, 'allow_unused = ["wd"]\n' + text, "ok.toml"))
    assert sweep.allow_unused == ["wd"]


def test_allow_unused_must_name_a_parameter(tmp_path):
    by_key(problems(tmp_path, 'allow_unused = ["nope"]\n' + MINIMAL), "allow_unused[0]")


@pytest.mark.parametrize("command, kind", [
    ('python train.py --lr "{lr}"', "double"),
    ("python train.py --lr '{lr}'", "single"),
    ('python train.py "--lr={lr}"', "double"),
])
def test_quoted_placeholder_is_an_error(tmp_path, command, kind):
    text = MINIMAL.replace('command = "python train.py --lr {lr}"', f"command = '''{command}'''")
    p = by_key(problems(tmp_path, text), "command")
    assert p.check == "quoted_placeholder"
    assert kind in p.message
    assert p.fix == "remove the quotes: slurmexp shell-quotes every value itself" == QUOTE_FIX


def test_quotes_elsewhere_are_fine(tmp_path):
    text = MINIMAL.replace('command = "python train.py --lr {lr}"',
                           """command = '''printf '%s\\n' "a b" {lr} 'it''s' '''""")
    load_sweep(write(tmp_path, text))


@pytest.mark.parametrize("placeholder", ["{lr:.3f}", "{lr!r}", "{lr!s:>5}"])
def test_format_specs_and_conversions_are_errors(tmp_path, placeholder):
    p = by_key(problems(tmp_path, MINIMAL.replace("{lr}", placeholder)), "command")
    assert placeholder in p.message


def test_unbalanced_braces(tmp_path):
    p = by_key(problems(tmp_path, MINIMAL.replace("{lr}", "{lr} }")), "command")
    assert "{{" in p.fix


def test_zip_lengths_must_match(tmp_path):
    probs = problems(tmp_path, """
        name = "s"
        command = "x {lr} {warmup}"
        [[zip]]
        lr = [0.1, 0.01]
        warmup = [100, 10, 1]
        """)
    p = by_key(probs, "zip[0]")
    assert p.check == "zip_length" and "lr has 2" in p.message and "warmup has 3" in p.message


def test_parameter_in_two_places(tmp_path):
    probs = problems(tmp_path, MINIMAL + "[[zip]]\nlr = [1, 2]\n")
    p = by_key(probs, "zip[0].lr")
    assert p.check == "parameter_conflict" and "params.lr" in p.message


def test_parameter_in_grid_and_sample(tmp_path):
    probs = problems(tmp_path, MINIMAL + '[sample]\nseed = 0\nn = 2\n[sample.params]\n'
                     'lr = { dist = "uniform", low = 0.0, high = 1.0 }\n')
    by_key(probs, "sample.params.lr")


def test_runs_must_give_every_command_parameter(tmp_path):
    probs = problems(tmp_path, """
        name = "s"
        command = "x {lr} {model}"
        [params]
        lr = [0.1]
        model = ["a"]
        [[runs]]
        lr = 0.5
        model = "b"
        [[runs]]
        lr = 0.7
        """)
    p = by_key(probs, "runs[1]")
    assert p.check == "run_incomplete" and "model" in p.message
    assert not [q for q in probs if q.key == "runs[0]"]


def test_runs_only_parameter_needs_product_value(tmp_path):
    probs = problems(tmp_path, """
        name = "s"
        command = "x {lr} {extra}"
        [params]
        lr = [0.1]
        [[runs]]
        lr = 0.5
        extra = 1
        """)
    assert "{extra}" in by_key(probs, "command").message


def test_runs_alone_are_a_sweep(tmp_path):
    sweep = load_sweep(write(tmp_path, 'name = "s"\ncommand = "x {lr}"\n[[runs]]\nlr = 1\n[[runs]]\nlr = 2\n'))
    assert sweep.param_names() == ["lr"]


def test_empty_list_is_an_error(tmp_path):
    p = by_key(problems(tmp_path, MINIMAL.replace("lr = [0.1, 0.01]", "lr = []")), "params.lr")
    assert "empty" in p.message


def test_nested_and_date_values_are_errors(tmp_path):
    probs = problems(tmp_path, MINIMAL + "wd = [[1, 2]]\nday = 2024-01-01\n")
    assert "array" in by_key(probs, "params.wd").message
    assert "date" in by_key(probs, "params.day").message


def test_parameter_names_must_be_identifiers(tmp_path):
    probs = problems(tmp_path, MINIMAL + '"learning-rate" = [1]\n')
    assert by_key(probs, "params.learning-rate").check == "parameter_name"


def test_builtin_name_is_reserved(tmp_path):
    probs = problems(tmp_path, MINIMAL.replace("{lr}", "{lr} {run_id}") + "run_id = [1]\n")
    assert "reserved" in by_key(probs, "params.run_id").message


def test_no_parameters_and_no_placeholders_is_fine(tmp_path):
    sweep = load_sweep(write(tmp_path, 'name = "s"\ncommand = "echo hi {run_dir}"\n'))
    assert sweep.param_names() == []


def test_no_parameters_but_a_placeholder_is_an_error(tmp_path):
    by_key(problems(tmp_path, 'name = "s"\ncommand = "echo {lr}"\n'), "command")


def test_sample_checks(tmp_path):
    probs = problems(tmp_path, """
        name = "s"
        command = "x {lr} {d} {o}"
        [sample]
        n = 0
        [sample.params]
        lr = { dist = "loguniform", low = 0.0, high = 0.1 }
        d = { dist = "int", low = 2.5, high = 8 }
        o = { dist = "choice" }
        """)
    assert by_key(probs, "sample.seed").check == "missing_key"
    by_key(probs, "sample.n")
    probs = problems(tmp_path, """
        name = "s"
        command = "x {lr} {d} {o} {w}"
        [sample]
        seed = 3
        n = 2
        [sample.params]
        lr = { dist = "loguniform", low = 0.0, high = 0.1 }
        d = { dist = "int", low = 2.5, high = 8 }
        o = { dist = "choice" }
        w = { dist = "uniform", low = 1.0, high = 0.5 }
        """)
    assert "low > 0" in by_key(probs, "sample.params.lr.low").message
    by_key(probs, "sample.params.d.low")
    by_key(probs, "sample.params.o.values")
    by_key(probs, "sample.params.w")


def test_resource_checks(tmp_path):
    probs = problems(tmp_path, MINIMAL + """
        [resources]
        time = "UNLIMITED"
        mem = "0"
        gpus = -1
        gpu_type = "a100"
        array_parallelism = 0
        """)
    assert "finite" in by_key(probs, "resources.time").message
    by_key(probs, "resources.mem")
    by_key(probs, "resources.gpus")
    by_key(probs, "resources.array_parallelism")


def test_gpu_type_without_gpus(tmp_path):
    by_key(problems(tmp_path, MINIMAL + '[resources]\ngpu_type = "a100"\n'), "resources.gpu_type")


def test_env_var_names(tmp_path):
    probs = problems(tmp_path, MINIMAL + '[env]\nvars = { "1BAD" = "x", "A-B" = "y", GOOD_1 = "z" }\n')
    by_key(probs, "env.vars.1BAD")
    by_key(probs, "env.vars.A-B")
    assert not [p for p in probs if p.key == "env.vars.GOOD_1"]


def test_escalate_factor_must_grow(tmp_path):
    by_key(problems(tmp_path, MINIMAL + "[retry]\nescalate_factor = 1.0\n"), "retry.escalate_factor")


# ---------------------------------------------------------------- refused names and values (issue 9, item 13)

def paste(path, key, fix, section=None):
    """The sweep file with the line `key = ...` replaced by the fix line, as a user would."""
    line = fix.split(" (")[0]
    lines = path.read_text().splitlines()
    start = lines.index(f"[{section}]") + 1 if section else 0
    for i in range(start, len(lines)):
        if lines[i].split("=")[0].strip() == key:
            lines[i] = line
            break
    else:
        raise AssertionError(f"{key} not in {path}")
    path.write_text("\n".join(lines) + "\n")
    return load_sweep(path)


@pytest.mark.parametrize("name", ["-rf", ".", "..", "_x", "-", "my sweep/1", ""])
def test_name_must_start_with_a_letter_or_digit_and_the_fix_works(tmp_path, name):
    path = write(tmp_path, MINIMAL.replace('name = "s"', f'name = "{name}"'))
    with pytest.raises(SpecError) as info:
        load_sweep(path)
    p = by_key(info.value.problems, "name")
    assert "start with a letter or digit" in p.message and p.fix.startswith('name = "')
    fixed = paste(path, "name", p.fix)
    assert fixed.name[0].isalnum()


@pytest.mark.parametrize("command", ['""', '"   "', '" \\t\\n "'])
def test_blank_command_is_refused_with_a_working_fix(tmp_path, command):
    path = write(tmp_path, MINIMAL.replace('command = "python train.py --lr {lr}"', f"command = {command}"))
    with pytest.raises(SpecError) as info:
        load_sweep(path)
    [p] = info.value.problems          # and no "lr does not appear in command" besides
    assert p.key == "command" and p.check == "empty_command"
    assert p.fix == 'write the program to run, e.g. command = "python3 train.py --lr {lr}"'
    assert paste(path, "command", p.fix.split("e.g. ")[1]).placeholder_names() == ["lr"]


def test_relative_output_dir_must_stay_in_the_project(tmp_path):
    from slurmexp.errors import SlurmexpWarning

    project = tmp_path / "proj"
    (project / ".git").mkdir(parents=True)           # a git work tree: the project
    (project / "exp" / "a").mkdir(parents=True)
    path = project / "exp" / "a" / "sweep.toml"
    path.write_text('output_dir = "../../.."\n' + MINIMAL)
    with pytest.raises(SpecError) as info:
        load_sweep(path)
    p = by_key(info.value.problems, "output_dir")
    assert f"resolves to {tmp_path}" in p.message and f"project {project}" in p.message
    assert "git work tree" in p.message
    assert paste(path, "output_dir", p.fix.split(" if ")[0]).output_dir == tmp_path
    # Inside the project but outside the sweep's folder: allowed, with a warning.
    path.write_text('output_dir = "../../runs"\n' + MINIMAL)
    with pytest.warns(SlurmexpWarning, match="leaves the sweep's folder"):
        assert load_sweep(path).output_dir == project / "runs"
    # Absolute (or ~) is taken as written, without a word.
    for value in (str(tmp_path / "scratch"), "~/runs"):
        path.write_text(f'output_dir = "{value}"\n' + MINIMAL)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            load_sweep(path)


def test_without_git_the_project_is_the_sweeps_folder(tmp_path, monkeypatch):
    folder = tmp_path / "plain" / "a"
    folder.mkdir(parents=True)
    if any((d / ".git").exists() for d in folder.parents):
        pytest.skip("tmp_path is inside a git work tree")
    path = folder / "sweep.toml"
    path.write_text('output_dir = "../runs"\n' + MINIMAL)
    with pytest.raises(SpecError) as info:
        load_sweep(path)
    p = by_key(info.value.problems, "output_dir")
    assert f"project {folder} (the sweep file's folder" in p.message


@pytest.mark.parametrize("key, value, expected", [
    ("partition", "gpu long", "gpu"), ("partition", " gpu", "gpu"), ("partition", "cpu,gpu", "cpu"),
    ("qos", "high,low", "high"), ("account", 'lab\\"x', "labx"), ("reservation", "resv1 # x", "resv1"),
    ("gpu_type", "a100:2", "a100"), ("constraint", "a & b", "a&b")])
def test_values_sbatch_would_split_are_refused_at_their_key(tmp_path, key, value, expected):
    path = write(tmp_path, MINIMAL + f'[resources]\ngpus = 1\n{key} = "{value}"\n')
    with pytest.raises(SpecError) as info:
        load_sweep(path)
    p = by_key(info.value.problems, f"resources.{key}")
    assert p.fix.startswith(f'{key} = "{expected}" (')
    assert getattr(paste(path, key, p.fix, "resources").resources, key) == expected


def test_provenance_table_is_not_part_of_the_fingerprint(tmp_path):
    plain = load_sweep(write(tmp_path, MINIMAL, "a.toml"))
    other = load_sweep(write(tmp_path, MINIMAL + '[provenance]\nsecret_patterns = ["*.csv"]\n', "b.toml"))
    assert other.provenance.secret_patterns == ["*.csv"]
    assert "provenance" not in plain.canonical() and plain.canonical() == other.canonical()
    by_key(problems(tmp_path, MINIMAL + '[provenance]\nsecret_patterns = [""]\n'), "provenance.secret_patterns[0]")


CHECKPOINT_BASE = """
name = "ck"
command = "python train.py --lr {lr}"
[params]
lr = [0.1]
[resources]
time = "10"
"""


def test_checkpoint_table_loads_and_changes_the_fingerprint_only_when_present(tmp_path):
    plain = load_sweep(write(tmp_path, CHECKPOINT_BASE, "plain.toml"))
    assert plain.checkpoint is None and "checkpoint" not in plain.canonical()
    sweep = load_sweep(write(tmp_path, CHECKPOINT_BASE + '[checkpoint]\nsignal = "USR2"\n'
                             'before = "2m"\nrequeue = true\n', "ck.toml"))
    assert (sweep.checkpoint.signal, sweep.checkpoint.before_s, sweep.checkpoint.requeue) == ("USR2", 120, True)
    assert sweep.canonical()["checkpoint"]["before_s"] == 120
    defaults = load_sweep(write(tmp_path, CHECKPOINT_BASE + "[checkpoint]\n", "d.toml")).checkpoint
    assert (defaults.signal, defaults.before_s, defaults.requeue) == ("USR1", 90, False)


def test_checkpoint_mistakes_each_get_a_fix(tmp_path):
    probs = problems(tmp_path, CHECKPOINT_BASE + '[checkpoint]\nsignal = "SIGUSR1"\nbefor = "90s"\n')
    assert by_key(probs, "checkpoint.signal").fix == 'signal = "USR1"'
    assert "did you mean 'before'?" in by_key(probs, "checkpoint.befor").message
    probs = problems(tmp_path, CHECKPOINT_BASE + '[checkpoint]\nsignal = "KILL"\nbefore = "90"\n'
                     'requeue = "yes"\n')
    assert "cannot be caught" in by_key(probs, "checkpoint.signal").message
    assert by_key(probs, "checkpoint.before").fix == 'before = "90s"'
    assert "true" in by_key(probs, "checkpoint.requeue").fix
    probs = problems(tmp_path, CHECKPOINT_BASE + '[checkpoint]\nsignal = "USR3"\nbefore = "70000s"\n')
    assert by_key(probs, "checkpoint.signal").fix in ('signal = "USR1"', 'signal = "USR2"')
    assert "1 to 65535 seconds" in by_key(probs, "checkpoint.before").message
    probs = problems(tmp_path, CHECKPOINT_BASE + '[checkpoint]\nbefore = "10m"\n')
    p = by_key(probs, "checkpoint.before")
    assert "not shorter than the time limit" in p.message and 'before = "150s"' in p.fix
