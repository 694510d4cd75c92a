"""Liveness: whether an attempt Slurm calls RUNNING shows life, and what to do when it does not.

Slurm's RUNNING says that the allocation exists, not that the command makes progress: a job whose
node froze, whose file system hangs, or whose command waits forever stays RUNNING until its time
limit. The task script (`launch/templates/base.sh.j2`) writes the time into the attempt folder's
`layout.HEARTBEAT` file every `[liveness] heartbeat` (30 s by default) while the command runs.
A pass calls the attempt STALLED (`states.STALLED`, an attempt state, so the run shows it) when

- its heartbeat is older than `settings.STALE_BEATS` beats: "no heartbeat since T: the job may be hung or
  its node lost" (the script itself no longer runs, or cannot write);
- with `[liveness] stall_after`, its stdout, stderr and the run's metrics files have not changed
  for that long (the command is alive but silent: a deadlock, a wait on a dead peer).

Only an attempt the previous pass already saw RUNNING (or STALLED) is judged, never one whose
task script has ended (`ended` written), and never one without a `started` file (not begun, or
its files are not visible here): a healthy run is not flagged for a pass's lag, a suspension
or a slow start. A heartbeat file that is missing is no evidence either way (a layer may have
replaced the task block). A STALLED attempt that shows life again is RUNNING at the next pass.

With `stall_action = "requeue"` the job is cancelled (scancel of its task) and the attempt
recorded CANCELLED with failure class infrastructure, so the run is retried like a NODE_FAIL,
within `[retry] max_attempts`. Experiments launched before liveness existed have no
`LivenessSettings` and are never judged (their scripts write no heartbeat).

What is read comes in one `Signs` value (`judge` reads nothing itself). Over SSH the pass
mirrors the attempt's small files (`reconcile.remote_reads`, `heartbeat` among them) before
the transitions, so the heartbeat is judged there too; for `stall_after` the same round trip
asks how long ago each running attempt's stdout, stderr and metrics files changed (by the
cluster's clock, so a laptop whose clock is off judges rightly), and the mirror writes that
time into the local attempt folder (`layout.OUTPUT_CHANGED`), read here beside the local files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from slurmexp import layout
from slurmexp.errors import SlurmexpError
from slurmexp.ledger.rows import ActiveAttempt
from slurmexp.reconcile.context import PassContext
from slurmexp.settings import LivenessSettings
from slurmexp.states import CANCELLED, INFRASTRUCTURE, RUNNING, STALLED
from slurmexp.timeutil import parse_ts
from slurmexp.units import format_interval

# Judged only when the ledger already had the attempt in one of these (see the module doc).
JUDGED_STATES = frozenset({RUNNING, STALLED})


@dataclass(frozen=True)
class Signs:
    """What an attempt's files say about its life: the `started`, `ended` and `heartbeat`
    texts as the task script wrote them, and the newest change of its output (epoch s)."""

    started: str | None = None
    ended: str | None = None
    heartbeat: str | None = None
    last_output: float | None = None

    @classmethod
    def read(cls, folder: Path | None, run_dir: str | os.PathLike | None) -> Signs:
        times = [t for t in (layout.last_output(folder, run_dir), _changed_remotely(folder))
                 if t is not None]
        return cls(layout.time_written(folder, layout.STARTED),
                   layout.time_written(folder, layout.ENDED),
                   layout.time_written(folder, layout.HEARTBEAT),
                   max(times, default=None))


def _changed_remotely(folder: Path | None) -> float | None:
    """Over SSH: when the attempt's output last changed on the cluster, as the pass's mirror
    wrote it (`remote_reads.mirror_output_times`); None elsewhere."""
    if folder is None:
        return None
    try:
        return float((folder / layout.OUTPUT_CHANGED).read_text())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class Stall:
    reason: str
    requeue: bool


def _when(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def judge(settings: LivenessSettings | None, signs: Signs, now: datetime) -> Stall | None:
    """Why a running attempt is STALLED, or None when it shows life (or cannot be judged)."""
    if settings is None or signs.ended is not None:
        return None
    started = parse_ts(signs.started)
    if started is None:
        return None
    requeue = settings.stall_action == "requeue"
    beat = parse_ts(signs.heartbeat)
    if beat is not None and (now - beat).total_seconds() > settings.stale_after_s:
        return Stall(f"no heartbeat since {_when(beat)}: the job may be hung or its node lost",
                     requeue)
    if settings.stall_after_s:
        last = started
        if signs.last_output is not None:
            last = max(last, datetime.fromtimestamp(signs.last_output, timezone.utc))
        if (now - last).total_seconds() >= settings.stall_after_s:
            limit = format_interval(settings.stall_after_s)
            return Stall(f"no output since {_when(last)}: stdout, stderr and metrics unchanged for "
                         f"{limit} ([liveness] stall_after = \"{limit}\"); the command may be hung",
                         requeue)
    return None


def apply_liveness(ctx: PassContext, a: ActiveAttempt, fields: dict, reason: str | None,
                   folder: Path | None) -> tuple[str | None, str | None]:
    """For an attempt whose record says RUNNING: (reason, failure class) after liveness, with
    `fields["state"]` set. Unchanged when it shows life; STALLED with why when it does not; with
    `stall_action = "requeue"` its task cancelled and the attempt CANCELLED, infrastructure
    (when scancel does not answer it stays STALLED and the next pass tries again)."""
    exp = ctx.exps.get(a.exp_id)
    settings = exp["settings"].liveness if exp else None
    if settings is None or a.state not in JUDGED_STATES:
        return reason, fields.get("failure_class")
    stall = judge(settings, Signs.read(folder, a.run_dir), ctx.now)
    if stall is None:
        return reason, fields.get("failure_class")
    where = f"{a.exp_id} {a.run_id} job {a.job_key}"
    fields["state"] = STALLED
    if not stall.requeue:
        ctx.summary.flagged.append(f"{where}: STALLED: {stall.reason}")
        return stall.reason, None
    if ctx.dry_run:
        ctx.summary.act(f"{where}: STALLED ({stall.reason}); would cancel it and retry")
    else:
        try:
            ctx.scheduler().cancel([a.job_key])
        except SlurmexpError as exc:
            ctx.summary.flagged.append(f"{where}: STALLED: {stall.reason}; scancel failed: {exc.message}")
            return f"{stall.reason}; could not cancel it ({exc.message}): the next pass tries again", None
    fields["state"], fields["failure_class"] = CANCELLED, INFRASTRUCTURE
    return (f"STALLED: {stall.reason}; cancelled by slurmexp ([liveness] stall_action = "
            f"\"requeue\")"), INFRASTRUCTURE
