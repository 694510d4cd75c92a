"""The argv of every Slurm command slurmexp runs, built by pure functions.

The backend chooses what to ask (`split_ids` cuts long id lists); these functions only say how the
command line reads, so the exact flags (-u and -S for sacct, --clusters, the field lists the
parsers expect) can be tested without running anything. Each returns a fresh list.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

from slurmexp.backends.slurm import parse as sp


def cluster_args(cluster: str | None) -> list[str]:
    # Only with an explicit cluster: -M makes every command go through slurmdbd, which a
    # single-cluster site may not want on the submit path.
    return [f"--clusters={cluster}"] if cluster else []


def sbatch(script: str | os.PathLike, *, cluster: str | None = None,
           extra_args: Sequence[str] = (), test_only: bool = False) -> list[str]:
    """`sbatch --parsable` (prints "id[;cluster]"), or `sbatch --test-only` (creates nothing)."""
    mode = "--test-only" if test_only else "--parsable"
    return ["sbatch", mode, *cluster_args(cluster), *extra_args, os.fspath(script)]


def scancel(job_ids: Sequence[str], *, cluster: str | None = None) -> list[str]:
    return ["scancel", *cluster_args(cluster), *job_ids]


def squeue(*, cluster: str | None = None, job_ids: Sequence[str] | None = None,
           user: str | None = None, per_task: bool = True) -> list[str]:
    """One row per array task (-r) in `parse.squeue_format()`; `per_task=False`: a pending
    array's tasks in one row ("123_[4-9]"), enough for what is the same for all of them (the
    submit time). With job ids, every state (-t all: the controller still knows jobs that
    ended less than MinJobAge ago); without, the pending and running jobs of `user` (or of
    the caller: --me)."""
    argv = ["squeue", "-h", *(["-r"] if per_task else []), *cluster_args(cluster), "-o", sp.squeue_format()]
    if job_ids is not None:
        return [*argv, "-t", "all", "-j", ",".join(job_ids)]
    return [*argv, *(["-u", user] if user else ["--me"])]


def sacct(*, since: str, cluster: str | None = None, user: str | None = None,
          job_ids: Sequence[str] | None = None, names: Sequence[str] | None = None) -> list[str]:
    """Allocation rows with every requeued attempt (-D), in `parse.SACCT_FIELDS` order.

    -S always: with -j and no -S, sacct searches from the Epoch, where reused job ids of
    another era would be mistaken for ours; -u (or -a without a user) for the same reason.
    `names` selects by job name instead of id.
    """
    argv = ["sacct", "-n", "-P", f"--delimiter={sp.DELIMITER}", "-D",
            "-o", ",".join(sp.SACCT_FIELDS), "-S", since, *cluster_args(cluster)]
    argv += ["-u", user] if user else ["-a"]
    if names is not None:
        return [*argv, f"--name={','.join(names)}"]
    return [*argv, f"--jobs={','.join(job_ids or ())}"]


def cluster_facts(user: str, cluster: str | None = None) -> dict[str, list[str]]:
    """One command per part of `ClusterFacts`, by the name `parse.cluster_facts_from` takes.

    scontrol asks `cluster`'s controller; sacctmgr's QOS are shared by every cluster of a
    slurmdbd, and the associations are kept to the cluster scontrol names (in the parser)."""
    scontrol = ["scontrol", *cluster_args(cluster)]
    return {
        "config": [*scontrol, "show", "config"],
        "partitions": [*scontrol, "-o", "show", "partition"],
        "nodes": [*scontrol, "-o", "show", "node"],
        "reservations": [*scontrol, "-o", "show", "reservation"],
        "qos": ["sacctmgr", "-n", "-P", "show", "qos", f"format={','.join(sp.QOS_FIELDS)}"],
        # `show user ... withassoc` rather than `show assoc`: only the user record carries
        # DefaultAccount, and this gets it in the same call.
        "associations": ["sacctmgr", "-n", "-P", "show", "user", user, "withassoc",
                         f"format={','.join(sp.ASSOC_FIELDS)}"],
        # The user's queued jobs, one line per array task (-r), by QOS: what MaxJobCount and
        # the submit limits already count before this sweep adds its runs.
        "queued": ["squeue", "-h", "-r", *cluster_args(cluster), "-u", user, "-o", "%q"],
    }


def split_ids(ids: Sequence[str], limit: int) -> list[list[str]]:
    """`ids` in lists of at most `limit` bytes of arguments each (one command per list)."""
    chunks: list[list[str]] = []
    current: list[str] = []
    size = 0
    for job in ids:
        extra = len(job) + 1
        if current and size + extra > limit:
            chunks.append(current)
            current, size = [], 0
        current.append(job)
        size += extra
    if current:
        chunks.append(current)
    return chunks
