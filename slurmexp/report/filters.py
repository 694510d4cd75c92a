"""`slurmexp status --state --since --name --tag`: which experiments the table lists.

Every filter given must match (tags: every tag given). `--name` is a shell pattern (`lr-*`)
matched against the sweep's name and the experiment id; `--since` is an age (`30m`, `12h`,
`2d`, `1w`) or a date (`2026-12-01`, `2026-12-01T09:00`, local time) compared with the
experiment's creation. Pure: the ledger's rows in, the kept rows out.
"""
from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from slurmexp.errors import Problem, SlurmexpError
from slurmexp.states import EXPERIMENT_STATES
from slurmexp.timeutil import parse_ts

_UNITS = {"m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """An age ("2d") or a date/time ("2026-12-01", local) as an aware datetime."""
    now = now or datetime.now(timezone.utc)
    m = re.fullmatch(r"\s*(\d+)\s*(m|min|h|d|w)\s*", text)
    if m:
        return now - timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise SlurmexpError(f"status: --since {text!r} is neither an age nor a date", [Problem(
            "", "--since", text, fix='an age such as "30m", "12h", "2d", "1w", or a date such as '
                                   '"2026-12-01" or "2026-12-01T09:00" (local time)')]) from None
    return when if when.tzinfo else when.astimezone()


def check_states(states: Iterable[str]) -> list[str]:
    """The experiment states asked for, upper-cased; an unknown one is refused with the list."""
    out = []
    for state in states:
        for word in (w.strip().upper() for w in state.split(",") if w.strip()):
            if word not in EXPERIMENT_STATES:
                close = difflib.get_close_matches(word, EXPERIMENT_STATES, n=1)
                hint = f"did you mean {close[0]}? " if close else ""
                raise SlurmexpError(f"status: --state {word} is not an experiment state", [Problem(
                    "", "--state", word, fix=f"{hint}one of {', '.join(EXPERIMENT_STATES)}")])
            out.append(word)
    return out


@dataclass(frozen=True)
class ExperimentFilter:
    states: tuple[str, ...] = ()
    since: datetime | None = None
    names: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    archived: bool = False          # also the experiments `slurmexp archive` hid

    @classmethod
    def from_options(cls, states: Sequence[str] = (), since: str | None = None,
                     names: Sequence[str] = (), tags: Sequence[str] = (),
                     archived: bool = False) -> ExperimentFilter:
        return cls(tuple(check_states(states)), parse_since(since) if since else None,
                   tuple(names), tuple(tags), archived)

    def __bool__(self) -> bool:
        """Whether a filter chooses experiments (--archived alone does not)."""
        return bool(self.states or self.since or self.names or self.tags)

    def keeps(self, exp: dict) -> bool:
        if exp.get("archived") and not self.archived:
            return False
        if self.states and exp["state"] not in self.states:
            return False
        if self.since is not None:
            created = parse_ts(exp["created"])
            if created is None or created < self.since:
                return False
        if self.names and not any(fnmatch.fnmatchcase(exp["name"], p) or fnmatch.fnmatchcase(exp["exp_id"], p)
                                  for p in self.names):
            return False
        return all(t in (exp.get("tags") or []) for t in self.tags)

    def describe(self) -> str:
        parts = [f"state {'|'.join(self.states)}"] if self.states else []
        if self.since is not None:
            parts.append(f"created since {self.since.astimezone():%Y-%m-%d %H:%M}")
        parts += [f"name {' or '.join(self.names)}"] if self.names else []
        parts += [f"tag {t}" for t in self.tags]
        return ", ".join(parts)
