"""Write the files an experiment's scripts read: run folders, manifests and chunk scripts.

The script is the same text for every task of a chunk and does not grow with the sweep: a task
finds its run id on line `SLURM_ARRAY_TASK_ID + 1` of the chunk's manifest and runs that run's
`command.sh`. So submitting 10,000 runs costs one small script, one manifest and one folder per
run, and a run can be re-run by hand with `bash runs/<id>/command.sh`. Rendering the script
itself is `render`'s (pure); this module only writes.
"""
from __future__ import annotations

import json
import os
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


def write_run_files(exp_dir: Path, runs_with_commands: list[tuple[Run, str]]) -> None:
    """Create runs/<run_id>/ with params.json and command.sh for each run.

    `command` is the finished shell command, its values already quoted by the planner; it is
    written as it is. A new run folder gets its files written directly (nobody can be reading
    them yet), which keeps 10,000 runs to about a second; in an existing folder, files that
    already hold the same text are left alone and changed ones are replaced atomically, so
    launching again neither rewrites everything nor changes a running task's command under it.
    """
    runs_dir = os.path.join(os.fspath(exp_dir), layout.RUNS_DIR)
    os.makedirs(runs_dir, exist_ok=True)
    for run, command in runs_with_commands:
        _check_run_id(run.run_id)
        if "\x00" in command:
            raise SpecError(f"run {run.run_id}: the command contains a NUL byte")
        run_dir = os.path.join(runs_dir, run.run_id)
        try:
            os.mkdir(run_dir)
            fresh = True
        except FileExistsError:
            fresh = False
        params = json.dumps(run.params, sort_keys=True, indent=2, ensure_ascii=False,
                            default=str) + "\n"
        script = "#!/bin/bash\n" + command.rstrip("\n") + "\n"
        for name, text, mode in ((layout.PARAMS_FILE, params, 0o666),
                                 (layout.COMMAND_FILE, script, 0o777)):
            path = os.path.join(run_dir, name)
            if fresh:
                _write_new(path, text, mode)
                continue
            try:
                with open(path, encoding="utf-8") as fh:
                    if fh.read() == text:
                        continue
            except FileNotFoundError:
                pass
            _atomic_write(Path(path), text, mode)


def _write_new(path: str, text: str, mode: int) -> None:
    data = text.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)   # umask applies
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def write_manifest(exp_dir: Path, chunk: ArrayChunk) -> Path:
    """`<exp_dir>/manifests/chunk-NNN.txt`: line i+1 is the run id of array task i."""
    for run in chunk.runs:
        _check_run_id(run.run_id)
    path = layout.ExperimentPaths(exp_dir).manifest(chunk.chunk)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, "".join(run.run_id + "\n" for run in chunk.runs))
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
