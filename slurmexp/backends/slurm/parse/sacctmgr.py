"""What sacctmgr prints: QOS limits and the user's associations (-P, one row per line).
"""
from __future__ import annotations

from typing import Sequence

from slurmexp.backends.facts import (
    Association,
    QosFacts,
)
from slurmexp.backends.slurm.parse.common import _opt
from slurmexp.backends.slurm.parse.scontrol import _int, _list, _minutes
from slurmexp.units import parse_tres

QOS_FIELDS: tuple[str, ...] = ("Name", "MaxWall", "MaxTRESPU", "MaxTRES", "MaxSubmitPU",
                               "Preempt", "Flags")
ASSOC_FIELDS: tuple[str, ...] = ("Cluster", "User", "DefaultAccount", "Account", "Partition",
                                 "QOS", "DefaultQOS")
# --------------------------------------------------------------------------------------------
# sacctmgr


def _pipe_rows(text: str, fields: Sequence[str]) -> list[dict[str, str]]:
    rows = []
    for line in (text or "").splitlines():
        if not line.strip():
            continue
        values = line.split("|")
        rows.append({f: (values[i] if i < len(values) else "") for i, f in enumerate(fields)})
    return rows


def parse_sacctmgr_qos(text: str, fields: Sequence[str] = QOS_FIELDS) -> dict[str, QosFacts]:
    """`sacctmgr -n -P show qos format=<fields>` (sacctmgr's own "|" delimiter: QOS names and
    TRES strings cannot contain it)."""
    out: dict[str, QosFacts] = {}
    for row in _pipe_rows(text, fields):
        name = row.get("Name", "").strip()
        if not name:
            continue
        out[name] = QosFacts(
            name=name,
            max_wall_min=_minutes(row.get("MaxWall")),
            max_tres_pu=parse_tres(row.get("MaxTRESPU")),
            max_tres_pj=parse_tres(row.get("MaxTRES")),
            max_submit_pu=_int(row.get("MaxSubmitPU")),
            preempt=_list(row.get("Preempt")),
            flags=_list(row.get("Flags")),
        )
    return out


def parse_sacctmgr_assoc(text: str, fields: Sequence[str] = ASSOC_FIELDS,
                         cluster: str | None = None) -> list[Association]:
    """`sacctmgr -n -P show user U withassoc format=<fields>` or `show assoc where user=U
    format=<fields>`. One slurmdbd can serve several clusters: pass `cluster` to keep only its
    associations."""
    out: list[Association] = []
    for row in _pipe_rows(text, fields):
        account = row.get("Account", "").strip()
        if not account:
            continue
        row_cluster = _opt(row.get("Cluster"))
        if cluster and row_cluster and row_cluster != cluster:
            continue
        default_account = _opt(row.get("DefaultAccount"))
        out.append(Association(
            account=account,
            user=row.get("User", "").strip(),
            qos=_list(row.get("QOS")),
            default_qos=_opt(row.get("DefaultQOS")),
            partition=_opt(row.get("Partition")),
            cluster=row_cluster,
            is_default_account=default_account == account,
        ))
    return out
