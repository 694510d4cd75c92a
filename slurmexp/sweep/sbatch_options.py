"""`[resources] sbatch = ["--exclusive", "--mail-type=END"]`: raw sbatch options, one per item,
put on `#SBATCH` lines of every chunk's script as written (and so checked by `--test-only`).

Each item is sbatch's long form, `--name` or `--name=value`, with nothing sbatch would split or
strip. An option slurmexp writes itself, or that a `[resources]` key stands for, is refused with
what to write instead: two values for one option would leave the job's real request to sbatch's
order of reading, and the options slurmexp owns (job name, comment, array, logs, working folder)
are how reconcile finds and reads the jobs. An abbreviation of such an option (`--out=x`, which
sbatch reads as `--output`) is refused the same way. `--signal` is slurmexp's only with
`[checkpoint]`; `sweep.checks` refuses it there.
"""
from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Strict

from slurmexp.sweep.strict_toml import FixError

_REMOVE = "remove it"
# option -> (who writes it, what to do instead)
OWNED: dict[str, tuple[str, str]] = {
    "array": ("slurmexp writes --array (one array per chunk of runs)",
              "remove it; [resources] array_parallelism sets the %N throttle"),
    "job-name": ("slurmexp names every job sx.<experiment>.<chunk>, which reconcile searches for", _REMOVE),
    "comment": ("slurmexp writes --comment=slurmexp:<experiment>, which reconcile searches for", _REMOVE),
    "output": ("slurmexp writes each task's output to the experiment's logs/ folder",
               "remove it; `slurmexp logs RUN` shows a run's output"),
    "error": ("slurmexp writes each task's errors to the experiment's logs/ folder",
              "remove it; `slurmexp logs RUN --stderr` shows them"),
    "chdir": ("slurmexp runs the tasks in the sweep's workdir", 'set workdir = "..." in the sweep'),
    "parsable": ("slurmexp submits with --parsable itself to read the job id", _REMOVE),
    "test-only": ("slurmexp runs sbatch --test-only itself when it validates", "remove it; use `slurmexp validate`"),
    "wrap": ("the job's script is slurmexp's task wrapper", "put the command in the sweep's command"),
    "wait": ("slurmexp submits and returns; reconcile follows the jobs", _REMOVE),
    "clusters": ("the cluster is site.toml's `cluster`", "set cluster in site.toml"),
    "partition": ("[resources] partition is this option", 'partition = "..." in [resources]'),
    "time": ("[resources] time is this option", 'time = "HH:MM:SS" in [resources]'),
    "nodes": ("[resources] nodes is this option", "nodes = N in [resources]"),
    "cpus-per-task": ("[resources] cpus is this option", "cpus = N in [resources]"),
    "mem": ("[resources] mem is this option", 'mem = "4G" in [resources] (per task)'),
    "mem-per-cpu": ("slurmexp writes --mem from [resources] mem", 'mem = "4G" in [resources] (per task)'),
    "mem-per-gpu": ("slurmexp writes --mem from [resources] mem", 'mem = "4G" in [resources] (per task)'),
    "gres": ("[resources] gpus and gpu_type are this option", 'gpus = 1 and gpu_type = "..." in [resources]'),
    "gpus": ("slurmexp writes --gres from [resources] gpus and gpu_type", "gpus = N in [resources]"),
    "gpus-per-node": ("slurmexp writes --gres from [resources] gpus and gpu_type", "gpus = N in [resources]"),
    "gpus-per-task": ("slurmexp writes --gres from [resources] gpus and gpu_type", "gpus = N in [resources]"),
    "qos": ("[resources] qos is this option", 'qos = "..." in [resources]'),
    "account": ("[resources] account is this option", 'account = "..." in [resources]'),
    "reservation": ("[resources] reservation is this option", 'reservation = "..." in [resources]'),
    "constraint": ("[resources] constraint is this option", 'constraint = "..." in [resources]'),
}
SIGNAL = ("[checkpoint] writes --signal", "set [checkpoint] signal and before instead")

_SHAPE = re.compile(r"--([a-z][a-z0-9-]*)(?:=(.*))?", re.DOTALL)
_UNSAFE = re.compile(r"[\s\"'\\#]|[\x00-\x1f\x7f]")


def option_name(item: str) -> str:
    """`--mail-type=END` -> `mail-type`."""
    return item[2:].split("=", 1)[0]


def owner(name: str) -> tuple[str, tuple[str, str]] | None:
    """The owned option `name` is, or abbreviates (sbatch takes unique prefixes), or None."""
    if name in OWNED:
        return name, OWNED[name]
    longer = [o for o in OWNED if o.startswith(name)]
    return (longer[0], OWNED[longer[0]]) if longer else None


def _check(item: str) -> str:
    stripped = item.strip()
    if stripped.startswith("--") and " " in stripped:
        head, _, rest = stripped.partition(" ")
        if "=" not in head and rest.strip() and not _UNSAFE.search(head + rest.strip()):
            raise FixError(f"{item!r}: sbatch splits an #SBATCH line at spaces",
                           fix=f'write "{head}={rest.strip()}"')
    shape = _SHAPE.fullmatch(item)
    if shape is None:
        if re.match(r"-[A-Za-z]", item):
            raise FixError(f"{item!r} is a short option",
                           fix="write sbatch's long form, e.g. \"--exclusive\" or \"--mail-type=END\"")
        raise FixError(f"{item!r} is not an sbatch option as `--name` or `--name=value`",
                       fix='one option per item, e.g. ["--exclusive", "--mail-type=END"]')
    value = shape.group(2)
    if value is not None and (not value or _UNSAFE.search(value)):
        raise FixError(f"{item!r}: the value is empty or has whitespace, quotes, a backslash or '#', "
                       f"which sbatch would split, strip or cut on an #SBATCH line",
                       fix="a value without them (one option per item)")
    found = owner(shape.group(1))
    if found is not None:
        name, (why, fix) = found
        what = f"--{name}" if name == shape.group(1) else \
            f"--{name} (--{shape.group(1)} abbreviates it, and sbatch takes abbreviations)"
        raise FixError(f"{item!r} sets {what}, which slurmexp owns: {why}", fix=fix)
    return item


SbatchOption = Annotated[str, Strict(), AfterValidator(_check)]
