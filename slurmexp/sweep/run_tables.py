"""The sweep.toml tables about how runs are watched and recorded rather than what they run:
`[checkpoint]`, `[liveness]`, `[provenance]`, `[meta]`, `[notify]` and `[depends]` (only `[checkpoint]` and
`[liveness]` are part of the fingerprint; see `Sweep.canonical`). Re-exported by `sweep.spec`."""
from __future__ import annotations

import difflib
import re
from typing import Annotated, Any

from pydantic import AfterValidator, Field, Strict, WithJsonSchema, computed_field

from slurmexp import units
from slurmexp.states import STALL_ACTIONS
from slurmexp.sweep.strict_toml import FixError, StrictModel, Text

# Signals a task script can trap and forward (sbatch --signal takes the name without "SIG").
# KILL and STOP cannot be caught; the others would end or stop a command that ignores them.
CHECKPOINT_SIGNALS = ("USR1", "USR2", "TERM", "INT", "HUP", "QUIT", "ALRM", "URG", "XCPU",
                      "CONT", "WINCH")


def _signal_name(value: str) -> str:
    if value in CHECKPOINT_SIGNALS:
        return value
    bare = value.strip().upper().removeprefix("SIG")
    if bare in CHECKPOINT_SIGNALS:
        raise FixError(f"{value!r}: write the signal's name as sbatch --signal takes it",
                       suggest=bare)
    if bare in ("KILL", "STOP"):
        raise FixError(f"{value!r} cannot be caught, so no command could checkpoint on it",
                       suggest="USR1")
    close = difflib.get_close_matches(bare, CHECKPOINT_SIGNALS, n=1, cutoff=0.5)
    raise FixError(f"{value!r} is not a signal slurmexp can forward; one of "
                   f"{', '.join(CHECKPOINT_SIGNALS)}", suggest=close[0] if close else "USR1")


def _duration(value: str) -> str:
    try:
        units.parse_duration_s(value)
    except ValueError as exc:
        digits = "".join(c for c in value if c.isdigit())
        raise FixError(str(exc), suggest=f"{int(digits)}s" if digits and 0 < int(digits)
                       <= units.MAX_SIGNAL_TIME_S else "90s") from None
    return value


def _interval(value: str) -> str:
    try:
        units.parse_interval_s(value)
    except ValueError as exc:
        digits = "".join(c for c in value if c.isdigit()).lstrip("0")
        raise FixError(str(exc), suggest=f"{digits}s" if digits else None) from None
    return value


def _stall_action(value: str) -> str:
    if value not in STALL_ACTIONS:
        close = difflib.get_close_matches(value.strip().lower(), STALL_ACTIONS, n=1, cutoff=0.5)
        raise FixError(f"{value!r} is not a stall action; one of {', '.join(STALL_ACTIONS)}",
                       suggest=close[0] if close else "flag")
    return value


SignalStr = Annotated[str, Strict(), AfterValidator(_signal_name)]
DurationStr = Annotated[str, Strict(), AfterValidator(_duration)]
IntervalStr = Annotated[str, Strict(), AfterValidator(_interval)]
StallActionStr = Annotated[str, Strict(), AfterValidator(_stall_action)]


class CheckpointSpec(StrictModel):
    """`[checkpoint]`: Slurm sends `signal` to the task script `before` the time limit (sbatch
    --signal=B:SIG@SECONDS); the script records it and forwards it to the command's process
    group. With `requeue`, an attempt that received it (or a preemption's SIGTERM) and did not
    complete is continued as the run's next attempt: no escalation, no backoff, within
    [retry] max_attempts."""

    signal: SignalStr = "USR1"
    before: DurationStr = "90s"
    requeue: bool = False

    @computed_field  # type: ignore[prop-decorator]
    @property
    def before_s(self) -> int:
        return units.parse_duration_s(self.before)


class LivenessSpec(StrictModel):
    """`[liveness]`: a heartbeat every `heartbeat` while the command runs; STALLED when it is stale
    or (`stall_after`) the output has not changed; `stall_action` (reconcile.liveness)."""

    heartbeat: IntervalStr = "30s"
    stall_after: IntervalStr | None = None
    stall_action: StallActionStr = "flag"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def heartbeat_s(self) -> int:
        return units.parse_interval_s(self.heartbeat)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def stall_after_s(self) -> int | None:
        return units.parse_interval_s(self.stall_after) if self.stall_after else None


def _default_secret_patterns() -> list[str]:
    from slurmexp.ledger.provenance import DEFAULT_SECRET_PATTERNS
    return list(DEFAULT_SECRET_PATTERNS)


class ProvenanceSpec(StrictModel):
    """What a launch records about the code. Not part of the sweep's fingerprint: it does not
    change what runs."""

    # Changed tracked files matching these (file name or path, any case) are left out of
    # provenance/git.diff; only their names and sha256 are recorded. [] records every diff.
    secret_patterns: list[Text] = Field(default_factory=_default_secret_patterns)


def _tag(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:+-]{0,63}", value):
        kept = re.sub(r"[^A-Za-z0-9_.:+-]+", "-", value).strip("-_.:+")[:64]
        raise FixError(f"tag {value!r}: letters, digits and _ . : + - only, starting with a letter "
                       f"or digit, 64 at most", suggest=kept or None)
    return value


TagStr = Annotated[str, Strict(), AfterValidator(_tag)]


def check_tag(value: str) -> str | None:
    """Why `value` cannot be a tag (with the fix), or None (for `launch --tag`)."""
    try:
        _tag(value)
    except FixError as exc:
        return f"{exc}" + (f"; write {exc.suggest!r}" if exc.suggest else "")
    return None


class MetaSpec(StrictModel):
    """`[meta]`: what `slurmexp status` shows and filters on. Not part of the fingerprint."""

    tags: list[TagStr] = Field(default_factory=list)
    description: Annotated[str, Strict()] | None = None


MAX_NOTIFY_TIMEOUT_S = 600      # the pass holds its lock while the command runs


def _notify_seconds(value: str) -> int:
    """Seconds of a `[notify] timeout` ("60s", "2m", "2min"); 0 when it is not one."""
    m = re.fullmatch(r"\s*(\d+)\s*(s|m|min)\s*", value) if value.isascii() else None
    return int(m.group(1)) * (1 if m.group(2) == "s" else 60) if m else 0


def _notify_timeout(value: str) -> str:
    if not 1 <= _notify_seconds(value) <= MAX_NOTIFY_TIMEOUT_S:
        raise FixError(f"bad timeout {value!r}: whole seconds or minutes with their unit, 1s to "
                       f"{MAX_NOTIFY_TIMEOUT_S // 60}m", suggest="60s")
    return value


def _notify_command(value: str) -> str:
    if not value.strip():
        raise FixError("the command is blank", suggest="echo $SLURMEXP_EXPERIMENT $SLURMEXP_STATE")
    return value


class NotifySpec(StrictModel):
    """`[notify]`: a shell command reconcile runs once when the experiment finishes, with the
    summary in SLURMEXP_* variables (reconcile.notify). Not part of the fingerprint."""

    command: Annotated[str, Strict(), AfterValidator(_notify_command)]
    timeout: Annotated[str, Strict(), AfterValidator(_notify_timeout)] = "60s"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def timeout_s(self) -> int:
        return _notify_seconds(self.timeout)      # validated: 1 to MAX_NOTIFY_TIMEOUT_S


def _experiment_refs(value: Any) -> list[str]:
    refs = [value] if isinstance(value, str) else value
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise FixError(f"{value!r} is not an experiment reference or a list of them (strings: "
                       "an experiment id, a unique prefix of one, or a sweep name)",
                       suggest="prepare-data")
    if not refs:
        raise FixError("empty list: name at least one experiment (or remove [depends])",
                       suggest="prepare-data")
    for ref in refs:
        if not ref.strip() or ref != ref.strip():
            raise FixError(f"{ref!r} is not an experiment reference: an experiment id, a unique "
                           "prefix of one, or a sweep name", suggest=ref.strip() or "prepare-data")
    return list(dict.fromkeys(refs))


class DependsSpec(StrictModel):
    """`[depends]`: experiments this one waits for (sbatch --dependency=afterok on their jobs;
    launch.depends resolves them in the ledger). Not part of the fingerprint."""

    after_ok: Annotated[Any, AfterValidator(_experiment_refs), WithJsonSchema({"anyOf": [
        {"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]})]
