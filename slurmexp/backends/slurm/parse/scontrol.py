"""What scontrol prints: key=value records of nodes, partitions and reservations, the running
configuration, and the GRES/TRES strings inside them.
"""
from __future__ import annotations

import re
from datetime import datetime
from typing import Iterable

from slurmexp import units
from slurmexp.backends.facts import (
    NodeFacts,
    PartitionFacts,
    ReservationFacts,
)
from slurmexp.backends.slurm.parse.common import _opt, _split_top_level, expand_hostlist

# --------------------------------------------------------------------------------------------
# scontrol


# A key is a CamelCase-ish word right after whitespace: "RealMemory=", "MCS_label=", "OS=".
# Values of Reason= and OS= contain spaces (and Reason may contain lower-case "x=y"), so only
# this shape of token starts a new pair.
_KEY_RE = re.compile(r"(?:^|(?<=\s))([A-Z][A-Za-z0-9_]*)=")


def parse_scontrol_line(line: str) -> dict[str, str]:
    record: dict[str, str] = {}
    matches = list(_KEY_RE.finditer(line))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
        key = match.group(1)
        value = line[match.end():end].strip()
        record.setdefault(key, value)
    return record


def parse_scontrol_records(text: str) -> list[dict[str, str]]:
    """One dict per line of `scontrol -o show partition|node|reservation`.

    Lines that do not start with a Key= pair ("No reservations in the system") are skipped.
    """
    records = []
    for line in (text or "").splitlines():
        if not line.strip() or not _KEY_RE.match(line.strip()):
            continue
        records.append(parse_scontrol_line(line.strip()))
    return records


def parse_scontrol_config(text: str) -> dict[str, str]:
    """`scontrol show config` ("Key = Value" lines); the first value of a key wins, because the
    plugin sections printed after the main block reuse a few names for other things."""
    config: dict[str, str] = {}
    for line in (text or "").splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key = key.strip()
        if not key or " " in key:
            continue
        config.setdefault(key, value.strip())
    return config


def _int(value: str | None) -> int | None:
    value = _opt(value)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def parse_gres(text: str | None) -> dict[str, int]:
    """GPU type -> count from a Gres string ("gpu:a100:2(S:0-1),gpu:2" -> {"a100": 2, "": 2}).

    Non-GPU gres (mps, shard, ...) are left out: routing only places GPUs.
    """
    gpus: dict[str, int] = {}
    if _opt(text) is None:
        return gpus
    for item in _split_top_level(re.sub(r"\([^)]*\)", "", text or "")):
        parts = item.split(":")
        if parts[0] != "gpu":
            continue
        count_text = parts[-1] if len(parts) > 1 else "1"
        # "gpu:a100" (no count) means one; flags such as no_consume sit between type and count.
        kind = parts[1] if len(parts) > 2 else ""
        if len(parts) == 2 and not count_text.isdigit():
            kind, count_text = count_text, "1"
        count = units.parse_count(count_text)
        if count is None:
            continue
        gpus[kind] = gpus.get(kind, 0) + count
    return gpus


def _tres_strings(text: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in (_opt(text) or "").split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            out[key.strip()] = value.strip()
    return out


def _gres_from_tres(tres: dict[str, str]) -> dict[str, int]:
    typed = {k.split(":", 1)[1]: int(v) for k, v in tres.items()
             if k.startswith("gres/gpu:") and v.isdigit()}
    if typed:
        return typed
    total = tres.get("gres/gpu", "")
    return {"": int(total)} if total.isdigit() and int(total) else {}


def _list(value: str | None) -> list[str]:
    value = _opt(value)
    return [v for v in (value or "").split(",") if v] if value else []


def nodes_from(records: Iterable[dict[str, str]]) -> dict[str, NodeFacts]:
    nodes: dict[str, NodeFacts] = {}
    for rec in records:
        name = rec.get("NodeName")
        if not name:
            continue
        tres = _tres_strings(rec.get("CfgTRES"))
        gres = parse_gres(rec.get("Gres"))
        if not gres:
            # Some sites configure GPUs only as TRES; the configured TRES still say how many.
            gres = _gres_from_tres(tres)
        mem = _int(rec.get("RealMemory"))
        if mem is None:
            mem = units.parse_tres(rec.get("CfgTRES")).get("mem")
        features = _list(rec.get("AvailableFeatures") or rec.get("Features"))
        nodes[name] = NodeFacts(
            name=name,
            state=(rec.get("State") or "unknown").lower(),
            cpus=_int(rec.get("CPUTot")) or _int(rec.get("CPUEfctv")) or _int(tres.get("cpu")) or 0,
            mem_mb=mem or 0,
            gres=gres,
            partitions=_list(rec.get("Partitions")),
            features=features,
            tres=tres,
            reason=_opt(rec.get("Reason")),
        )
    return nodes


def _minutes(value: str | None) -> int | None:
    value = _opt(value)
    if value is None:
        return None
    try:
        return units.parse_time(value)
    except ValueError:
        return None


def partitions_from(records: Iterable[dict[str, str]]) -> dict[str, PartitionFacts]:
    parts: dict[str, PartitionFacts] = {}
    for rec in records:
        name = rec.get("PartitionName")
        if not name:
            continue
        allow = rec.get("AllowQos", "ALL")
        parts[name] = PartitionFacts(
            name=name,
            state=(rec.get("State") or "UP").upper(),
            max_time_min=_minutes(rec.get("MaxTime")),
            nodes=expand_hostlist(rec.get("Nodes")),
            default=rec.get("Default", "NO").upper() == "YES",
            allow_qos=None if allow.upper() == "ALL" else _list(allow),
            default_time_min=_minutes(rec.get("DefaultTime")),
            qos=_opt(rec.get("QoS")),
            def_mem_per_cpu_mb=_int(rec.get("DefMemPerCPU")) or None,
        )
    return parts


def _datetime(value: str | None) -> datetime | None:
    value = _opt(value)
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def reservations_from(records: Iterable[dict[str, str]]) -> dict[str, ReservationFacts]:
    out: dict[str, ReservationFacts] = {}
    for rec in records:
        name = rec.get("ReservationName")
        if not name:
            continue
        out[name] = ReservationFacts(
            name=name,
            state=(rec.get("State") or "").upper(),
            nodes=expand_hostlist(rec.get("Nodes")),
            users=_list(rec.get("Users")),
            accounts=_list(rec.get("Accounts")),
            start=_datetime(rec.get("StartTime")),
            end=_datetime(rec.get("EndTime")),
            partition=_opt(rec.get("PartitionName")),
            flags=_list(rec.get("Flags")),
        )
    return out
