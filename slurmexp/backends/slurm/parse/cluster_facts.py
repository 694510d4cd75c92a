"""All of a cluster's facts at once, from the raw text of each query (live or captured).
"""
from __future__ import annotations

from typing import Sequence

from slurmexp.backends.facts import (
    ClusterFacts,
)
from slurmexp.backends.slurm.parse.common import _opt
from slurmexp.backends.slurm.parse.sacctmgr import parse_sacctmgr_assoc, parse_sacctmgr_qos
from slurmexp.backends.slurm.parse.scontrol import (
    _int,
    nodes_from,
    parse_scontrol_config,
    parse_scontrol_records,
    partitions_from,
    reservations_from,
)

# --------------------------------------------------------------------------------------------
# all of it


def cluster_facts_from(*, user: str, cluster: str | None = None, config: str | None = None,
                       partitions: str | None = None, nodes: str | None = None,
                       reservations: str | None = None, qos: str | None = None,
                       associations: str | None = None, queued: str | None = None,
                       skipped: Sequence[str] = ()) -> ClusterFacts:
    """ClusterFacts from the raw text of each query; a part given as None stays None (the
    caller names it in `skipped`), so captured output and live output go through one path."""
    facts = ClusterFacts(cluster=cluster or "", user=user, skipped=list(skipped))
    if config is not None:
        conf = parse_scontrol_config(config)
        facts.cluster = conf.get("ClusterName") or facts.cluster
        facts.max_array_size = _int(conf.get("MaxArraySize"))
        facts.max_job_count = _int(conf.get("MaxJobCount"))
        facts.slurm_version = _opt(conf.get("SLURM_VERSION"))
        facts.def_mem_per_cpu_mb = _int(conf.get("DefMemPerCPU")) or None
    if partitions is not None:
        facts.partitions = partitions_from(parse_scontrol_records(partitions))
    if nodes is not None:
        facts.nodes = nodes_from(parse_scontrol_records(nodes))
    if reservations is not None:
        facts.reservations = reservations_from(parse_scontrol_records(reservations))
    if qos is not None:
        facts.qos = parse_sacctmgr_qos(qos)
    if associations is not None:
        facts.associations = parse_sacctmgr_assoc(associations, cluster=facts.cluster or None)
    if queued is not None:
        facts.queued_by_qos = parse_queued_by_qos(queued)
    return facts


def parse_queued_by_qos(text: str) -> dict[str, int]:
    """`squeue -h -r -u USER -o %q`: one QOS name per queued job or array task -> counts."""
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        if line.strip():
            out[line.strip()] = out.get(line.strip(), 0) + 1
    return out
