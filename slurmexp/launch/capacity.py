"""Room in the queue: whether a sweep's runs fit under the cluster's job limits now, and what
launch says when Slurm refuses an array anyway.

Every array task counts as a job. Slurm refuses a new array when
`jobs in memory + its tasks >= MaxJobCount` (slurmctld's `_create_job_record`: at `>=`, not
`>`), and a QOS or association submit limit when `the user's jobs in it + the tasks > limit`
(captured/22.05/sbatch_max_submit_refused.txt). Both count what is queued already, so the check
takes the user's queue (one squeue, by QOS, in `ClusterFacts.queued_by_qos`) off the limit. The
user's queue is all that can be known cheaply: other users' jobs count against MaxJobCount too,
which is why a later array can still be refused, and why launch then says which runs are not
submitted and how to submit them (`record_partly_submitted`) instead of exiting 0.
"""
from __future__ import annotations

from collections.abc import Sequence

from slurmexp.backends.facts import ClusterFacts
from slurmexp.errors import Problem, SlurmexpError, SlurmQueueLimit
from slurmexp.sweep.plan import ArrayChunk, Plan


def _default_qos(facts: ClusterFacts, account: str | None) -> str | None:
    """The QOS a job without --qos gets: its association's DefaultQOS."""
    for a in facts.associations or ():
        if a.user == facts.user and (account is None and a.is_default_account or a.account == account):
            return a.default_qos
    return None


def capacity_problems(file: str, plan: Plan, facts: ClusterFacts) -> list[Problem]:
    """MaxJobCount and the QOS MaxSubmitJobsPerUser limits against the sweep's runs plus the
    user's queued jobs. Without the queue (squeue did not answer) the runs alone are counted."""
    out: list[Problem] = []
    queued = facts.queued_by_qos or {}
    mine = sum(queued.values())
    total = len(plan.runs)
    now = f" plus the {mine} job(s) you have queued" if mine else ""
    if facts.max_job_count is not None and total + mine >= facts.max_job_count:
        room = max(facts.max_job_count - mine - 1, 0)
        out.append(Problem(
            file, "params", f"{total} runs{now} reach the cluster's MaxJobCount "
            f"({facts.max_job_count}; Slurm refuses an array once the queue would hold that "
            f"many jobs, every array task counting): at most {room} fit now",
            "split the sweep, or launch once some of your queued jobs have ended", "max_job_count"))
    by_qos: dict[str | None, int] = {}
    for chunk in plan.chunks:
        qos = chunk.resources.qos or _default_qos(facts, chunk.resources.account)
        by_qos[qos] = by_qos.get(qos, 0) + chunk.size
    for qos, n in sorted(by_qos.items(), key=lambda kv: str(kv[0])):
        limit = (facts.qos or {}).get(qos or "")
        if limit is None or not limit.max_submit_pu:
            continue
        had = queued.get(qos, 0)
        if n + had > limit.max_submit_pu:
            had_text = f" plus the {had} you have queued in it" if had else ""
            out.append(Problem(
                file, "resources.qos", f"{n} runs in QOS {qos}{had_text} exceed its "
                f"MaxSubmitJobsPerUser ({limit.max_submit_pu}): at most "
                f"{max(limit.max_submit_pu - had, 0)} fit now",
                "split the sweep, use another QOS, or launch once some jobs have ended",
                "max_submit_jobs"))
    return out


def queued_note(slurm) -> str:
    """How many jobs (array tasks) the user has queued now, in words; one squeue."""
    try:
        rows = slurm.queue()
    except SlurmexpError:
        return ""
    return f"; you have {len(rows)} job(s) (array tasks) in the queue now (squeue --me)"


def with_queue_count(error: SlurmexpError, slurm) -> SlurmexpError:
    """A first array refused for a queue limit: say how full the queue is and what to do."""
    if not isinstance(error, SlurmQueueLimit):
        return error
    return SlurmQueueLimit(
        f"{error.message}{queued_note(slurm)}; nothing was submitted. Wait until some of your "
        "jobs have ended, or split the sweep, then launch again with --new",
        error.problems, limit=error.limit)


def record_partly_submitted(ledger, exp_id: str, chunks: Sequence[ArrayChunk], job_ids: list[str],
                            refused: ArrayChunk, error: SlurmexpError, slurm) -> tuple[list[str], str]:
    """A later array was refused (a queue limit, usually): the arrays before it are queued and
    stay; the refused one and those after it are not submitted. Their runs stay PLANNED with
    the reason; returns their ids and what launch says (which runs, how to submit them)."""
    rest = [c for c in chunks if c.chunk >= refused.chunk]
    run_ids = [r.run_id for c in rest for r in c.runs]
    later = [r.run_id for c in rest if c.chunk != refused.chunk for r in c.runs]
    if later:
        ledger.set_run_state(exp_id, later, "PLANNED",
                             f"not submitted: sbatch refused chunk {refused.chunk} before it")
    note = queued_note(slurm) if isinstance(error, SlurmQueueLimit) else ""
    shown = ", ".join(run_ids[:3]) + (f" ... {run_ids[-1]}" if len(run_ids) > 3 else "")
    return run_ids, (
        f"{exp_id}: {len(job_ids)} of {len(chunks)} array(s) submitted ({', '.join(job_ids)}); "
        f"sbatch refused chunk {refused.chunk}: {error.message}{note}. Not submitted: "
        f"{len(run_ids)} run(s) in chunk(s) {', '.join(str(c.chunk) for c in rest)} ({shown}). "
        f"Submit them once the queue has room: `slurmexp retry {exp_id} --unsubmitted`")
