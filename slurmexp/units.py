"""Slurm time, memory and TRES strings: as sbatch reads them, and as Slurm prints them.

Everything inside slurmexp works in whole minutes and MiB so that comparisons against site
limits are plain integer comparisons; the strings only exist at the edges (the TOML files and
the sbatch script on the way in, sacct/scontrol/sacctmgr output on the way back). The way in
is strict (`parse_mem`: what sbatch would read the same way); the way back is lenient
(`read_mem`: "1.5G", "1234K", "4000Mc"), and both use one table of unit letters.
"""
from __future__ import annotations

import math
import re

UNLIMITED_WORDS = ("UNLIMITED", "INFINITE")

TIME_FORMATS = '"MM", "MM:SS", "HH:MM:SS", "D-HH", "D-HH:MM", "D-HH:MM:SS" or "UNLIMITED"'


def _field(text: str, original: str) -> int:
    # int() alone would accept " 5", "+5" and "٥"; sbatch does not.
    if not text or not text.isascii() or not text.isdigit():
        raise ValueError(f"bad time {original!r}: {text!r} is not a whole number; use {TIME_FORMATS}")
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
        raise ValueError(f"bad time {original!r}: empty; use {TIME_FORMATS}")
    if text.upper() in UNLIMITED_WORDS:
        return None

    days = 0
    if "-" in text:
        day_text, _, rest = text.partition("-")
        days = _field(day_text, original)
        parts = rest.split(":")
        if len(parts) > 3:
            raise ValueError(f"bad time {original!r}: too many ':' fields; use {TIME_FORMATS}")
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
            raise ValueError(f"bad time {original!r}: too many ':' fields; use {TIME_FORMATS}")
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


# MiB per unit letter. Slurm's units are binary however they are spelled ("8G", "8GB", "8GiB").
MEM_UNIT_MIB = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 ** 2, "P": 1024 ** 3}
_BYTE_MIB = 1 / 1024 ** 2

# The B/iB tail is only allowed after a unit letter: "1024B" would read as bytes to a human.
_MEM_RE = re.compile(r"^(\d+)(?:([KMGT])(?:I?B)?)?$", re.IGNORECASE)
# What Slurm prints: decimals ("1.50G"), and in older sacct a per-CPU/per-node ReqMem ("4000Mc").
_PRINTED_MEM_RE = re.compile(r"^\s*(\d*\.?\d+)\s*([KMGTP]?)(?:I?B)?\s*([CN]?)\s*$", re.IGNORECASE)
_COUNT_RE = re.compile(r"(\d+)([KMG]?)")
_COUNT_SCALE = {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}


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
            scale = MEM_UNIT_MIB[decimal.group(2).upper()]
            hint = f" (Slurm takes whole numbers: write \"{math.ceil(float(decimal.group(1)) * scale)}M\")"
        raise ValueError(
            f"bad memory {value!r}: expected a whole number with an optional unit K, M, G or T, "
            f"such as \"8G\" or \"500M\"{hint}"
        )
    number, unit = int(match.group(1)), (match.group(2) or "M").upper()
    return math.ceil(number * MEM_UNIT_MIB[unit])


def read_mem(text: str | None, *, bare: str = "M") -> tuple[float, str] | None:
    """A memory size as Slurm prints it -> (MiB, per), None when it is not one.

    "1.5G", "1234K", "16GiB"; older sacct writes ReqMem per CPU ("4000Mc") or per node
    ("4000Mn"): `per` is then "c" or "n", else "". `bare` is the unit of a number without one:
    "M" as in sbatch and ReqMem, "B" for bytes (sacct's MaxRSS appends K/M/G whenever it
    scales, so a bare number there is bytes).
    """
    match = _PRINTED_MEM_RE.match(text) if isinstance(text, str) else None
    if not match:
        return None
    unit = match.group(2).upper() or bare
    scale = _BYTE_MIB if unit == "B" else MEM_UNIT_MIB[unit]
    return float(match.group(1)) * scale, match.group(3).lower()


def parse_count(text: str) -> int | None:
    """A count as Slurm prints it, scaled by K/M/G = 1024**n ("8", "2K"); None if not one."""
    match = _COUNT_RE.fullmatch(text.strip())
    if not match:
        return None
    return int(match.group(1)) * _COUNT_SCALE[match.group(2)]


def parse_tres(text: str | None) -> dict[str, int]:
    """"gres/gpu=2,cpu=8,mem=16G" -> {"gres/gpu": 2, "cpu": 8, "mem": 16384}: mem in whole MiB
    (rounded up, as `parse_mem`), the rest as counts. The one reader of TRES strings (AllocTRES,
    CfgTRES, MaxTRESPU ...); entries whose value is not a number (billing weights, say) are
    left out, and so is everything of a string without "=" ("(null)", "N/A")."""
    out: dict[str, int] = {}
    for item in (text or "").split(","):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            continue
        if key == "mem":
            mem = read_mem(value)
            if mem is not None:
                out[key] = math.ceil(mem[0])
            continue
        try:
            out[key] = int(value)
        except ValueError:
            number = parse_count(value)
            if number is not None:
                out[key] = number
    return out


def tres_gpus(tres: dict[str, int]) -> int:
    """GPUs in parsed TRES: `gres/gpu=N` is the total; without it the typed counts
    (`gres/gpu:a100=1`) add up; 0 without either."""
    if "gres/gpu" in tres:
        return tres["gres/gpu"]
    return sum(v for k, v in tres.items() if k.startswith("gres/gpu:"))


def format_mem(mb: int) -> str:
    """The shortest exact sbatch form: "8G" when whole GiB, else "500M"."""
    if isinstance(mb, bool) or not isinstance(mb, int) or mb < 0:
        raise ValueError(f"bad MiB count {mb!r}: expected a whole number >= 0")
    if mb and mb % (1024 * 1024) == 0:
        return f"{mb // (1024 * 1024)}T"
    if mb and mb % 1024 == 0:
        return f"{mb // 1024}G"
    return f"{mb}M"


# sbatch --signal=<sig>@<sig_time>: whole seconds, at most 65535 (Slurm keeps them in 16 bits).
MAX_SIGNAL_TIME_S = 0xFFFF
_DURATION = re.compile(r"([0-9]+)(s|m|min)\Z")


def parse_duration_s(value: str) -> int:
    """Seconds for "90s", "2m" or "2min" (a `[checkpoint] before` value); ValueError otherwise.

    A bare number is refused: a reader would take "90" for minutes as often as for seconds."""
    m = _DURATION.fullmatch(value.strip()) if isinstance(value, str) and value.isascii() else None
    if m is None:
        raise ValueError(f"bad duration {value!r}: write whole seconds or minutes with their "
                         f"unit, e.g. \"90s\" or \"2m\"")
    seconds = int(m.group(1)) * (1 if m.group(2) == "s" else 60)
    if not 1 <= seconds <= MAX_SIGNAL_TIME_S:
        raise ValueError(f"bad duration {value!r}: sbatch --signal takes 1 to "
                         f"{MAX_SIGNAL_TIME_S} seconds")
    return seconds


_INTERVAL = re.compile(r"([0-9]+)(s|m|min|h)\Z")
_INTERVAL_S = {"s": 1, "m": 60, "min": 60, "h": 3600}


def parse_interval_s(value: str) -> int:
    """Seconds for "20s", "30m", "30min" or "2h" (a `[liveness]` value); ValueError otherwise.

    As for `parse_duration_s`, a bare number is refused, and so is zero."""
    m = _INTERVAL.fullmatch(value.strip()) if isinstance(value, str) and value.isascii() else None
    if m is None or int(m.group(1)) == 0:
        raise ValueError(f"bad interval {value!r}: write a whole number of seconds, minutes or "
                         f"hours with its unit, e.g. \"30s\", \"30m\" or \"2h\"")
    return int(m.group(1)) * _INTERVAL_S[m.group(2)]


def format_interval(seconds: float) -> str:
    """"20s", "30m", "2h", "1h30m": how a `[liveness]` interval is said back."""
    h, rest = divmod(int(seconds), 3600)
    m, s = divmod(rest, 60)
    return "".join(f"{n}{unit}" for n, unit in ((h, "h"), (m, "m"), (s, "s")) if n) or "0s"
