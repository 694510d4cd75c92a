"""`[depends] after_ok`: the experiments a launch waits for, resolved in the ledger.

Each reference is resolved the way every command names an experiment (`report.refs`: an id,
a sweep name meaning its newest experiment, a unique prefix). Then, per experiment:

- FINISHED with every run COMPLETED: nothing to wait for (no dependency at all);
- FINISHED_WITH_FAILURES, FAILED or CANCELLED, or an attempt that already ended without
  completing: refused (exit 2), since sbatch's afterok on its jobs could never be met;
- still going: every array is submitted with `--dependency=afterok:<job>[:<job>...]` over all
  of its recorded jobs (an array job id waits for all its tasks). An experiment whose arrays
  are not all submitted yet (open intents, runs still PLANNED) is refused: launch it again
  once `slurmexp status` shows them submitted.

What was resolved is kept in the experiment's settings (`settings.DependsSettings`); `explain`
and `dry_run_text` describe it, reconcile names it when a dependency can never be met.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from slurmexp.errors import Problem, SlurmexpError, ValidationError
from slurmexp.settings import DependsSettings
from slurmexp.states import COMPLETED, FINISHED_EXPERIMENT_STATES, PLANNED, STOPPED_EXPERIMENT_STATES, TERMINAL_STATES

if TYPE_CHECKING:  # pragma: no cover
    from slurmexp.ledger import Ledger
    from slurmexp.sweep.spec import Sweep

KEY = "depends.after_ok"


def _refused(path: Path, message: str, fix: str) -> ValidationError:
    return ValidationError(f"{path}: [depends] refused; nothing was submitted",
                           [Problem(str(path), KEY, message, fix)])


def resolve(sweep: Sweep, ledger: Ledger, *, kind: str | None = None) -> tuple[DependsSettings, ...]:
    """The experiments `sweep`'s [depends] names, with the jobs to wait for; ValidationError
    (exit 2) for a reference that names none or several, or one that can never be met, and
    (`kind`: a backend that cannot wait for Slurm jobs, e.g. "local") for one not done yet."""
    if sweep.depends is None:
        return ()
    from slurmexp.report.refs import resolve_experiment

    out: list[DependsSettings] = []
    exps = ledger.experiments()
    for ref in sweep.depends.after_ok:
        try:
            exp_id = resolve_experiment(ledger, ref, exps)
        except SlurmexpError as exc:
            problem = exc.problems[0] if exc.problems else None
            fix = problem.fix if problem and problem.fix else "see `slurmexp status` for the experiments"
            listed = "" if "no experiments yet" in fix else " (`slurmexp status` lists them)"
            raise _refused(sweep.path, f"{exc.message}" + (f" ({problem.message})" if problem else ""),
                           fix + listed) from None
        if any(d.exp_id == exp_id for d in out):
            continue
        out.append(_one(sweep.path, ledger, ref, exp_id))
    waiting = [d for d in out if d.job_ids]
    if kind is not None and waiting:
        raise _refused(sweep.path, f"the {kind} backend runs at once and cannot wait for Slurm "
                                   f"jobs ({waiting[0].exp_id} is not FINISHED yet)",
                       "launch it with the slurm backend, or once that experiment has FINISHED")
    return tuple(out)


def _one(path: Path, ledger: Ledger, ref: str, exp_id: str) -> DependsSettings:
    exp = ledger.get_experiment(exp_id, required=True)
    counts = ledger.counts_by_state(exp_id)
    failed = {s: n for s, n in counts.items() if s in TERMINAL_STATES and s != COMPLETED}
    named = f"{ref!r} is experiment {exp_id}" if ref != exp_id else f"experiment {exp_id}"
    if exp["state"] in FINISHED_EXPERIMENT_STATES and not failed \
            and set(counts) <= {COMPLETED}:
        return DependsSettings(ref, exp_id, ())          # done: nothing to wait for
    if exp["state"] in FINISHED_EXPERIMENT_STATES | STOPPED_EXPERIMENT_STATES or failed:
        what = ", ".join(f"{n} {s}" for s, n in sorted(failed.items())) or exp["reason"] or "no runs completed"
        return _raise(path, f"{named}, which is {exp['state']} ({what}): it can never complete, "
                            "so this experiment would wait forever",
                      f"`slurmexp retry {exp_id}` and launch this once it has FINISHED, or "
                      "remove [depends]")
    if ledger.intents(exp_id) or counts.get(PLANNED):
        return _raise(path, f"{named}, which has runs not submitted yet ({counts.get(PLANNED, 0)} "
                            f"PLANNED, {len(ledger.intents(exp_id))} open submission(s))",
                      f"`slurmexp reconcile`, then launch this again once `slurmexp status "
                      f"{exp_id}` shows them submitted")
    jobs = list(dict.fromkeys(s.job_id for s in ledger.recorded_submissions(exp_id) if s.job_id))
    if exp["backend"] != "slurm" or not jobs:
        return _raise(path, f"{named} ({exp['backend']} backend, {exp['state']}), which has no "
                            "Slurm jobs to wait for",
                      f"wait until `slurmexp status {exp_id}` says FINISHED, then launch this")
    return DependsSettings(ref, exp_id, tuple(jobs))


def _raise(path: Path, message: str, fix: str) -> DependsSettings:
    raise _refused(path, message, fix)


def sbatch_args(depends: tuple[DependsSettings, ...]) -> tuple[str, ...]:
    """The sbatch option every array of the experiment is submitted with (none when nothing
    is left to wait for)."""
    jobs = [j for d in depends for j in d.job_ids]
    return (f"--dependency=afterok:{':'.join(jobs)}",) if jobs else ()


def describe(depends: tuple[DependsSettings, ...]) -> str:
    """The chain, for `explain` and `--dry-run`: what this experiment waits for."""
    if not depends:
        return ""
    lines = ["depends (after_ok):"]
    for d in depends:
        named = f"{d.exp_id} ({d.ref!r})" if d.ref != d.exp_id else d.exp_id
        if d.job_ids:
            lines.append(f"  this experiment waits for {named}: {len(d.job_ids)} job(s) "
                         f"({', '.join(d.job_ids)}); sbatch --dependency=afterok")
        else:
            lines.append(f"  {named} already FINISHED with every run COMPLETED: nothing to wait for")
    return "\n".join(lines)


def check_retry(ledger: Ledger, exp_id: str, depends: tuple[DependsSettings, ...]) -> None:
    """`slurmexp retry` of an experiment with [depends] submits without a dependency, so only
    once every experiment it waits for has FINISHED with every run COMPLETED; ValidationError
    (exit 2) naming the one that has not."""
    for d in depends:
        exp = ledger.get_experiment(d.exp_id)
        if exp is None:
            continue                 # removed since: nothing left to wait for
        counts = ledger.counts_by_state(d.exp_id)
        if exp["state"] in FINISHED_EXPERIMENT_STATES and set(counts) <= {COMPLETED}:
            continue
        shown = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        raise ValidationError(f"retry of {exp_id} refused: it waits for {d.exp_id} ([depends])", [Problem(
            "", KEY, f"{d.exp_id} is {exp['state']} ({shown}), not FINISHED with every run COMPLETED; "
            "a retry is submitted without a dependency and would run before it",
            f"`slurmexp retry {d.exp_id}`, then `slurmexp retry {exp_id}` once `slurmexp status "
            f"{d.exp_id}` says FINISHED")])


def never_met_reason(depends: tuple[DependsSettings, ...], job_key: str) -> str:
    """Why a job Slurm holds with DependencyNeverSatisfied is DEPENDENCY_FAILED."""
    names = ", ".join(d.exp_id for d in depends if d.job_ids) or "an upstream experiment"
    return (f"DEPENDENCY_FAILED: a job of experiment {names} did not complete (afterok): "
            f"dependency can never be met; job {job_key} cancelled by slurmexp. "
            f"`slurmexp retry` this experiment once {names} has FINISHED")
