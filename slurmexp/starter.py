"""`slurmexp init`: a commented starter sweep.toml that validates against any site.toml.

The starter runs `echo` (no script to be missing), asks for one CPU, 500M and ten minutes, and
shows the other sections commented out; `tests/test_reference.py` checks that it passes
`slurmexp validate --offline` against the repository's site.toml. An existing file is kept
unless `force`.
"""
from __future__ import annotations

import re
from pathlib import Path

from slurmexp.errors import Problem, SlurmexpError

STARTER = '''\
# A slurmexp sweep: one command run over parameter values. Every key, with its type, default
# and an example, is in slurmexp's docs/sweep-reference.md (`slurmexp schema sweep` prints the
# JSON Schema, for editors). Check it, see where its runs go, and submit it:
#   slurmexp validate --offline {file}     then without --offline: against the cluster
#   slurmexp explain {file}
#   slurmexp launch {file}

# The name begins the experiment id, its folder and its job names.
name = "{name}"

# One run's command. {{placeholders}} are the parameters below, filled in and shell-quoted by
# slurmexp (do not quote them). Put your program here, e.g.
#   command = "python3 train.py --lr {{lr}} --seed {{seed}}"
# or, instead of a command, a Python function called with the parameters:
#   function = "train:main"
command = "echo training with lr={{lr}} seed={{seed}}"

# The folder the command runs in, and where the experiment folders (runs, logs, scripts) go;
# both relative to this file.
workdir = "."
output_dir = "slurmexp-runs"

# The grid: every combination of these values (here 2 x 3 = 6 runs).
[params]
lr = [0.1, 0.01]
seed = [0, 1, 2]

# Lists that go together element by element, crossed with the grid:
# [[zip]]
# model = ["resnet18", "vit"]
# batch = [256, 64]

# Runs besides the grid, one table each:
# [[runs]]
# lr = 0.5
# seed = 9

# What each run asks of Slurm; a key left out comes from site.toml's [defaults].
[resources]
cpus = 1
mem = "500M"
time = "00:10:00"             # a finite Slurm time: MM, HH:MM:SS, D-HH:MM:SS, ...
# gpus = 1
# gpu_type = "a100"
# partition = "gpu"           # instead of site.toml's [routing]
# array_parallelism = 4       # at most 4 runs at once
# sbatch = ["--mail-type=END"]

# Other resources for some runs (every key of where must match; later tables win key by key):
# [[override]]
# where = {{ lr = 0.1 }}
# mem = "1G"
# time = "00:20:00"

# The environment the command starts in:
# [env]
# setup = ["source .venv/bin/activate"]
# modules = ["cuda/12.1"]
# vars = {{ OMP_NUM_THREADS = "1" }}

# What reconcile does with runs the infrastructure broke (node failure, preemption).
[retry]
max_attempts = 3
# escalate = true             # more time or memory after TIMEOUT or OUT_OF_MEMORY

# A signal before the time limit, and the run continued as its next attempt:
# [checkpoint]
# signal = "USR1"
# before = "90s"
# requeue = true

# What `slurmexp status` shows and filters on:
# [meta]
# tags = ["baseline"]
# description = "what this sweep is for"
'''


def default_name(path: Path) -> str:
    """The sweep name for a file in `path`'s folder: the folder's name, made a valid name."""
    name = re.sub(r"^[^A-Za-z0-9]+", "", re.sub(r"[^A-Za-z0-9._-]+", "-", path.resolve().parent.name))
    return name or "my-sweep"


def starter_text(name: str, file: str = "sweep.toml") -> str:
    return STARTER.format(name=name, file=file)


def write_starter(path: str | Path, name: str | None = None, force: bool = False) -> str:
    """Write the starter to `path`; what to say. Refuses an existing file unless `force`."""
    import shlex

    from slurmexp.sweep.spec import check_name

    target = Path(path).expanduser()
    if name is not None:
        problem = check_name(name)
        if problem:
            raise SlurmexpError(f"--name {name!r} cannot be a sweep name",
                                [Problem("", "--name", problem)])
    if target.is_dir():
        inside = shlex.quote(str(target / "sweep.toml"))
        raise SlurmexpError(f"{target} is a folder", [Problem(
            str(target), "", "init writes a file", f"give a file name: slurmexp init {inside}")])
    if target.exists() and not force:
        raise SlurmexpError(f"{target} exists; nothing written", [Problem(
            str(target), "", "init does not replace an existing file",
            "add --force to replace it, or give another path: slurmexp init other.toml")])
    text = starter_text(name or default_name(target), shlex.quote(str(path)))
    try:
        target.write_text(text)
    except OSError as exc:
        raise SlurmexpError(f"cannot write {target}", [Problem(
            str(target), "", f"{exc.strerror or exc}",
            "create the folder first, or give a path in a folder you can write to")]) from None
    return f"wrote {target}; next: slurmexp validate --offline {shlex.quote(str(path))}"
