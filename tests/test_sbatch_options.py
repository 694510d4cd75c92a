"""`[resources] sbatch = [...]` offline (issue 15 item 4): what is accepted, what collides with
an option slurmexp owns (named with its key and a fix), how it reaches the script, and that a
sweep without it keeps its identity. The cluster half is tests/test_sbatch_options_cluster.py."""
from __future__ import annotations

import textwrap

import pytest
from test_render import CPU, make_chunk, make_ctx, sbatch_lines

from slurmexp.errors import SpecError
from slurmexp.launch.render import render_script
from slurmexp.sweep.plan import Resources
from slurmexp.sweep.sbatch_options import OWNED
from slurmexp.sweep.spec import load_sweep

BASE = '''\
name = "raw"
command = "echo {x}"
[params]
x = [1, 2]
[resources]
time = "00:10:00"
'''


def sweep_with(tmp_path, options: str, extra: str = ""):
    path = tmp_path / "sweep.toml"
    path.write_text(BASE + f"sbatch = {options}\n" + textwrap.dedent(extra))
    return path


def problems_for(tmp_path, options: str, extra: str = ""):
    with pytest.raises(SpecError) as info:
        load_sweep(sweep_with(tmp_path, options, extra))
    return {p.key: p for p in info.value.problems}


def test_plain_options_are_kept_as_written(tmp_path):
    sweep = load_sweep(sweep_with(tmp_path, '["--exclusive", "--mail-type=END", "--mail-user=me@lab.org", '
                                            '"--nice=5", "--time-min=00:05:00", "--signal=B:USR2@30"]'))
    assert sweep.resources.sbatch == ["--exclusive", "--mail-type=END", "--mail-user=me@lab.org",
                                      "--nice=5", "--time-min=00:05:00", "--signal=B:USR2@30"]


@pytest.mark.parametrize("item, owned, fix", [
    ("--array=0-3", "--array", "array_parallelism"),
    ("--job-name=x", "--job-name", "remove it"),
    ("--output=/tmp/o", "--output", "slurmexp logs RUN"),
    ("--error=/tmp/e", "--error", "--stderr"),
    ("--chdir=/tmp", "--chdir", "workdir"),
    ("--comment=x", "--comment", "remove it"),
    ("--parsable", "--parsable", "remove it"),
    ("--partition=gpu", "--partition", 'partition = "..." in [resources]'),
    ("--mem-per-cpu=1G", "--mem-per-cpu", 'mem = "4G"'),
    ("--gpus-per-node=2", "--gpus-per-node", "gpus = N"),
    ("--out=x.log", "--output", "slurmexp logs RUN"),          # sbatch takes abbreviations
    ("--part=gpu", "--partition", "partition"),
])
def test_owned_options_are_refused_with_key_option_and_fix(tmp_path, item, owned, fix):
    found = problems_for(tmp_path, f'["--exclusive", "{item}"]')
    p = found["resources.sbatch[1]"]
    assert item in p.message and f"sets {owned}" in p.message and "slurmexp owns" in p.message
    assert fix in p.fix
    assert "resources.sbatch[0]" not in found


@pytest.mark.parametrize("item, says, fix", [
    ("-N2", "short option", "long form"),
    ("--mail-type END", "splits an #SBATCH line at spaces", 'write "--mail-type=END"'),
    ("exclusive", "not an sbatch option", "one option per item"),
    ("--comment='a b'", "the value is empty or has whitespace", "without them"),
    ("--mail-type=", "the value is empty", "without them"),
    ("--x#y", "not an sbatch option", ""),
])
def test_malformed_items_are_refused(tmp_path, item, says, fix):
    p = problems_for(tmp_path, f'["{item}"]')["resources.sbatch[0]"]
    assert says in p.message and fix in p.fix


def test_signal_is_owned_only_with_checkpoint(tmp_path):
    assert load_sweep(sweep_with(tmp_path, '["--signal=B:USR1@60"]')).resources.sbatch
    p = problems_for(tmp_path, '["--signal=B:USR1@60"]', '[checkpoint]\nsignal = "USR1"\n')["resources.sbatch[0]"]
    assert "--signal" in p.message and "[checkpoint]" in p.fix


def test_every_owned_option_is_refused(tmp_path):
    for name in OWNED:
        found = problems_for(tmp_path, f'["--{name}=1"]')
        assert f"--{name}" in found["resources.sbatch[0]"].message


def test_options_reach_the_script_after_slurmexps_own(tmp_path):
    res = Resources(partition="cpu", time_min=10, sbatch=("--exclusive", "--mail-type=END"))
    lines = sbatch_lines(render_script(make_ctx(tmp_path, make_chunk(2, res))))
    assert lines.index("#SBATCH --exclusive") + 1 == lines.index("#SBATCH --mail-type=END")
    assert lines.index("#SBATCH --exclusive") > lines.index("#SBATCH --cpus-per-task=1")
    assert sum(1 for ln in lines if ln.startswith("#SBATCH --output=")) == 1
    plain = sbatch_lines(render_script(make_ctx(tmp_path, make_chunk(2, CPU))))
    assert not any("exclusive" in ln for ln in plain)


def test_a_sweep_without_sbatch_keeps_its_fingerprint(tmp_path):
    path = tmp_path / "plain.toml"
    path.write_text(BASE)
    canon = load_sweep(path).canonical()
    assert "sbatch" not in canon["resources"]
    assert load_sweep(sweep_with(tmp_path, '["--exclusive"]')).canonical()["resources"]["sbatch"] == ["--exclusive"]
