"""Timestamps between the ledger (UTC with offset) and Slurm (local wall-clock, no offset).

The reconcile pass, retries and health compare the two all the time; one parser keeps them
agreeing on what a naive Slurm time means (this host's local time).
"""
from __future__ import annotations

from datetime import datetime, timezone


def parse_ts(text: str | None) -> datetime | None:
    """An aware datetime for ledger (UTC, with offset) and Slurm (local, naive) timestamps."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return value.astimezone() if value.tzinfo is None else value


def utc_iso(value: datetime | None = None) -> str:
    """A time (default now) as the ledger writes it: UTC, ISO 8601, milliseconds."""
    value = value or datetime.now(timezone.utc)
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def sacct_time(value: datetime) -> str:
    """A time as sacct -S reads it: local wall-clock time without offset."""
    return value.astimezone().strftime("%Y-%m-%dT%H:%M:%S")


def display_time(text: str | None, *, seconds: bool = True) -> str:
    """A ledger or Slurm time as people read it in tables: this host's local time, no
    offset, no milliseconds ("2026-12-02 10:27:06"); "" when missing, the text when unreadable.

    One convention for every human display, stated where it is shown (`local_zone()`), so a
    ledger time (UTC) and a Slurm time (local) beside each other compare at a glance.
    """
    value = parse_ts(text)
    if value is None:
        return text or ""
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def local_zone() -> str:
    """This host's zone as a display names it: "UTC+01:00 (CET)"."""
    now = datetime.now().astimezone()
    offset = now.strftime("%z")
    return f"UTC{offset[:3]}:{offset[3:]} ({now.tzname()})"
