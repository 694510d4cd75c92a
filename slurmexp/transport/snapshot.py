"""One reconcile pass's reads from a cluster over SSH, in one round trip: sacct for the active
jobs, squeue for them, and the small result files of attempts (exit_code, ended, host, metrics,
stderr tail) — whatever the number of runs.

Why: over SSH the cost of a pass is round trips, not commands; a pass that asked sacct, squeue
and then each attempt's files separately would cost hundreds of trips per pass on a 500-task
sweep. The commands are built and parsed by the same functions `SlurmBackend` uses
(`backends.slurm.commands` and `parse`), and every one is recorded in `run_slurm`'s call log.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from slurmexp.backends.facts import SacctRow, SqueueRow
from slurmexp.backends.slurm import backend as slurm_backend
from slurmexp.backends.slurm import commands
from slurmexp.backends.slurm import parse as sp
from slurmexp.errors import SlurmCommandError, SlurmUnavailable
from slurmexp.transport.base import TransportUnreachable
from slurmexp.transport.ssh import Op, SshTransport, path_list_op

# Bytes kept of an attempt's stderr (its tail is what reports need); other files are small.
TAIL_BYTES = 4096


@dataclass
class Snapshot:
    accounting: list[SacctRow]
    queue: list[SqueueRow]
    files: dict[str, str | None] = field(default_factory=dict)   # path -> text; None: absent
    by_name: list[SacctRow] = field(default_factory=list)        # sacct --name=<names>
    # path -> seconds since its last change, by the cluster's own clock (absent: no such file)
    ages: dict[str, float] = field(default_factory=dict)


def ages_op(base: str, paths: Sequence[str]) -> Op:
    """One op: how long ago each of `paths` (relative to `base`) last changed, on the cluster."""
    return path_list_op("ages", base, paths)


def ages_result(text: str, paths: Sequence[str]) -> dict[str, float]:
    """Parse an ages op's answer: the cluster's `date +%s`, then "<mtime> <path>" lines. Ages,
    not times, so that a laptop whose clock differs from the cluster's judges them rightly."""
    lines = text.splitlines()
    try:
        now = float(lines[0])
    except (IndexError, ValueError):
        return {}
    wanted = set(paths)
    out: dict[str, float] = {}
    for line in lines[1:]:
        mtime, _, path = line.partition(" ")
        if path in wanted:
            try:
                out[path] = max(0.0, now - float(mtime))
            except ValueError:
                continue
    return out


def snapshot(backend, job_ids: Sequence[str], *, since: str, files: Sequence[str] = (),
             timeout: float = 60, names: Sequence[str] = (), names_since: str | None = None,
             user_queue: bool = False, array_ids: Sequence[str] = (),
             ages: Sequence[str] = ()) -> Snapshot:
    """sacct + squeue for `job_ids`, the text of `files` and the age of `ages` (relative
    paths: how long since each last changed), in one ssh round trip.

    With `names`, a second sacct selects by job name from `names_since` (a launch's orphans);
    `user_queue` lists the user's pending and running jobs instead of squeue by job id (what
    a reconcile pass asks: orphans are not among its ids).

    Raises SlurmUnavailable when the cluster cannot be reached or a daemon did not answer:
    the caller changes nothing on such a pass."""
    transport = backend.transport
    if not isinstance(transport, SshTransport):
        raise TypeError("snapshot() is for SSH transports; locally, the backend's calls are cheap")
    ids = list(dict.fromkeys(str(j) for j in job_ids))
    sacct_argvs = [commands.sacct(since=since, cluster=backend.cluster_flag, user=backend.user,
                                  job_ids=chunk) for chunk in slurm_backend._chunks(ids)] if ids else []
    name_list = list(dict.fromkeys(names))
    n_by_id = len(sacct_argvs)
    sacct_argvs += [commands.sacct(since=names_since or since, cluster=backend.cluster_flag,
                                   user=backend.user, names=chunk)
                    for chunk in slurm_backend._chunks(name_list)] if name_list else []
    if user_queue:
        squeue_argvs = [commands.squeue(cluster=backend.cluster_flag, user=backend.user)]
    else:
        squeue_argvs = [commands.squeue(cluster=backend.cluster_flag, job_ids=chunk)
                        for chunk in slurm_backend._chunks(ids)] if ids else []
    env = dict(slurm_backend.SLURM_ENV)
    ops = [Op("run", argv=tuple(a), env=env, timeout=timeout) for a in sacct_argvs + squeue_argvs]
    rel = [f for f in files if not f.startswith("/")]
    absolute = [f for f in files if f.startswith("/")]
    # Named from their common folder (an experiment's): the list the script carries halves.
    base = _common_folder(rel)
    short = [f[len(base):] for f in rel]
    ops.append(transport.read_many_op(str(transport.root / base) if base else str(transport.root), short))
    ops += [Op("read", path=f) for f in absolute]
    if ages:
        ops.append(ages_op(str(transport.root), ages))
    try:
        results = transport.batch(ops)
    except TransportUnreachable as exc:
        raise SlurmUnavailable(f"{exc} (this is not a job failure)") from None
    acct: list[SacctRow] = []
    by_name: list[SacctRow] = []
    queue: list[SqueueRow] = []
    for i, (op, res) in enumerate(zip(ops[:len(sacct_argvs) + len(squeue_argvs)], results)):
        res = transport.check_run(res, timeout)
        command = op.argv[0]
        slurm_backend._record(command, 0.0, res.returncode)
        if res.returncode != 0:
            stderr = res.stderr.strip()
            if command == "squeue" and "invalid job id" in stderr.lower():
                continue
            if sp.classify_error(stderr) == "unavailable":
                raise SlurmUnavailable(f"{command} could not reach a Slurm daemon on "
                                       f"{transport.target} (this is not a job failure): {stderr}")
            raise SlurmCommandError(f"{command} failed on {transport.target} (exit "
                                    f"{res.returncode}): {stderr or 'no message'}")
        if command == "sacct":
            if i < n_by_id:
                acct += sp.parse_sacct(res.stdout, sp.DELIMITER, array_ids=array_ids)
            else:
                by_name += sp.parse_sacct(res.stdout, sp.DELIMITER)
        else:
            queue += sp.parse_squeue(res.stdout)
    n = len(sacct_argvs) + len(squeue_argvs)
    found = {base + name: data for name, data in transport.read_many_result(results[n], short).items()}
    for path, res in zip(absolute, results[n + 1:n + 1 + len(absolute)]):
        found[path] = None if res.returncode != 0 else res.stdout.encode("latin-1")
    age_of = ages_result(results[-1].stdout, ages) if ages and results[-1].returncode == 0 else {}
    texts: dict[str, str | None] = {}
    for path in files:
        data = found.get(path)
        if data is not None and path.endswith("stderr"):
            data = data[-TAIL_BYTES:]
        texts[path] = None if data is None else data.decode("utf-8", errors="replace")
    return Snapshot(acct, queue, texts, by_name, age_of)


def _common_folder(paths: Sequence[str]) -> str:
    """The folder every relative path is under, with its trailing slash ("" when none): the
    common prefix cut back to its last slash (posixpath.commonpath took 30 ms for 5,500)."""
    prefix = os.path.commonprefix(list(paths)) if paths else ""
    return prefix[:prefix.rfind("/") + 1]
