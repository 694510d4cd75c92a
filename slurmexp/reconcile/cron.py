"""`slurmexp cron`: the crontab line that runs `slurmexp reconcile`, and installing it without
touching the user's other crontab lines.
"""
from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path

from slurmexp.errors import Problem, SlurmexpError

CRON_MARKER = "# slurmexp-reconcile (managed by `slurmexp cron --install`)"
def _schedule(every_minutes: int) -> str:
    n = int(every_minutes)
    if 1 <= n <= 59:
        return "* * * * *" if n == 1 else f"*/{n} * * * *"
    if n % 60 == 0 and 60 <= n <= 24 * 60:
        hours = n // 60
        return "0 * * * *" if hours == 1 else "0 0 * * *" if hours == 24 else f"0 */{hours} * * *"
    raise SlurmexpError(f"cron: cannot run every {every_minutes} minutes",
                        [Problem("", "--every", f"{every_minutes}",
                                 fix="use 1-59 minutes, or a whole number of hours (60, 120 ...)")])


def _cron_escape(text: str) -> str:
    # cron turns an unescaped % into a newline.
    return text.replace("%", "\\%")


def _pass_command(ledger_path: str | os.PathLike,
                  slurmexp_executable: str | os.PathLike | Sequence[str], *,
                  path_env: str | None = None) -> tuple[Path, str]:
    """(absolute ledger path, the `env ... slurmexp --ledger L reconcile --quiet` command)."""
    ledger_path = Path(ledger_path).expanduser().absolute()
    # The executable, or an argv such as [python, "-m", "slurmexp"] when no console script exists.
    argv = ([slurmexp_executable] if isinstance(slurmexp_executable, (str, os.PathLike))
            else list(slurmexp_executable))
    exe = Path(argv[0]).expanduser()
    exe = exe if exe.is_absolute() else exe.absolute()
    words = " ".join(shlex.quote(str(w)) for w in [exe, *argv[1:]])
    home = os.environ.get("SLURMEXP_HOME") or str(ledger_path.parent)
    env = [f"PATH={shlex.quote(path_env or os.environ.get('PATH') or '/usr/bin:/bin')}",
           f"SLURMEXP_HOME={shlex.quote(home)}"]
    if os.environ.get("SLURM_CONF"):
        env.append(f"SLURM_CONF={shlex.quote(os.environ['SLURM_CONF'])}")
    if len(argv) > 1 and os.environ.get("PYTHONPATH"):
        # `python -m slurmexp` (no console script): the slurmexp it imports is this shell's.
        env.append(f"PYTHONPATH={shlex.quote(os.environ['PYTHONPATH'])}")
    return ledger_path, (f"{' '.join(env)} {words} --ledger {shlex.quote(str(ledger_path))} "
                         f"reconcile --quiet")


def cron_line(every_minutes: int, ledger_path: str | os.PathLike,
              slurmexp_executable: str | os.PathLike | Sequence[str], *, log_path: str | os.PathLike | None = None,
              path_env: str | None = None) -> str:
    """A crontab line that runs `slurmexp reconcile --quiet` every N minutes.

    It carries the PATH of this shell (cron's own PATH rarely has Slurm's commands), the ledger
    path, and appends its output to `<ledger dir>/reconcile.log`. No flock wrapper: the pass
    takes its own lock, and a pass that finds it held exits 0.
    """
    ledger_path, command = _pass_command(ledger_path, slurmexp_executable, path_env=path_env)
    log = Path(log_path).expanduser().absolute() if log_path else ledger_path.parent / "reconcile.log"
    command = f"{command} >> {shlex.quote(str(log))} 2>&1"
    return f"{_schedule(every_minutes)} {_cron_escape(command)} {CRON_MARKER}"


def _is_ours(line: str) -> bool:
    if CRON_MARKER in line or "# slurmexp-reconcile" in line:
        return True
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#") and "slurmexp" in stripped \
        and " reconcile" in stripped


def install_cron(line: str, *, crontab: str = "crontab") -> str:
    """Put `line` into the user's crontab, replacing an older slurmexp reconcile line.

    Returns the new crontab text. A user without a crontab yet is fine.
    """
    try:
        proc = subprocess.run([crontab, "-l"], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise SlurmexpError("cron: the crontab command is not installed here", [Problem(
            "", "crontab", "crontab not found on PATH",
            fix=f"add this line with your site's scheduler instead:\n      {line}")]) from None
    if proc.returncode == 0:
        current = proc.stdout
    elif "no crontab" in (proc.stderr or "").lower():
        current = ""
    else:
        raise SlurmexpError(f"cron: `crontab -l` failed: {(proc.stderr or '').strip()}")
    kept = [ln for ln in current.splitlines() if not _is_ours(ln)]
    while kept and not kept[-1].strip():
        kept.pop()
    text = "\n".join([*kept, line]) + "\n"
    proc = subprocess.run([crontab, "-"], input=text, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise SlurmexpError(f"cron: `crontab -` refused the new table: "
                            f"{(proc.stderr or '').strip()}")
    return text


def remove_cron(*, crontab: str = "crontab") -> bool:
    """Take slurmexp's reconcile line out of the user's crontab; the other lines stay.

    Returns whether there was one."""
    try:
        proc = subprocess.run([crontab, "-l"], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        return False
    if proc.returncode != 0:
        return False
    lines = proc.stdout.splitlines()
    kept = [ln for ln in lines if not _is_ours(ln)]
    if len(kept) == len(lines):
        return False
    text = "\n".join(kept) + "\n" if kept else ""
    proc = subprocess.run([crontab, "-"], input=text, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise SlurmexpError(f"cron: `crontab -` refused the new table: {(proc.stderr or '').strip()}")
    return True
