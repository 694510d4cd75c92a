"""`slurmexp logs` for a run launched over SSH: the full logs are read on the cluster.

Reconcile mirrors only the small result files (and the stderr tail) of an experiment launched
with a `[remote]` site; its stdout and stderr stay on the cluster, under the experiment's
folder there. So `logs` asks the login node, through the experiment's own SSH transport: one
round trip for the whole file, and for `--follow` one per poll (the bytes after what was
shown, and whether the attempt folder has its `ended` file), over the one ControlMaster
connection. A cluster that cannot be reached is SlurmUnavailable (exit 3).
"""
from __future__ import annotations

import base64
import codecs
import time
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

from slurmexp import layout
from slurmexp.errors import Problem, SlurmexpError, SlurmUnavailable
from slurmexp.transport.base import TransportUnreachable
from slurmexp.transport.ssh import Op

POLL_S = 2.0
IDLE_S = 30.0          # Slurm's own log has no end marker: done once it stopped growing
START_GRACE_S = 10.0   # how long a started task may take to create its command's output


def remote_log(ledger: Any, ref: str, stderr: bool = False) -> tuple[Any, PurePosixPath, list[PurePosixPath]] | None:
    """(scheduler, the cluster path of the newest attempt's output, the paths tried) for a run
    of an experiment launched over SSH; None for any other run (its logs are local files)."""
    from slurmexp.backends.base import scheduler_for_experiment
    from slurmexp.backends.slurm.remote import remote_settings_of
    from slurmexp.report.show import show_run

    info = show_run(ledger, ref, events=False)
    exp = ledger.get_experiment(info["exp_id"], required=True)
    if remote_settings_of(exp) is None:
        return None
    sched = scheduler_for_experiment(exp)
    attempts = info["attempts"]
    if not attempts:
        raise SlurmexpError(f"run {info['ref']} has no attempts yet, so no logs", [Problem(
            "", "RUN", f"state {info['state']}, {info['n_attempts']} attempt(s)",
            fix="submit it first (or see `slurmexp show` for its attempts)")])
    last = attempts[-1]
    stream = "stderr" if stderr else "stdout"
    tried = [sched.to_remote(p) for p in (last[stream], last[f"slurm_{stream}"]) if p]
    return sched, tried[0], tried


def _batch(sched: Any, ops: list[Op]):
    transport = sched.backend.transport
    try:
        return transport, transport.batch(ops)
    except TransportUnreachable as exc:
        raise SlurmUnavailable(f"{exc} (logs are read on the cluster)") from None


def read_remote_log(sched: Any, tried: list[PurePosixPath], ref: str) -> str:
    """The first of `tried` that exists on the cluster, whole (one round trip)."""
    transport, results = _batch(sched, [Op("read", path=str(p)) for p in tried])
    for res in results:
        if res.returncode == 0:
            return res.stdout.encode("latin-1").decode("utf-8", errors="replace")
    raise SlurmexpError(f"no log for {ref} on {transport.target}", [Problem(
        "", "RUN", "none of these exist there: " + ", ".join(map(str, tried)),
        fix="it has not started yet (use --follow to wait for it), or the files were removed")])


def follow_remote_log(sched: Any, tried: list[PurePosixPath], *, poll_s: float = POLL_S) -> Iterator[str]:
    """`tail -f` over SSH of the first of `tried` that exists (else the attempt's own output,
    where it will appear), until the attempt folder has its `ended` file (Slurm's log, which
    has no end marker: until it has not grown for IDLE_S)."""
    path = _followed(sched, tried, poll_s)
    ended = path.parent / layout.ENDED if path.name in layout.ATTEMPT_OUTPUT_FILES else None
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    offset, idle_since = 0, time.monotonic()
    # The bytes after `offset`, in base64 (exact bytes, whatever the file holds).
    tail = 'tail -c "+$1" -- "$2" 2>/dev/null | base64 -w0; exit ${PIPESTATUS[0]}'
    while True:
        ops = [Op("exists", path=str(ended))] if ended is not None else []
        ops.append(Op("run", argv=("bash", "-c", tail, "sx", str(offset + 1), str(path)), timeout=60))
        _, results = _batch(sched, ops)
        done = ended is not None and results[0].returncode == 0
        now = time.monotonic()
        if results[-1].returncode == 0:
            data = base64.b64decode(results[-1].stdout.strip() or b"")
            if data:
                offset += len(data)
                idle_since = now
                text = decoder.decode(data)
                if text:
                    yield text
        if done or (ended is None and now - idle_since >= IDLE_S):
            rest = decoder.decode(b"", final=True)
            if rest:
                yield rest
            return
        time.sleep(poll_s)


def _followed(sched: Any, tried: list[PurePosixPath], poll_s: float) -> PurePosixPath:
    """Which of `tried` to follow. Slurm creates its log when the task starts, a moment before
    the task script makes the attempt folder and later the command's output: a task whose
    Slurm log exists is given START_GRACE_S to show its attempt folder (then its output is
    followed, where it appears); only a task that never made one (it died first) is followed
    in Slurm's log. Nothing there yet: the command's output, where it will appear."""
    own = tried[0]
    folder = own.parent if own.name in layout.ATTEMPT_OUTPUT_FILES else None
    deadline = time.monotonic() + START_GRACE_S
    while True:
        probe = [own, *([folder] if folder is not None else []), *tried[1:]]
        _, found = _batch(sched, [Op("exists", path=str(p)) for p in probe])
        there = [p for p, r in zip(probe, found) if r.returncode == 0]
        if own in there or (folder is not None and folder in there) or not there:
            return own
        if time.monotonic() >= deadline:
            return there[0]
        time.sleep(min(poll_s, 0.5))


def remote_logs(ledger: Any, ref: str, stderr: bool = False, follow: bool = False) -> Iterator[str] | None:
    """The text of `slurmexp logs` for a run launched over SSH (None: not such a run)."""
    found = remote_log(ledger, ref, stderr)
    if found is None:
        return None
    sched, _, tried = found
    if follow:
        return follow_remote_log(sched, tried)
    return iter([read_remote_log(sched, tried, ref)])
