"""What a person (or a monitor) does around the reconcile pass: cancel, cron, health.

`cancel_experiment` takes the pass's lock, so a pass never resubmits a run being cancelled.
`cron_line`/`install_cron` schedule `slurmexp reconcile`; `health` reads the heartbeat each
pass writes and says whether the cron job is alive (for monitoring, exit 1 when not).
"""
from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from slurmexp import tags
from slurmexp.errors import Problem, SlurmexpError
from slurmexp.ledger.store import TERMINAL_STATES, Ledger
from slurmexp.reconcile.context import pass_lock, require_lock
from slurmexp.reconcile.one_pass import HEARTBEAT_KIND
from slurmexp.timeutil import parse_ts

CRON_MARKER = "# slurmexp-reconcile (managed by `slurmexp cron --install`)"


# ------------------------------------------------------------------------------------------
# Cancel


def cancel_experiment(ledger: Ledger, backend: Any, exp_id: str,
                      reason: str = "cancelled by user", *, lock_wait_s: float = 120) -> int:
    """Cancel every queued or running job of an experiment with one scancel, and mark its
    unfinished runs and attempts CANCELLED with `reason`. Returns the number of runs cancelled.

    Jobs are found in the ledger and by the experiment's tag in the queue (a launch that died
    before recording its job). For a local-backend experiment only the ledger is marked.
    Raises SlurmUnavailable (nothing marked) when scancel cannot reach the controller.
    """
    exp = ledger.get_experiment(exp_id, required=True)
    with pass_lock(ledger, wait_s=lock_wait_s) as got:
        require_lock(got, ledger, "cancel")
        active = ledger.attempts(exp_id, active_only=True)
        if exp["backend"] == "slurm":
            if backend is None:
                from slurmexp.backends.slurm.backend import SlurmBackend

                backend = SlurmBackend()
            ids = {str(a["job_id"]) for a in active if a["job_id"]}
            with contextlib.suppress(SlurmexpError):
                for q in backend.squeue_rows(name_prefix=tags.name_prefix(exp_id)):
                    ids.add(str(q.array_job_id or q.job_id).split("_")[0])
            if ids:
                backend.cancel(sorted(ids, key=lambda j: (len(j), j)))
        moved: set[str] = set()
        with ledger.transaction():
            for s in ledger.submissions(exp_id, state="INTENT"):
                ledger.record_submit_failed(s["sub_id"], f"{reason} before its job was recorded")
            for a in active:
                ledger.update_attempt(a["attempt_id"], reason=reason, state="CANCELLED",
                                      failure_class="user")
                moved.add(a["run_id"])
            waiting = [r["run_id"] for r in ledger.runs(exp_id)
                       if r["state"] not in TERMINAL_STATES]
            if waiting:
                ledger.set_run_state(exp_id, waiting, "CANCELLED", reason)
                moved.update(waiting)
            ledger.set_experiment_state(exp_id, "CANCELLED", reason)
        return len(moved)


# ------------------------------------------------------------------------------------------
# Cron and health


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


def cron_line(every_minutes: int, ledger_path: str | os.PathLike,
              slurmexp_executable: str | os.PathLike | Sequence[str], *, log_path: str | os.PathLike | None = None,
              path_env: str | None = None) -> str:
    """A crontab line that runs `slurmexp reconcile --quiet` every N minutes.

    It carries the PATH of this shell (cron's own PATH rarely has Slurm's commands), the ledger
    path, and appends its output to `<ledger dir>/reconcile.log`. No flock wrapper: the pass
    takes its own lock, and a pass that finds it held exits 0.
    """
    ledger_path = Path(ledger_path).expanduser().absolute()
    # The executable, or an argv such as [python, "-m", "slurmexp"] when no console script exists.
    argv = ([slurmexp_executable] if isinstance(slurmexp_executable, (str, os.PathLike))
            else list(slurmexp_executable))
    exe = Path(argv[0]).expanduser()
    exe = exe if exe.is_absolute() else exe.absolute()
    words = " ".join(shlex.quote(str(w)) for w in [exe, *argv[1:]])
    log = Path(log_path).expanduser().absolute() if log_path else ledger_path.parent / "reconcile.log"
    home = os.environ.get("SLURMEXP_HOME") or str(ledger_path.parent)
    env = [f"PATH={shlex.quote(path_env or os.environ.get('PATH') or '/usr/bin:/bin')}",
           f"SLURMEXP_HOME={shlex.quote(home)}"]
    if os.environ.get("SLURM_CONF"):
        env.append(f"SLURM_CONF={shlex.quote(os.environ['SLURM_CONF'])}")
    command = (f"{' '.join(env)} {words} --ledger {shlex.quote(str(ledger_path))} "
               f"reconcile --quiet >> {shlex.quote(str(log))} 2>&1")
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


def health(ledger: Ledger, max_age_minutes: float = 30, *,
           now: datetime | None = None) -> tuple[bool, str]:
    """(ok, message): not ok when the last pass failed or the last good one is too old."""
    now = now or datetime.now(timezone.utc)
    last = ledger.last_heartbeat(HEARTBEAT_KIND)
    if last is None:
        return False, ("no reconcile pass has run on this ledger yet; install the cron job "
                       "(`slurmexp cron --install`) or run `slurmexp reconcile`")
    good = ledger.last_heartbeat(HEARTBEAT_KIND, ok_only=True)

    def age_text(ts: str) -> str:
        t = parse_ts(ts)
        if t is None:
            return "at an unknown time"
        minutes = (now - t).total_seconds() / 60
        return f"{minutes:.0f} min ago ({ts})"

    if not last["ok"]:
        try:
            error = json.loads(last["summary_json"] or "{}").get("error") or "unknown error"
        except ValueError:
            error = "unknown error"
        error = " | ".join(line.strip() for line in error.splitlines() if line.strip())
        error = error if len(error) <= 300 else error[:297] + "..."
        since = f"; last good pass {age_text(good['ts'])}" if good else "; no pass has succeeded"
        return False, f"last reconcile pass {age_text(last['ts'])} failed: {error}{since}"
    t = parse_ts(good["ts"]) if good else None
    if t is None or (now - t).total_seconds() > max_age_minutes * 60:
        return False, (f"last successful reconcile pass was {age_text(good['ts'])}, older than "
                       f"{max_age_minutes:g} min; is the cron job installed (`crontab -l`)?")
    try:
        summary = json.loads(good["summary_json"] or "{}")
    except ValueError:
        summary = {}
    moved = sum((summary.get("moved") or {}).values())
    return True, (f"ok: last reconcile pass {age_text(good['ts'])}: {summary.get('active', 0)} "
                  f"active attempt(s), {moved} moved, {summary.get('retries_submitted', 0)} "
                  f"resubmitted")
