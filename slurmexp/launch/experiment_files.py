"""Write the files an experiment's scripts read: manifests and chunk scripts.

The script is the same text for every task of a chunk and does not grow with the sweep. A task
finds its entry on line `SLURM_ARRAY_TASK_ID + 1` of the chunk's manifest: its run id and where
its `command.sh` and `params.json` texts lie in the chunk's `.files` (offset and lengths). The
task's script creates the run's folder and writes those two files from there before it runs the
command, so a launch writes two files per chunk of up to MaxArraySize runs, not a folder and two
files per run: on this machine's disk those 24,000 creations were half of an 8,000-run launch,
and on a network file system (each create a round trip to the metadata server) far more. After
its first task a run can be re-run by hand with `bash runs/<id>/command.sh`. Rendering the
script itself is `render`'s (pure); this module only writes.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from slurmexp import layout
from slurmexp.atomic import replace_file as _atomic_write
from slurmexp.errors import Problem, SpecError, StorageFull
from slurmexp.sweep.plan import ArrayChunk, Run


def _check_run_id(run_id: str) -> None:
    if not layout.is_safe_name(run_id):
        raise SpecError(f"run id {run_id!r} cannot be a folder name",
                        [Problem(file="", key="run_id", check="render",
                                 message=f"run ids must match {layout.SAFE_NAME}")])


def make_output_dir(output_dir: str | os.PathLike) -> Path:
    """Create the sweep's output_dir if it is missing, with a `.gitignore` of `*` in it: inside
    a git repository (the default, `slurmexp-runs` beside the sweep) the run folders would
    otherwise flood the user's `git status`. A folder that already exists is left as it is
    (the user's own, or one created before, whose .gitignore the user may have removed)."""
    path = Path(output_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir()
    except FileExistsError:
        return path
    _write_new(os.fspath(path / layout.OUTPUT_GITIGNORE), layout.OUTPUT_GITIGNORE_TEXT, 0o666)
    return path


def _check_command(run_id: str, command: str) -> None:
    if "\x00" in command:
        raise SpecError(f"run {run_id}: the command contains a NUL byte")


def run_texts(run: Run, command: str) -> tuple[bytes, bytes]:
    """(command.sh, params.json) of a run as bytes: `command` is the finished shell command,
    its values already quoted by the planner; it is written as it is."""
    _check_run_id(run.run_id)
    _check_command(run.run_id, command)
    script = "#!/bin/bash\n" + command.rstrip("\n") + "\n"
    return script.encode("utf-8", "surrogateescape"), params_file_text(run.params).encode(
        "utf-8", "surrogateescape")


_CONTAINERS = (dict, list, tuple)


def params_file_text(params: dict) -> str:
    """params.json as a person reads it: sorted keys, two spaces of indent, UTF-8 as it is.

    json.dumps with `indent` runs in pure Python (its C encoder takes no indent): a third of an
    8,000-run launch's JSON time. For the usual parameters (no list or table among the values,
    so every item is at the first level) the same text comes from the C encoder, the separator
    between items carrying the newline and the indent.
    """
    if not params or any(isinstance(v, _CONTAINERS) for v in params.values()):
        return json.dumps(params, sort_keys=True, indent=2, ensure_ascii=False, default=str) + "\n"
    flat = json.dumps(params, sort_keys=True, separators=(",\n  ", ": "), ensure_ascii=False,
                      default=str)
    return "{\n  " + flat[1:-1] + "\n}\n"


def _write_new(path: str, text: str, mode: int) -> None:
    data = text.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)   # umask applies
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def write_manifest(exp_dir: Path, chunk: ArrayChunk, commands: Mapping[str, str]) -> Path:
    """`<exp_dir>/manifests/chunk-NNN.txt` and `chunk-NNN.files` for one chunk.

    Line i+1 of the manifest is "<run id> <offset> <command bytes> <params bytes>" of array
    task i: its command.sh text starts at byte `offset` of the `.files` and its params.json
    text follows it. `commands` maps run id -> the run's finished command. The `.files` is
    written (atomically) before the manifest that points into it, so a task never finds an
    entry whose bytes are not there yet.
    """
    paths = layout.ExperimentPaths(exp_dir)
    lines: list[str] = []
    blob = bytearray()
    for run in chunk.runs:
        script, params = run_texts(run, commands[run.run_id])
        lines.append(f"{run.run_id} {len(blob)} {len(script)} {len(params)}\n")
        blob += script
        blob += params
    path = paths.manifest(chunk.chunk)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(paths.manifest_files(chunk.chunk), bytes(blob))
    _atomic_write(path, "".join(lines))
    return path


def write_script(exp_dir: Path, chunk_no: int, text: str) -> Path:
    """`<exp_dir>/scripts/chunk-NNN.sbatch`; also creates logs/, which sbatch will not."""
    paths = layout.ExperimentPaths(exp_dir)
    path = paths.script(chunk_no)
    path.parent.mkdir(parents=True, exist_ok=True)
    paths.logs_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, text, 0o777)
    return path


def files_full_error(exc: BaseException, sweep_path: str | Path, ledger_path: str | Path) -> StorageFull:
    """Run files (or the ledger's first transaction) that could not be written for want of
    space, before anything was recorded or submitted: the file and the fix, exit 7."""
    where = getattr(exc, "filename", None) or ledger_path
    return StorageFull(f"{sweep_path}: cannot write {where}: {getattr(exc, 'strerror', None) or exc}; "
                       "nothing was recorded or submitted", [Problem(
                           str(sweep_path), "output_dir", f"no space left for {where}",
                           "free space (or raise the quota), then launch again: the files "
                           "already written are reused")])
