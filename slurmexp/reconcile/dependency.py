"""A `[depends]` that can never be met: DEPENDENCY_FAILED instead of an endless PENDING.

Launch submits an experiment with `[depends]` as `--dependency=afterok:<jobs>` (launch.depends).
When one of those jobs ends without completing, Slurm (with `kill_invalid_depend` unset, its
default) keeps the waiting jobs PENDING with reason `DependencyNeverSatisfied` for ever. squeue
says so at once; sacct keeps the reason "Dependency" the job was submitted with, so squeue's
reason (`PassContext.queue_reasons`) wins. A pass that sees it cancels the job (one scancel per
array job and pass) and records the attempt `states.DEPENDENCY_FAILED`, failure class
`states.DEPENDENCY`, with the experiment it waited for in the reason. The retry policy never
retries that class, and a retry of the upstream experiment does not revive it: `slurmexp
retry` of this experiment does.
When scancel does not answer the attempt stays PENDING (with why) and the next pass tries again.
"""
from __future__ import annotations

from slurmexp.arrays import split_job_id
from slurmexp.errors import SlurmexpError
from slurmexp.launch.depends import never_met_reason
from slurmexp.ledger.rows import ActiveAttempt
from slurmexp.reconcile.context import PassContext
from slurmexp.states import DEPENDENCY, DEPENDENCY_FAILED, DEPENDENCY_NEVER, PENDING


def never_met(reason: str | None) -> bool:
    """Whether Slurm's pending reason says the job's dependency can never be met."""
    return bool(reason) and DEPENDENCY_NEVER in reason


def apply_dependency(ctx: PassContext, a: ActiveAttempt, fields: dict, reason: str | None,
                     slurm_reason: str | None) -> tuple[str | None, str | None]:
    """For an attempt whose record says PENDING: (reason, failure class), with `fields["state"]`
    DEPENDENCY_FAILED and its job cancelled when Slurm says the dependency can never be met."""
    # squeue says DependencyNeverSatisfied as soon as an upstream job failed; sacct still says
    # "Dependency" (the reason at submission), so the controller's word wins when it has one.
    slurm_reason = ctx.queue_reasons.get(a.job_key) or slurm_reason
    if fields.get("state") != PENDING or not never_met(slurm_reason):
        return reason, fields.get("failure_class")
    exp = ctx.exps.get(a.exp_id)
    depends = exp["settings"].depends if exp and exp.get("settings") is not None else ()
    array_id, _, _ = split_job_id(a.job_key or "")
    job = array_id or a.job_key
    why = never_met_reason(depends, a.job_key)
    where = f"{a.exp_id} {a.run_id} job {a.job_key}"
    if ctx.dry_run:
        ctx.summary.act(f"{where}: {DEPENDENCY_NEVER}; would cancel it (DEPENDENCY_FAILED)")
    elif job not in ctx.cancelled_jobs:
        try:
            ctx.scheduler().cancel([job])
        except SlurmexpError as exc:
            ctx.summary.flagged.append(f"{where}: {DEPENDENCY_NEVER}; scancel failed: {exc.message}")
            return (f"pending: {DEPENDENCY_NEVER}; could not cancel it ({exc.message}): the next "
                    "pass tries again"), None
        ctx.cancelled_jobs.add(job)
    fields["state"], fields["failure_class"] = DEPENDENCY_FAILED, DEPENDENCY
    return why, DEPENDENCY
