"""The sweep against the local file system: workdir, the script a command runs, files sourced in
[env] setup, a `function`'s module. Part of the static checks of `launch.validate`.
"""
from __future__ import annotations

import json
import shlex
import string
from pathlib import Path
from typing import TYPE_CHECKING

from slurmexp.errors import Problem

if TYPE_CHECKING:
    from slurmexp.sweep.spec import Sweep

# Interpreters whose first non-option argument is the script the command runs.
INTERPRETERS = {"python", "python3", "bash", "sh", "zsh", "Rscript", "julia", "perl", "ruby", "node",
                "torchrun", "accelerate", "srun", "mpirun", "apptainer", "singularity", "uv", "time"}

def _command_words(command: str) -> list[str]:
    # Placeholders stand for one quoted word each; replace them before tokenising.
    parts = []
    for literal, name, _spec, _conv in string.Formatter().parse(command):
        parts.append(literal)
        if name is not None:
            parts.append("PLACEHOLDER")
    try:
        return shlex.split("".join(parts), comments=True)
    except ValueError:
        return []


def script_named(command: str) -> str | None:
    """The script file a command runs (`python train.py`, `./run.sh`), or None."""
    words = _command_words(command)
    while words and "=" in words[0] and not words[0].startswith(("/", ".")):
        words = words[1:]  # leading VAR=value assignments
    if not words:
        return None
    first = words[0]
    if Path(first).name in INTERPRETERS or Path(first).name.startswith("python"):
        for word in words[1:]:
            if word in ("-m", "-c", "exec", "run"):
                return None  # a module or inline code: nothing to check on disk
            if word.startswith("-") or word in INTERPRETERS:
                continue
            if word == "PLACEHOLDER":
                return None
            return word if ("/" in word or "." in word) else None
        return None
    if "/" in first and "PLACEHOLDER" not in first:
        return first
    return None


def file_problems(sweep: Sweep) -> list[Problem]:
    file = str(sweep.path)
    out: list[Problem] = []
    workdir = Path(sweep.workdir)
    if workdir.exists() and not workdir.is_dir():
        out.append(Problem(file, "workdir", f"workdir {workdir} is a file, not a folder",
                           f"set workdir = {json.dumps(str(workdir.parent))} at the top of the sweep file "
                           "(the folder the command runs in)", "file"))
        return out
    if not workdir.is_dir():
        out.append(Problem(file, "workdir", f"workdir {workdir} does not exist",
                           f"create it: mkdir -p {shlex.quote(str(workdir))} (or fix the path, relative "
                           "to the sweep file)", "file"))
        return out
    script = script_named(sweep.command) if sweep.command else None
    if sweep.function:
        out += function_problems(file, sweep.function, workdir)
    if script and "$" not in script:
        path = (workdir / Path(script).expanduser())
        if not path.exists():
            out.append(Problem(file, "command", f"the command runs {script}, which does not exist in {workdir}",
                               "fix the path (relative to workdir) or create the script", "file"))
    for i, line in enumerate(sweep.env.setup):
        words = _command_words(line)
        if len(words) >= 2 and words[0] in ("source", ".") and "$" not in words[1]:
            path = workdir / Path(words[1]).expanduser()
            if not path.exists():
                out.append(Problem(file, f"env.setup[{i}]", f"{words[1]} does not exist (looked in {workdir})",
                                   "fix the path (relative to workdir) or create the file", "file"))
    return out


def function_problems(file: str, ref: str, workdir: Path) -> list[Problem]:
    """`function = "module:callable"`: the module must be findable from workdir (found, not
    imported: importing a training script here could start the training)."""
    import importlib.util
    import sys

    top = ref.partition(":")[0].split(".")[0]
    sys.path.insert(0, str(workdir))
    try:
        found = importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        found = False
    finally:
        sys.path.remove(str(workdir))
    if found:
        return []
    return [Problem(file, "function", f"module {top!r} of {ref!r} is not in {workdir} nor importable here",
                    f"create {top}.py in workdir, fix the name, or install the package", "file")]
