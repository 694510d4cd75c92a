"""`slurmexp cron --scrontab`: the reconcile pass as an entry of Slurm's own crontab.

Many clusters have no cron on their login nodes (this machine has no crontab either). Slurm's
`scrontab` (with `ScronParameters=enable` in slurm.conf) runs each entry as a batch job on its
schedule. Our entry is a block in the user's scrontab: `#SCRON` lines (sbatch options for the one
entry that follows) and the same pass command as the crontab line, with the marker at its end.
`scrontab -` replaces the whole table, so installing reads it first (`scrontab -l`), drops an
older block of ours and keeps every other entry. The job's output goes to
`<ledger dir>/reconcile.log` through `--output` and `--open-mode=append`, not a shell redirect.

Every call goes through `run_slurm()`. A Slurm without the scrontab command (Debian 12's 22.05
packages ship none) and a cluster where it is disabled are refused with what to do instead
(exit 1); a controller that does not answer is SlurmUnavailable (exit 3), as for any command.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from slurmexp.errors import Problem, SlurmCommandError, SlurmexpError, SlurmUnavailable
from slurmexp.reconcile.cron import _pass_command, _schedule

SCRON_MARKER = "# slurmexp-reconcile (managed by `slurmexp cron --scrontab`)"
SCRON_JOB_NAME = "slurmexp-reconcile"
# The pass's own time limit: far above a pass's seconds, short enough that a hung one ends.
SCRON_TIME = "00:10:00"
INSTEAD = ("run `slurmexp reconcile --loop 300` in tmux or under a supervisor, or "
           "`slurmexp cron --install` where the login node has cron")


def scron_entry(every_minutes: int, ledger_path: str | os.PathLike,
                slurmexp_executable: str | os.PathLike | Sequence[str], *,
                log_path: str | os.PathLike | None = None, path_env: str | None = None,
                options: Sequence[str] = ()) -> str:
    """Our scrontab block: `#SCRON` option lines, then the entry (the marker at its end).

    `options`: more sbatch options for the pass's job (a partition, an account, a QOS).
    """
    ledger_path, command = _pass_command(ledger_path, slurmexp_executable, path_env=path_env)
    if "$" in command:
        # scrontab expands $NAME in an entry's command itself, before any shell sees it.
        raise SlurmexpError("cron --scrontab: the pass's command has a `$`, which scrontab would expand",
                            [Problem("", "PATH / --ledger", command,
                                     fix="use paths without `$`, or " + INSTEAD)])
    log = Path(log_path).expanduser().absolute() if log_path else ledger_path.parent / "reconcile.log"
    opts = [f"--job-name={SCRON_JOB_NAME}", f"--time={SCRON_TIME}", "--ntasks=1",
            f"--output={log}", "--open-mode=append", *options]
    lines = [f"#SCRON {o}" for o in opts]
    return "\n".join([*lines, f"{_schedule(every_minutes)} {command} {SCRON_MARKER}"]) + "\n"


def _scrontab(args: list[str], transport: Any = None, stdin: str | None = None):
    from slurmexp.backends.slurm.backend import run_slurm

    try:
        proc = run_slurm(["scrontab", *args], check=False, transport=transport, stdin=stdin, timeout=60)
    except SlurmUnavailable as exc:
        if "command not found" not in exc.message:
            raise
        raise SlurmexpError("cron --scrontab: this Slurm has no scrontab command", [Problem(
            "", "scrontab", "not found on PATH (Debian 12's Slurm 22.05 packages, for one, ship none)",
            fix=INSTEAD)]) from None
    message = ((proc.stderr or "") + (proc.stdout or "")).strip()
    if proc.returncode != 0 and "disabled" in message.lower():
        raise SlurmexpError("cron --scrontab: scrontab is disabled on this cluster", [Problem(
            "slurm.conf", "ScronParameters", message,
            fix=f"ask the cluster's admins for ScronParameters=enable, or {INSTEAD}")])
    return proc, message


def read_scrontab(transport: Any = None) -> str:
    """The user's scrontab, "" when there is none yet."""
    proc, message = _scrontab(["-l"], transport)
    if proc.returncode == 0:
        return proc.stdout
    if "no crontab" in message.lower():
        return ""
    raise SlurmCommandError(f"scrontab -l failed (exit {proc.returncode}): {message or 'no message'}")


def without_ours(text: str) -> list[str]:
    """The table's lines without our block (our entry and the #SCRON lines right above it)."""
    out: list[str] = []
    for line in text.splitlines():
        if SCRON_MARKER in line:
            while out and out[-1].lstrip().startswith("#SCRON"):
                out.pop()
            continue
        out.append(line)
    while out and not out[-1].strip():
        out.pop()
    return out


def _write(lines: list[str], transport: Any) -> None:
    if lines:
        proc, message = _scrontab(["-"], transport, stdin="\n".join(lines) + "\n")
    else:
        proc, message = _scrontab(["-r"], transport)
        if proc.returncode != 0 and "no crontab" in message.lower():
            return
    if proc.returncode != 0:
        raise SlurmCommandError(f"scrontab refused the new table (exit {proc.returncode}): "
                                f"{message or 'no message'}")


def install_scron(entry: str, transport: Any = None) -> str:
    """Put our block into the user's scrontab (replacing an older one); returns the new table."""
    lines = [*without_ours(read_scrontab(transport)), *entry.rstrip("\n").splitlines()]
    _write(lines, transport)
    return "\n".join(lines) + "\n"


def remove_scron(transport: Any = None) -> bool:
    """Take our block out of the user's scrontab; returns whether there was one."""
    current = read_scrontab(transport)
    if SCRON_MARKER not in current:
        return False
    _write(without_ours(current), transport)
    return True

