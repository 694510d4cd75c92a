"""What site.toml says that the live cluster no longer does (a partition gone, a node's GPUs
changed). Routing and the static checks believe site.toml, the live checks the cluster: when
the two disagree, every message would blame the sweep, or send the user back and forth between
two fixes. So the disagreement is found first, once, at its key in site.toml, and the fix is to
discover the site again.
"""
from __future__ import annotations

from slurmexp.backends.facts import ClusterFacts
from slurmexp.errors import Problem
from slurmexp.sites import discover
from slurmexp.sites.model import Site


def rediscover_fix(site: Site) -> str:
    """Discover this site again (over SSH when it has a [remote] table), compare, replace."""
    remote = site.remote
    argv = discover.discover_argv() if remote is None else discover.discover_argv(
        f"{remote.user}@{remote.host}" if remote.user else remote.host, remote.port,
        remote.identity_file, remote.ssh_options, remote.root)
    return "re-run `slurmexp site discover`: " + discover.rediscover_fix(str(site.path), argv)


def _gpus(types: dict[str, int]) -> str:
    return ", ".join(f"{k or 'untyped'} x{v}" for k, v in sorted(types.items())) or "none"


def stale_problems(site: Site, facts: ClusterFacts) -> list[Problem]:
    """One problem naming every key of site.toml the cluster contradicts, with one fix; [] when
    the parts routing relies on (partitions, their nodes, the nodes' GPUs) agree or could not
    be read."""
    if facts.partitions is None or facts.nodes is None:
        return []
    found: list[tuple[str, str]] = []
    live_parts = facts.partitions
    for name, part in site.partitions.items():
        if name not in live_parts:
            found.append((f"partitions.{name}", f"partition {name} does not exist any more "
                                                f"(the cluster's: {', '.join(live_parts) or 'none'})"))
            continue
        gone = [n for n in part.nodes if n not in live_parts[name].nodes]
        if gone:
            found.append((f"partitions.{name}.nodes", f"{', '.join(gone)} no longer in partition {name} "
                                                      f"(its nodes: {', '.join(live_parts[name].nodes) or 'none'})"))
    for name, node in site.nodes.items():
        live = facts.nodes.get(name)
        if live is None:
            if any(name in p.nodes for p in site.partitions.values()):
                found.append((f"nodes.{name}", f"node {name} does not exist any more"))
            continue
        if dict(node.gpus) != dict(live.gres):
            found.append((f"nodes.{name}.gpus", f"node {name} has GPUs {_gpus(live.gres)}, "
                                                f"site.toml says {_gpus(node.gpus)}"))
    if not found:
        return []
    return [Problem(str(site.path), ", ".join(k for k, _ in found),
                    f"site.toml no longer matches cluster {facts.cluster}: " + "; ".join(m for _, m in found),
                    rediscover_fix(site), check="stale_site")]
