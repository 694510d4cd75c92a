"""Intents: submissions whose sbatch outcome is unknown (launch or a retry died, or sbatch timed
out). A tagged job submitted after the intent is adopted; an intent with no such job after the
grace period is closed FAILED, and its runs stay PLANNED for the next submission.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta

from slurmexp.arrays import task_set
from slurmexp.backends.facts import SacctRow
from slurmexp.ledger import Ledger
from slurmexp.ledger.rows import Submission
from slurmexp.reconcile.context import PassContext
from slurmexp.reconcile.match import SUBMIT_SKEW_S, is_incomplete
from slurmexp.reconcile.transitions import chunk_job_name
from slurmexp.timeutil import parse_ts, sacct_time

# --- intents ------------------------------------------------------------------------------


def _recorded_jobs(ledger: Ledger, exp_id: str) -> list[tuple[str, datetime | None, datetime | None]]:
    """(job id, submit time, intent time) of the experiment's recorded submissions."""
    return [(str(s.job_id), parse_ts(s.submit_time), parse_ts(s.created))
            for s in ledger.recorded_submissions(exp_id)]


def _same_job(job_id: str, submit: datetime, rec_job: str, rec_submit: datetime | None,
              rec_created: datetime | None) -> bool:
    """Whether a recorded submission (job id, submit, intent time) is this job."""
    if rec_job != job_id:
        return False
    if rec_submit is not None:
        return abs((rec_submit - submit).total_seconds()) < 1
    # No submit time recorded yet: the same job if its intent came shortly before the job.
    return rec_created is None or (submit - timedelta(hours=1) <= rec_created
                                   <= submit + timedelta(seconds=SUBMIT_SKEW_S))


def _jobs_by_name(records: Iterable[SacctRow]) -> dict[str, dict[str, dict]]:
    """name -> job id -> {"submit": earliest submit, "tasks": set, "comment": ...}."""
    out: dict[str, dict[str, dict]] = defaultdict(dict)
    for r in records:
        if not r.job_name or is_incomplete(r):
            continue
        job = r.array_job_id or r.job_id
        info = out[r.job_name].setdefault(job, {"submit": None, "tasks": set(), "comment": None})
        ts = parse_ts(r.submit)
        if ts is not None and (info["submit"] is None or ts < info["submit"]):
            info["submit"] = ts
        if r.array_task is not None:
            info["tasks"].add(r.array_task)
        for t in r.pending_tasks or ():
            info["tasks"].add(t)
        info["comment"] = info["comment"] or r.comment
    return out


def _resolve_intents(ctx: PassContext, intents: list[Submission], name_rows: list[SacctRow],
                     queue: list[SacctRow]) -> bool:
    """Adopt each INTENT's job, or close an intent that provably made none. True if changed."""
    ledger, summary = ctx.ledger, ctx.summary
    jobs = _jobs_by_name([*name_rows, *queue])
    taken: set[tuple[str, str]] = set()
    changed = False
    for s in intents:
        name = chunk_job_name(s.exp_id, s.chunk)
        created = parse_ts(s.created)
        lo = created - timedelta(seconds=SUBMIT_SKEW_S) if created else None
        wanted = task_set(s.array_spec)
        recorded = _recorded_jobs(ledger, s.exp_id)
        candidates = []
        for job_id, info in jobs.get(name or "", {}).items():
            submit = info["submit"]
            if (name, job_id) in taken or submit is None or (lo is not None and submit < lo):
                continue
            if info["comment"] and info["comment"] != f"slurmexp:{s.exp_id}":
                continue
            if wanted is not None and info["tasks"] and not info["tasks"] <= wanted:
                continue
            if any(_same_job(job_id, submit, *rec) for rec in recorded):
                continue    # a job some other submission already recorded
            candidates.append((submit, job_id))
        if candidates:
            submit, job_id = min(candidates)
            taken.add((name, job_id))
            summary.adopted += 1
            summary.act(f"adopt job {job_id} ({name}) for submission {s.sub_id}")
            if not ctx.dry_run:
                ledger.record_adopted(s.sub_id, job_id, sacct_time(submit))
                changed = True
            continue
        age = (ctx.now - created).total_seconds() if created else float("inf")
        if not ctx.queue_ok or age < ctx.grace_s:
            summary.act(f"submission {s.sub_id} ({name}): no job yet; waiting")
            continue
        message = (f"no job named {name} was found in sacct or squeue {int(age)}s after the "
                   f"intent: sbatch never created it (the submitting process died first)")
        summary.intents_failed += 1
        summary.act(f"close dead intent {s.sub_id}: {message}")
        if not ctx.dry_run:
            ledger.record_submit_failed(s.sub_id, message)
            changed = True
    return changed
