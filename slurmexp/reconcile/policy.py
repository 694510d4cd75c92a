"""What happens after a failure, decided without touching anything: the retry policy, backoff,
escalation of time or memory, and the decision for one ended attempt. Pure, so every rule is
tested without a ledger or a cluster.
"""
from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from slurmexp import units

# ------------------------------------------------------------------------------------------
# Policy and decisions


@dataclass
class RetryPolicy:
    """An experiment's `[retry]` settings, with what escalation needs: the partition's limits
    and the resources the sweep asked for (launch stores them in the experiment's settings)."""

    max_attempts: int = 3
    escalate: bool = False
    escalate_factor: float = 2.0
    backoff_s: float = 60.0
    max_time_min: int | None = None
    max_mem_mb: int | None = None
    time_min: int | None = None          # what the sweep asked (fallback when the script says nothing)
    mem_mb: int | None = None

    @classmethod
    def from_settings(cls, settings: dict | None) -> RetryPolicy:
        settings = settings or {}
        retry = settings.get("retry") or {}
        limits = settings.get("limits") or {}
        res = settings.get("resources") or {}
        p = cls()
        for name in ("max_attempts", "escalate", "escalate_factor", "backoff_s"):
            if retry.get(name) is not None:
                setattr(p, name, type(getattr(p, name))(retry[name]))
        p.max_time_min = _int_or_none(limits.get("max_time_min"))
        p.max_mem_mb = _int_or_none(limits.get("max_mem_mb"))
        p.time_min = _int_or_none(res.get("time_min"))
        p.mem_mb = _int_or_none(res.get("mem_mb"))
        return p

    def backoff(self, attempt_no: int) -> float:
        return float(self.backoff_s) * 2 ** max(int(attempt_no) - 1, 0)

    def scaled(self, base: int | None, times: int, cap: int | None) -> int | None:
        if base is None:
            return None
        value = math.ceil(base * self.escalate_factor ** times) if times > 0 else base
        return min(value, cap) if cap is not None else value


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


_SBATCH_LINE = re.compile(r"^#SBATCH\s+--(time|mem|array)=(\S+)\s*$", re.MULTILINE)


def script_resources(path: str | os.PathLike | None) -> dict[str, Any]:
    """time_min, mem_mb and array spec from a rendered chunk script's #SBATCH lines."""
    out: dict[str, Any] = {"time_min": None, "mem_mb": None, "array": None}
    if not path:
        return out
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            head = fh.read(20000)
    except OSError:
        return out
    for key, value in _SBATCH_LINE.findall(head):
        try:
            if key == "time":
                out["time_min"] = units.parse_time(value)
            elif key == "mem":
                out["mem_mb"] = units.parse_mem(value)
            else:
                out["array"] = value
        except ValueError:
            pass
    return out


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


def escalation_for(policy: RetryPolicy, base: dict, n_timeouts: int, n_ooms: int) -> Escalation:
    """What a retry asks for after `n_timeouts` TIMEOUT and `n_ooms` OUT_OF_MEMORY attempts."""
    if not policy.escalate:
        return Escalation()
    base_time = base.get("time_min") or policy.time_min
    base_mem = base.get("mem_mb") or policy.mem_mb
    return Escalation(
        time_min=policy.scaled(base_time, n_timeouts, policy.max_time_min) if n_timeouts else None,
        mem_mb=policy.scaled(base_mem, n_ooms, policy.max_mem_mb) if n_ooms else None)


@dataclass
class RetryDecision:
    """Whether a run gets another attempt, why (or why not), and not before when."""

    retry: bool
    note: str                      # appended to the reason
    due: datetime | None = None


def decide_retry(policy: RetryPolicy, state: str, failure_class: str | None, attempt_no: int,
                 history: Sequence[str], base: dict, end: datetime | None,
                 now: datetime) -> RetryDecision:
    """Whether a run whose newest attempt just ended in `state` gets another attempt.

    `history` holds the states of all the run's attempts, this one included.
    """
    if failure_class in (None, "user", "unknown"):
        return RetryDecision(False, "")
    left = attempt_no < policy.max_attempts
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
        base_value = base.get("time_min") or policy.time_min
        n = sum(1 for s in history if s == "TIMEOUT")
    else:
        what, cap = "memory", policy.max_mem_mb
        base_value = base.get("mem_mb") or policy.mem_mb
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
