"""The rendered sbatch script: directives, quoting, guards, layering, size, and the files it reads."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from slurmexp.errors import SpecError
from slurmexp.launch.experiment_files import (
    write_manifest,
    write_script,
)
from slurmexp.launch.render import (
    ScriptContext,
    render_script,
    template_sha256,
)
from slurmexp.sweep.plan import ArrayChunk, Resources, Run

REPO = Path(__file__).resolve().parents[1]
MINICLUSTER = REPO / "templates" / "site-minicluster.sh.j2"
EXP_ID = "demo-0123abcd"

GPU = Resources(partition="gpu", time_min=90, cpus=8, mem_mb=16000, gpus=2, gpu_type="a100",
                qos="normal", account="lab", constraint="ib")
CPU = Resources(partition="cpu", time_min=2 * 24 * 60 + 5, cpus=2)


def make_runs(n: int) -> list[Run]:
    return [Run(run_id=f"r{i:010x}", index=i, params={"i": i}) for i in range(n)]


def make_chunk(n: int = 4, resources: Resources = CPU, chunk: int = 0,
               throttle: int | None = None) -> ArrayChunk:
    return ArrayChunk(chunk=chunk, group=0, resources=resources, runs=make_runs(n), offset=0,
                      throttle=throttle)


def make_ctx(tmp_path: Path, chunk: ArrayChunk | None = None, **overrides) -> ScriptContext:
    chunk = chunk or make_chunk()
    exp_dir = overrides.pop("exp_dir", tmp_path / "exp")
    values = dict(
        experiment_id=EXP_ID,
        chunk=chunk,
        exp_dir=exp_dir,
        workdir=overrides.pop("workdir", tmp_path),
        manifest_path=exp_dir / "manifests" / f"chunk-{chunk.chunk:03d}.txt",
        runs_dir=exp_dir / "runs",
        job_name=f"sx.{EXP_ID}.{chunk.chunk}",
        comment=f"slurmexp:{EXP_ID}",
        cluster="mini",
    )
    values.update(overrides)
    return ScriptContext(**values)


def sbatch_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("#SBATCH")]


def bash_syntax_ok(text: str) -> None:
    proc = subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True)
    assert proc.returncode == 0, proc.stderr


# ------------------------------------------------------------------------------------------


def test_gpu_chunk_has_exactly_the_expected_directives(tmp_path):
    ctx = make_ctx(tmp_path, make_chunk(10, GPU, chunk=3, throttle=4))
    text = render_script(ctx)
    bash_syntax_ok(text)
    exp = ctx.exp_dir
    assert sbatch_lines(text) == [
        f"#SBATCH --job-name=sx.{EXP_ID}.3",
        f"#SBATCH --comment=slurmexp:{EXP_ID}",
        "#SBATCH --array=0-9%4",
        "#SBATCH --partition=gpu",
        "#SBATCH --time=0-01:30:00",
        "#SBATCH --nodes=1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=16000M",
        "#SBATCH --gres=gpu:a100:2",
        "#SBATCH --qos=normal",
        "#SBATCH --account=lab",
        "#SBATCH --constraint=ib",
        f"#SBATCH --output={exp}/logs/%A_%a.out",
        f"#SBATCH --error={exp}/logs/%A_%a.err",
        f"#SBATCH --chdir={tmp_path}",
    ]


def test_cpu_chunk_has_exactly_the_expected_directives(tmp_path):
    res = Resources(partition="cpu", time_min=2 * 24 * 60 + 5, cpus=2, reservation="maint",
                    nodes=2)
    ctx = make_ctx(tmp_path, make_chunk(3, res))
    text = render_script(ctx)
    bash_syntax_ok(text)
    exp = ctx.exp_dir
    assert sbatch_lines(text) == [
        f"#SBATCH --job-name=sx.{EXP_ID}.0",
        f"#SBATCH --comment=slurmexp:{EXP_ID}",
        "#SBATCH --array=0-2",
        "#SBATCH --partition=cpu",
        "#SBATCH --time=2-00:05:00",
        "#SBATCH --nodes=2",
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --reservation=maint",
        f"#SBATCH --output={exp}/logs/%A_%a.out",
        f"#SBATCH --error={exp}/logs/%A_%a.err",
        f"#SBATCH --chdir={tmp_path}",
    ]
    assert "--gres" not in text and "--mem" not in text


def test_directives_come_before_any_command(tmp_path):
    # sbatch stops reading #SBATCH lines at the first command.
    for template in (None, MINICLUSTER):
        lines = render_script(make_ctx(tmp_path, template=template)).splitlines()
        assert lines[0] == "#!/bin/bash"
        first_command = next(i for i, ln in enumerate(lines[1:], 1)
                             if ln.strip() and not ln.startswith("#"))
        assert max(i for i, ln in enumerate(lines) if ln.startswith("#SBATCH")) < first_command
        assert lines[first_command] == "set -euo pipefail"


def test_paths_on_sbatch_lines_are_quoted_for_sbatch_and_percent_is_escaped(tmp_path):
    exp = tmp_path / "my exp #1 100%"
    ctx = make_ctx(tmp_path, exp_dir=exp, workdir=tmp_path / "work dir")
    lines = sbatch_lines(render_script(ctx))
    assert f'#SBATCH --output="{tmp_path}/my exp #1 100%%/logs/%A_%a.out"' in lines
    assert f'#SBATCH --chdir="{tmp_path}/work dir"' in lines


@pytest.mark.parametrize("field,value", [
    ("job_name", "sx.a b"), ("comment", "slurmexp: x"), ("job_name", "a\n#SBATCH --x"),
    ("comment", "a#b"), ("job_name", ""),
])
def test_directive_values_sbatch_would_mangle_are_refused(tmp_path, field, value):
    with pytest.raises(SpecError) as err:
        render_script(make_ctx(tmp_path, **{field: value}))
    assert "slurm.sh.j2" in str(err.value)


def test_partition_with_whitespace_is_refused(tmp_path):
    chunk = make_chunk(2, Resources(partition="gpu long", time_min=10))
    with pytest.raises(SpecError, match="--partition"):
        render_script(make_ctx(tmp_path, chunk))


def test_hostile_values_are_quoted_and_reach_the_shell_literally(tmp_path):
    hostile = "x'; touch MARKER; echo \"$(touch MARKER2)\" `touch MARKER3` $HOME\nnext"
    workdir = tmp_path / "wd $(touch MARKER4) ;'"
    workdir.mkdir()
    exp_dir = tmp_path / "exp $(touch MARKER6) 'q' #1 50%"
    ctx = make_ctx(tmp_path, workdir=workdir, exp_dir=exp_dir, env_vars={"HOSTILE": hostile},
                   env_modules=["gcc/12; touch MARKER5"])
    text = render_script(ctx)
    bash_syntax_ok(text)
    # The module line is one `module load <word>` whatever the name holds.
    module_line = next(ln for ln in text.splitlines() if ln.startswith("module load "))
    assert shlex.split(module_line) == ["module", "load", "gcc/12; touch MARKER5"]
    export_lines = [ln for ln in text.split("\n") if ln.startswith("export HOSTILE=")]
    assert export_lines and "'\"'\"'" in export_lines[0]

    # Run the script for real (no modules here) and let the command print what it got.
    ctx.env_modules = []
    exp = ctx.exp_dir
    chunk = ctx.chunk
    write_manifest(exp, chunk, {r.run_id: 'printf %s "$HOSTILE" > got; pwd > cwd' for r in chunk.runs})
    script = write_script(exp, chunk.chunk, render_script(ctx))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
    env.update(SLURM_ARRAY_TASK_ID="1", SLURM_ARRAY_JOB_ID="77")
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (workdir / "got").read_text() == hostile
    assert Path((workdir / "cwd").read_text().strip()) == workdir
    assert (exp_dir / "runs" / chunk.runs[1].run_id / "attempts" / "77_1" / "exit_code").is_file()
    for name in ("MARKER", "MARKER2", "MARKER3", "MARKER4", "MARKER5", "MARKER6"):
        assert not list(tmp_path.rglob(name)), name


def test_setup_lines_are_shell_code_and_run_under_nounset_off(tmp_path):
    ctx = make_ctx(tmp_path, env_setup=['echo "setup saw ${NOT_SET_ANYWHERE}" > setup.txt'])
    text = render_script(ctx)
    assert 'echo "setup saw ${NOT_SET_ANYWHERE}" > setup.txt' in text
    bash_syntax_ok(text)


@pytest.mark.parametrize("name", ["1BAD", "A B", "X;rm", "SLURMEXP_RUN_ID"])
def test_bad_environment_variable_names_are_refused(tmp_path, name):
    with pytest.raises(SpecError, match="environment variable"):
        render_script(make_ctx(tmp_path, env_vars={name: "v"}))


class _GresLess(Resources):
    """Resources whose gres went missing (as a buggy route or a site layer could hand over)."""

    @property
    def gres(self):
        return None


def test_gpu_without_gres_is_stopped_by_the_guard_naming_the_template(tmp_path):
    res = _GresLess(partition="gpu", time_min=10, gpus=1)
    with pytest.raises(SpecError) as err:
        render_script(make_ctx(tmp_path, make_chunk(2, res)))
    message = err.value.format()
    assert "slurm.sh.j2" in message and "GPU" in message and "gres" in message
    assert err.value.problems[0].file.endswith("slurm.sh.j2")


def test_empty_chunk_and_bad_numbers_are_stopped(tmp_path):
    with pytest.raises(SpecError, match="no runs"):
        render_script(make_ctx(tmp_path, make_chunk(0)))
    with pytest.raises(SpecError, match="--time"):
        render_script(make_ctx(tmp_path, make_chunk(1, Resources(partition="p", time_min=0))))
    with pytest.raises(SpecError, match="--cpus-per-task"):
        render_script(make_ctx(tmp_path, make_chunk(1, Resources(partition="p", time_min=5,
                                                                    cpus=0))))


def test_a_site_template_can_raise_and_the_error_names_it(tmp_path):
    site = tmp_path / "site-strict.sh.j2"
    site.write_text('{% extends "slurm.sh.j2" %}\n'
                    '{% block directives %}\n'
                    '{% if resources.time_min > 60 %}\n'
                    '{{ raise("this site allows at most 60 minutes") }}\n'
                    '{% endif %}\n'
                    '{{ super() }}{% endblock %}\n')
    with pytest.raises(SpecError) as err:
        render_script(make_ctx(tmp_path, make_chunk(1, GPU), template=site))
    assert str(site) in str(err.value)
    assert "line 4" in str(err.value)
    assert "at most 60 minutes" in str(err.value)
    short = Resources(partition="cpu", time_min=30)
    assert "--time=0-00:30:00" in render_script(make_ctx(tmp_path, make_chunk(1, short),
                                                         template=site))


def test_site_template_overriding_blocks_is_used(tmp_path):
    site = tmp_path / "site-mine.sh.j2"
    site.write_text('{% extends "slurm.sh.j2" %}\n'
                    '{% block header %}{{ super() }}# site: mine\n{% endblock %}\n'
                    '{% block directives %}{{ super() }}#SBATCH --exclusive\n{% endblock %}\n'
                    '{% block environment %}ulimit -c 0\n{{ super() }}{% endblock %}\n'
                    '{% block footer %}echo "site footer"\n{% endblock %}\n')
    text = render_script(make_ctx(tmp_path, template=site))
    bash_syntax_ok(text)
    assert "# site: mine" in text
    assert sbatch_lines(text)[-1] == "#SBATCH --exclusive"
    assert "ulimit -c 0\n" in text
    assert text.index('echo "site footer"') > text.index('bash "$SLURMEXP_RUN_DIR/command.sh"')
    assert text.rstrip().endswith('exit "${SLURMEXP_EXIT_CODE:?the task block did not run the '
                                  'command}"')


def test_bundled_minicluster_template_renders(tmp_path):
    text = render_script(make_ctx(tmp_path, make_chunk(5, GPU), template=MINICLUSTER))
    bash_syntax_ok(text)
    lines = sbatch_lines(text)
    assert "#SBATCH --export=ALL" in lines and "#SBATCH --open-mode=append" in lines
    assert "#SBATCH --gres=gpu:a100:2" in lines
    assert "export PYTHONUNBUFFERED=1" in text


def test_a_command_in_the_header_is_refused_because_sbatch_would_skip_directives(tmp_path):
    site = tmp_path / "site-bad.sh.j2"
    site.write_text('{% extends "slurm.sh.j2" %}\n'
                    '{% block header %}echo hi\n{% endblock %}\n')
    with pytest.raises(SpecError, match="sbatch would ignore"):
        render_script(make_ctx(tmp_path, template=site))


def test_strict_undefined_catches_a_missing_variable(tmp_path):
    site = tmp_path / "site-typo.sh.j2"
    site.write_text('{% extends "slurm.sh.j2" %}\n'
                    '{% block footer %}\necho {{ partiton | shquote }}\n{% endblock %}\n')
    with pytest.raises(SpecError) as err:
        render_script(make_ctx(tmp_path, template=site))
    assert "partiton" in str(err.value)
    assert str(site) in str(err.value)


def test_template_syntax_error_and_missing_template_name_the_file(tmp_path):
    site = tmp_path / "site-broken.sh.j2"
    site.write_text('{% extends "slurm.sh.j2" %}\n{% block footer %}\n{% if %}\n{% endblock %}\n')
    with pytest.raises(SpecError, match="site-broken.sh.j2"):
        render_script(make_ctx(tmp_path, template=site))
    with pytest.raises(SpecError, match="does not exist"):
        render_script(make_ctx(tmp_path, template=tmp_path / "nope.sh.j2"))
    own = tmp_path / "slurm.sh.j2"
    own.write_text('{% extends "slurm.sh.j2" %}\n')
    with pytest.raises(SpecError, match="package layer"):
        render_script(make_ctx(tmp_path, template=own))


def test_script_size_does_not_depend_on_the_number_of_runs(tmp_path):
    small = render_script(make_ctx(tmp_path, make_chunk(10)))
    big = render_script(make_ctx(tmp_path, make_chunk(10_000)))
    assert len(big) - len(small) == len("0-9999") - len("0-9")
    assert big.replace("--array=0-9999", "--array=0-9") == small
    assert "r0000000000" not in big


def test_template_sha256_covers_every_layer(tmp_path):
    default = template_sha256(None)
    assert default == template_sha256(None) and len(default) == 64
    site = tmp_path / "site-a.sh.j2"
    site.write_text('{% extends "slurm.sh.j2" %}\n')
    first = template_sha256(site)
    assert first != default
    site.write_text('{% extends "slurm.sh.j2" %}\n{# changed #}\n')
    assert template_sha256(site) != first
    assert template_sha256(MINICLUSTER) not in (default, first)


def test_task_without_a_valid_index_or_manifest_line_exits_97(tmp_path):
    ctx = make_ctx(tmp_path, make_chunk(2))
    write_manifest(ctx.exp_dir, ctx.chunk, {r.run_id: "true" for r in ctx.chunk.runs})
    script = write_script(ctx.exp_dir, 0, render_script(ctx))
    base = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
    for task_id, needle in [(None, "not an array task index"), ("1;id", "not an array task"),
                            ("2", "line 3"), ("-1", "not an array task")]:
        env = dict(base)
        if task_id is not None:
            env["SLURM_ARRAY_TASK_ID"] = task_id
        proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
        assert proc.returncode == 97, (task_id, proc.stderr)
        assert needle in proc.stderr
    # Leading zeros are read as decimal, not octal: "01" is task 1.
    env = dict(base, SLURM_ARRAY_TASK_ID="01")
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def _run_task(script, task_id="0", job="77"):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM", "SLURMEXP"))}
    env.update(SLURM_ARRAY_TASK_ID=task_id, SLURM_ARRAY_JOB_ID=job)
    return subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)


def test_manifest_holds_each_runs_files_and_the_task_writes_them(tmp_path):
    # Launch writes two files per chunk and no run folder; each task makes its run's folder,
    # command.sh (executable) and params.json from its entry, byte offsets and all (UTF-8 in
    # a command and in parameters takes more bytes than characters).
    ctx = make_ctx(tmp_path, make_chunk(2))
    exp, chunk = ctx.exp_dir, ctx.chunk
    r1, r2 = chunk.runs
    chunk.runs[0] = r1 = Run(r1.run_id, 0, {"b": 2, "a": "x y é"})
    commands = {r1.run_id: "echo 'naïve' > out.txt", r2.run_id: "echo 1\n"}
    manifest = write_manifest(exp, chunk, commands)
    assert manifest == exp / "manifests" / "chunk-000.txt"
    files = (exp / "manifests" / "chunk-000.files").read_bytes()
    entries = [line.split() for line in manifest.read_text().splitlines()]
    assert [e[0] for e in entries] == [r1.run_id, r2.run_id]
    at, nc, np_ = map(int, entries[0][1:])
    assert files[at:at + nc].decode() == "#!/bin/bash\necho 'naïve' > out.txt\n"
    assert json.loads(files[at + nc:at + nc + np_]) == {"a": "x y é", "b": 2}
    assert int(entries[1][1]) == at + nc + np_ and len(files) == sum(map(int, entries[1][1:]))
    assert not (exp / "runs").exists()
    script = write_script(exp, 0, render_script(ctx))
    for task in ("0", "1"):
        proc = _run_task(script, task)
        assert proc.returncode == 0, proc.stderr
    run1 = exp / "runs" / r1.run_id
    assert (run1 / "params.json").read_text() == '{\n  "a": "x y é",\n  "b": 2\n}\n'
    assert (run1 / "command.sh").read_text() == "#!/bin/bash\necho 'naïve' > out.txt\n"
    assert os.access(run1 / "command.sh", os.X_OK)
    assert (exp / "runs" / r2.run_id / "command.sh").read_text() == "#!/bin/bash\necho 1\n"
    assert sorted(p.name for p in run1.iterdir()) == ["attempts", "checkpoint", "command.sh", "params.json"]
    # A later start of the run puts back a command.sh edited by hand: what was launched runs.
    (run1 / "command.sh").write_text("#!/bin/bash\nexit 9\n")
    assert _run_task(script, "0", job="78").returncode == 0
    assert (run1 / "command.sh").read_text() == "#!/bin/bash\necho 'naïve' > out.txt\n"

    with pytest.raises(SpecError):
        write_manifest(exp, ArrayChunk(chunk=1, group=0, resources=CPU, runs=[Run("../escape", 0, {})],
                                       offset=0), {"../escape": "true"})
    with pytest.raises(SpecError, match="NUL"):
        write_manifest(exp, chunk, {r1.run_id: "a\x00b", r2.run_id: "true"})


def test_a_task_whose_files_end_early_exits_97_without_running(tmp_path):
    ctx = make_ctx(tmp_path, make_chunk(2))
    write_manifest(ctx.exp_dir, ctx.chunk, {r.run_id: "touch ran" for r in ctx.chunk.runs})
    script = write_script(ctx.exp_dir, 0, render_script(ctx))
    files = ctx.exp_dir / "manifests" / "chunk-000.files"
    files.write_bytes(files.read_bytes()[:-5])
    proc = _run_task(script, "1")
    assert proc.returncode == 97 and "ends before run" in proc.stderr, proc.stderr
    assert _run_task(script, "0").returncode == 0


def test_10000_runs_are_two_files_per_chunk(tmp_path):
    exp = tmp_path / "exp"
    runs = make_runs(10_000)
    commands = {r.run_id: f"python train.py --i {r.index}" for r in runs}
    for c in range(10):
        write_manifest(exp, ArrayChunk(chunk=c, group=0, resources=CPU,
                                       runs=runs[c * 1000:(c + 1) * 1000], offset=c * 1000), commands)
    assert len(os.listdir(exp / "manifests")) == 20 and not (exp / "runs").exists()
    last = (exp / "manifests" / "chunk-009.txt").read_text().splitlines()
    assert len(last) == 1000 and last[-1].split()[0] == runs[-1].run_id


def test_checkpoint_signal_is_recorded_forwarded_to_the_command_and_waited_for(tmp_path):
    """The [checkpoint] wrapper for real (bash, as under Slurm): SIGUSR1 to the script alone
    reaches the command, which takes a second to save and exits 0; the script waits for it,
    records the signal and exits with the command's own status. A second attempt of the run
    sees SLURMEXP_ATTEMPT=2 and the same SLURMEXP_CHECKPOINT_DIR."""
    import signal
    import time

    from slurmexp.sweep.spec import CheckpointSpec

    ctx = make_ctx(tmp_path, chunk=make_chunk(1), checkpoint=CheckpointSpec(signal="USR1", before="45s"))
    text = render_script(ctx)
    bash_syntax_ok(text)
    assert "#SBATCH --signal=B:USR1@45" in sbatch_lines(text)
    command = ('echo "$SLURMEXP_ATTEMPT" >> "$SLURMEXP_CHECKPOINT_DIR/starts"; '
               'trap \'sleep 1; echo saved > "$SLURMEXP_CHECKPOINT_DIR/state"; exit 0\' USR1; '
               'touch "$SLURMEXP_ATTEMPT_DIR/ready"; while :; do sleep 0.1; done')
    exp, chunk = ctx.exp_dir, ctx.chunk
    write_manifest(exp, chunk, {r.run_id: command for r in chunk.runs})
    script = write_script(exp, chunk.chunk, text)
    run_dir = exp / "runs" / chunk.runs[0].run_id
    for job in ("77", "78"):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM", "SLURMEXP"))}
        env.update(SLURM_ARRAY_TASK_ID="0", SLURM_ARRAY_JOB_ID=job)
        proc = subprocess.Popen(["bash", str(script)], env=env, cwd=tmp_path, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        attempt = run_dir / "attempts" / f"{job}_0"
        deadline = time.monotonic() + 30
        while not (attempt / "ready").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGUSR1)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, (out, err)
        assert (attempt / "exit_code").read_text().strip() == "0"
        assert (attempt / "signalled").read_text().split()[0] == "USR1"
        assert "received SIGUSR1" in out
        assert (run_dir / "checkpoint" / "state").read_text() == "saved\n"
    assert (run_dir / "checkpoint" / "starts").read_text().split() == ["1", "2"]
