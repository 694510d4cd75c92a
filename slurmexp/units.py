"""Slurm time and memory strings, as sbatch reads them.

Everything inside slurmexp works in whole minutes and MiB so that comparisons against site
limits are plain integer comparisons; the strings only exist at the edges (the TOML files and
the sbatch script).
"""
from __future__ import annotations

import math
import re

UNLIMITED_WORDS = ("UNLIMITED", "INFINITE")

_TIME_FORMATS = '"MM", "MM:SS", "HH:MM:SS", "D-HH", "D-HH:MM", "D-HH:MM:SS" or "UNLIMITED"'


def _field(text: str, original: str) -> int:
    # int() alone would accept " 5", "+5" and "٥"; sbatch does not.
    if not text or not text.isascii() or not text.isdigit():
        raise ValueError(f"bad time {original!r}: {text!r} is not a whole number; use {_TIME_FORMATS}")
    return int(text)


def _bounded(value: int, limit: int, what: str, original: str) -> int:
    # Only fields that follow a larger unit are bounded: "90" minutes is fine, "1:90:00" is a typo.
    if value >= limit:
        raise ValueError(f"bad time {original!r}: {what} must be below {limit}, got {value}")
    return value


def parse_time(value: str | int) -> int | None:
    """Minutes for a Slurm time string; None for UNLIMITED/INFINITE.

    Seconds are rounded up, because a job cut off a few seconds early is worse than one that
    asks for one minute more. An int is taken as minutes (the "MM" form).
    """
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"bad time {value!r}: expected a string such as \"01:00:00\"")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"bad time {value}: minutes cannot be negative")
        return value
    original = value
    text = value.strip()
    if not text:
        raise ValueError(f"bad time {original!r}: empty; use {_TIME_FORMATS}")
    if text.upper() in UNLIMITED_WORDS:
        return None

    days = 0
    if "-" in text:
        day_text, _, rest = text.partition("-")
        days = _field(day_text, original)
        parts = rest.split(":")
        if len(parts) > 3:
            raise ValueError(f"bad time {original!r}: too many ':' fields; use {_TIME_FORMATS}")
        nums = [_field(p, original) for p in parts]
        hours = _bounded(nums[0], 24, "hours after a day count", original)
        minutes = _bounded(nums[1], 60, "minutes", original) if len(nums) > 1 else 0
        seconds = _bounded(nums[2], 60, "seconds", original) if len(nums) > 2 else 0
    else:
        parts = text.split(":")
        nums = [_field(p, original) for p in parts]
        if len(nums) == 1:
            hours, minutes, seconds = 0, nums[0], 0
        elif len(nums) == 2:
            hours, minutes, seconds = 0, nums[0], _bounded(nums[1], 60, "seconds", original)
        elif len(nums) == 3:
            hours = nums[0]
            minutes = _bounded(nums[1], 60, "minutes", original)
            seconds = _bounded(nums[2], 60, "seconds", original)
        else:
            raise ValueError(f"bad time {original!r}: too many ':' fields; use {_TIME_FORMATS}")
    return days * 1440 + hours * 60 + minutes + math.ceil(seconds / 60)


def format_time(minutes: int | None) -> str:
    """The sbatch form of a minute count: "HH:MM:SS", or "D-HH:MM:SS" from one day on."""
    if minutes is None:
        return "UNLIMITED"
    if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes < 0:
        raise ValueError(f"bad minute count {minutes!r}: expected a whole number >= 0")
    return format_seconds(minutes * 60)


def format_seconds(seconds: int, *, always_days: bool = False, pad_hours: bool = True) -> str:
    """Whole seconds in Slurm's duration form: "HH:MM:SS", "D-HH:MM:SS" from one day on.

    The one place that writes durations, so that --time lines (format_time, render) and the
    times a report shows cannot drift apart. `always_days` writes "0-01:00:00", which every
    sbatch version reads the same way; `pad_hours=False` gives "1:00:00", as sacct's Elapsed.
    """
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    mins, secs = divmod(rest, 60)
    if days or always_days:
        return f"{days}-{hours:02d}:{mins:02d}:{secs:02d}"
    return f"{hours:02d}:{mins:02d}:{secs:02d}" if pad_hours else f"{hours}:{mins:02d}:{secs:02d}"


# The B/iB tail is only allowed after a unit letter: "1024B" would read as bytes to a human.
_MEM_RE = re.compile(r"^(\d+)(?:([KMGT])(?:I?B)?)?$", re.IGNORECASE)
_MEM_SCALE = {"": 1, "M": 1, "G": 1024, "T": 1024 * 1024}


def parse_mem(value: str | int) -> int:
    """MiB for a Slurm memory string ("8G", "500M", "1T"; a bare number is MiB as in sbatch).

    "8GB"/"8GiB" are tolerated because people write them; Slurm units are binary either way.
    Kilobytes round up to whole MiB so a request is never silently shrunk.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"bad memory {value!r}: expected a string such as \"8G\" or \"500M\"")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"bad memory {value}: cannot be negative")
        return value
    text = value.strip()
    match = _MEM_RE.match(text)
    if not match:
        hint = ""
        decimal = re.match(r"^(\d*\.\d+)\s*([KMGT]?)", text, re.IGNORECASE)
        if decimal and decimal.group(2).upper() in ("G", "T"):
            scale = 1024 if decimal.group(2).upper() == "G" else 1024 * 1024
            hint = f" (Slurm takes whole numbers: write \"{math.ceil(float(decimal.group(1)) * scale)}M\")"
        raise ValueError(
            f"bad memory {value!r}: expected a whole number with an optional unit K, M, G or T, "
            f"such as \"8G\" or \"500M\"{hint}"
        )
    number, unit = int(match.group(1)), (match.group(2) or "").upper()
    if unit == "K":
        return math.ceil(number / 1024)
    return number * _MEM_SCALE[unit]


def format_mem(mb: int) -> str:
    """The shortest exact sbatch form: "8G" when whole GiB, else "500M"."""
    if isinstance(mb, bool) or not isinstance(mb, int) or mb < 0:
        raise ValueError(f"bad MiB count {mb!r}: expected a whole number >= 0")
    if mb and mb % (1024 * 1024) == 0:
        return f"{mb // (1024 * 1024)}T"
    if mb and mb % 1024 == 0:
        return f"{mb // 1024}G"
    return f"{mb}M"
