"""What happens after a failure, decided without touching anything: the retry policy, backoff,
escalation of time or memory, and the decision for one ended attempt. Pure, so every rule is
tested without a ledger or a cluster.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from slurmexp import units
from slurmexp.settings import ExperimentSettings
from slurmexp.states import CHECKPOINTED, DEPENDENCY

# ------------------------------------------------------------------------------------------
# Policy and decisions


@dataclass
class RetryPolicy:
    """The `[retry]` settings of one resource group, with what escalation needs: the limits of
    where the group was placed and the resources it asked for (from `ExperimentSettings`)."""

    max_attempts: int = 3
    escalate: bool = False
    escalate_factor: float = 2.0
    backoff_s: float = 60.0
    max_time_min: int | None = None
    max_mem_mb: int | None = None
    time_min: int | None = None          # what the group asked for: the base of escalation
    mem_mb: int | None = None
    continue_checkpointed: bool = False  # [checkpoint] requeue

    @classmethod
    def for_chunk(cls, settings: ExperimentSettings, chunk: int | None) -> RetryPolicy:
        r, g = settings.retry, settings.group_of(chunk)
        return cls(max_attempts=r.max_attempts, escalate=r.escalate, escalate_factor=r.escalate_factor,
                   backoff_s=r.backoff_s, max_time_min=g.max_time_min, max_mem_mb=g.max_mem_mb,
                   time_min=g.time_min, mem_mb=g.mem_mb,
                   continue_checkpointed=bool(settings.checkpoint and settings.checkpoint.requeue))

    def backoff(self, attempt_no: int) -> float:
        return float(self.backoff_s) * 2 ** max(int(attempt_no) - 1, 0)

    def scaled(self, base: int | None, times: int, cap: int | None) -> int | None:
        if base is None:
            return None
        value = math.ceil(base * self.escalate_factor ** times) if times > 0 else base
        return min(value, cap) if cap is not None else value


@dataclass
class Escalation:
    """The time and memory a retry asks for instead of its chunk script's own."""

    time_min: int | None = None     # override (None: the script's own)
    mem_mb: int | None = None

    def args(self) -> list[str]:
        out = []
        if self.time_min is not None:
            out.append(f"--time={units.format_time(self.time_min)}")
        if self.mem_mb is not None:
            out.append(f"--mem={self.mem_mb}M")
        return out


def escalation_for(policy: RetryPolicy, n_timeouts: int, n_ooms: int) -> Escalation:
    """What a retry asks for after `n_timeouts` TIMEOUT and `n_ooms` OUT_OF_MEMORY attempts."""
    if not policy.escalate:
        return Escalation()
    return Escalation(
        time_min=policy.scaled(policy.time_min, n_timeouts, policy.max_time_min) if n_timeouts else None,
        mem_mb=policy.scaled(policy.mem_mb, n_ooms, policy.max_mem_mb) if n_ooms else None)


@dataclass
class RetryDecision:
    """Whether a run gets another attempt, why (or why not), and not before when."""

    retry: bool
    note: str                      # appended to the reason
    due: datetime | None = None


# Failure classes the policy never retries: an attempt that ends with one has no retry to decide.
NOT_RETRIED = frozenset({None, "user", "unknown", DEPENDENCY})


def decide_retry(policy: RetryPolicy, state: str, failure_class: str | None, attempt_no: int,
                 history: Sequence[str], end: datetime | None, now: datetime) -> RetryDecision:
    """Whether a run whose newest attempt just ended in `state` gets another attempt.

    `history` holds the states of the run's attempts, this one included, less those that were
    continued from a checkpoint (they say nothing about the time or memory a run needs).
    A checkpointed attempt (`CHECKPOINTED`: it received the signal, requeue is on) is continued
    at once: no backoff, no escalation, within max_attempts.
    """
    if failure_class in NOT_RETRIED:
        return RetryDecision(False, "")
    left = attempt_no < policy.max_attempts
    if failure_class == CHECKPOINTED:
        if not left:
            return RetryDecision(False, f"not continued: no attempts left ({attempt_no} of "
                                        f"{policy.max_attempts} attempts)")
        return RetryDecision(True, f"continue {attempt_no + 1}/{policy.max_attempts} from its "
                                   f"checkpoint", now)
    if failure_class == "infrastructure":
        if not left:
            return RetryDecision(False, f"no retries left ({attempt_no} of "
                                        f"{policy.max_attempts} attempts)")
        due = (end or now) + timedelta(seconds=policy.backoff(attempt_no))
        return RetryDecision(True, f"retry {attempt_no + 1}/{policy.max_attempts}", due)
    # resources
    if not policy.escalate:
        return RetryDecision(False, "")
    if state == "TIMEOUT":
        what, cap = "time", policy.max_time_min
        base_value = policy.time_min
        n = sum(1 for s in history if s == "TIMEOUT")
    else:
        what, cap = "memory", policy.max_mem_mb
        base_value = policy.mem_mb
        n = sum(1 for s in history if s == "OUT_OF_MEMORY")
    if base_value is None:
        return RetryDecision(False, f"cannot escalate: the requested {what} is not known")
    current = policy.scaled(base_value, n - 1, cap)
    if cap is not None and current >= cap:
        shown = units.format_time(cap) if what == "time" else f"{cap}M"
        return RetryDecision(False, f"already at the partition limit ({what} {shown}); not retried")
    if not left:
        return RetryDecision(False, f"no retries left ({attempt_no} of {policy.max_attempts} attempts)")
    new = policy.scaled(base_value, n, cap)
    shown = units.format_time(new) if what == "time" else f"{new}M"
    return RetryDecision(True, f"retry {attempt_no + 1}/{policy.max_attempts} with {what} {shown}",
                         now)
