"""`launch --skip-completed`: extending a sweep without running again what already completed.

Every run is recorded with a reuse key: a hash of what decides its outcome, the command (the
sweep's command template, or the function's runner, with its parameters), the workdir, the
environment, the cluster and the resources of its group (partition, time, memory, CPUs, GPUs, QOS, ...).
A run of a new launch whose run id and reuse key match a COMPLETED run of another experiment
(one that ran it, not one that reused it in turn) can be reused: with the flag it is left out
of the arrays and recorded COMPLETED in the new experiment, marked reused with the source
experiment, attempt and its run folder (so the report reads its metrics from there); without
it, launch only says how many could be.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from slurmexp import arrays
from slurmexp.settings import NotifySettings
from slurmexp.sweep.expand import params_text
from slurmexp.sweep.plan import ArrayChunk, Plan, Resources, Run, command_text

if TYPE_CHECKING:  # pragma: no cover
    from slurmexp.launch.launcher import Prepared
    from slurmexp.ledger import Ledger
    from slurmexp.sweep.spec import Sweep

# The resources that change what a run does or where; `defaulted` is only how it was written.
_RESOURCE_FIELDS = ("partition", "time_min", "cpus", "mem_mb", "gpus", "gpu_type", "qos",
                    "account", "reservation", "constraint", "nodes", "sbatch")


@dataclass
class Reuse:
    """What a launch takes over from earlier experiments (`reused`, one dict per run in the
    shape `Ledger.add_reused_runs` takes) or, without --skip-completed, could (`skippable`)."""

    prep: Prepared
    reused: list[dict] = field(default_factory=list)
    skippable: int = 0
    sources: list[str] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)     # run id -> reuse key, of every run

    def message(self, total: int) -> str:
        """The one line launch prints on stderr about reuse, or ""."""
        where = ", ".join(self.sources[:3]) + (" ..." if len(self.sources) > 3 else "")
        if self.reused:
            return (f"reused {len(self.reused)} of {total} run(s) that completed with the same "
                    f"command and resources in {where}; {total - len(self.reused)} to run")
        if self.skippable:
            return (f"{self.skippable} of {total} run(s) completed before with the same command "
                    f"and resources (in {where}); launch with --skip-completed to reuse them "
                    f"instead of running them again")
        return ""


def _group_part(prep: Prepared, resources: Resources) -> str:
    """What every run of a resource group shares in its key, as one canonical text."""
    sweep = prep.sweep
    data = {"command": command_text(sweep), "workdir": str(sweep.workdir),
            "env": sweep.env.model_dump(mode="json"), "cluster": prep.site.cluster,
            "resources": {f: getattr(resources, f) for f in _RESOURCE_FIELDS}}
    return json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))


def reuse_key(prep: Prepared, resources: Resources, run: Run, group: str | None = None) -> str:
    params = params_text(run)
    text = (group if group is not None else _group_part(prep, resources)) + "\n" + params
    return hashlib.sha256(text.encode()).hexdigest()


def reuse_keys(prep: Prepared) -> dict[str, str]:
    """Run id -> reuse key, for every run of the plan's chunks (the group's part once)."""
    keys: dict[str, str] = {}
    for chunk in prep.plan.chunks:
        group = _group_part(prep, chunk.resources)
        for run in chunk.runs:
            keys[run.run_id] = reuse_key(prep, chunk.resources, run, group)
    return keys


def plan_reuse(prep: Prepared, ledger: Ledger, *, skip: bool, exp_id: str | None = None) -> Reuse:
    """Which runs of `prep` completed elsewhere; with `skip`, `prep` without them."""
    keys = reuse_keys(prep)
    found = ledger.completed_by_reuse_key(keys.values(), exclude_exp=exp_id)
    hits = {run_id: found[(run_id, key)] for run_id, key in keys.items() if (run_id, key) in found}
    sources = sorted({row["exp_id"] for row in hits.values()})
    if not skip or not hits:
        return Reuse(prep, skippable=len(hits), sources=sources, keys=keys)
    reused = [{"run_id": run.run_id, "idx": run.index, "params": run.params, "seed": run.seed,
               "source": run.source, "reuse_key": keys[run.run_id],
               "from_exp": hits[run.run_id]["exp_id"], "run_dir": hits[run.run_id]["run_dir"],
               "attempt_id": hits[run.run_id]["attempt_id"],
               "job_key": hits[run.run_id]["job_key"]}
              for run in prep.plan.runs if run.run_id in hits]
    return Reuse(dataclasses.replace(prep, plan=_without(prep.plan, set(hits))), reused,
                 sources=sources, keys=keys)


def _without(plan: Plan, run_ids: set[str]) -> Plan:
    """The plan less `run_ids`: each chunk keeps its other runs (so stays within MaxArraySize),
    empty chunks go, and the rest are numbered again from 0."""
    chunks: list[ArrayChunk] = []
    offsets: dict[int, int] = {}
    for chunk in plan.chunks:
        runs = [r for r in chunk.runs if r.run_id not in run_ids]
        if not runs:
            continue
        offset = offsets.get(chunk.group, 0)
        offsets[chunk.group] = offset + len(runs)
        chunks.append(dataclasses.replace(chunk, chunk=len(chunks), runs=runs, offset=offset))
    if plan.throttle is not None:   # the arrays changed size: array_parallelism shared again
        for chunk, share in zip(chunks, arrays.split_throttle([c.size for c in chunks], plan.throttle)):
            chunk.throttle = share
    return Plan(runs=[r for r in plan.runs if r.run_id not in run_ids],
                placements=plan.placements, chunks=chunks, throttle=plan.throttle, groups=plan.groups)


def record(ledger: Ledger, exp_id: str, prep: Prepared, reused: list[dict]) -> None:
    """Inside launch's transaction: the reused runs, and the [notify] command as due."""
    ledger.add_reused_runs(exp_id, reused)
    if prep.sweep.notify is not None:
        ledger.set_notify_pending(exp_id)


def finish_all_reused(ledger: Ledger, exp_id: str, result: Any) -> Any:
    """An experiment whose every run was reused has nothing to submit: it is FINISHED now
    (its [notify] command runs at the next reconcile pass)."""
    ledger.set_experiment_state(exp_id, "FINISHED", "every run reused; nothing submitted")
    result.message = "every run completed before: nothing submitted"
    return result


def notify_settings(sweep: Sweep) -> NotifySettings | None:
    """The sweep's [notify] as the experiment keeps it (reconcile.notify runs it)."""
    n = sweep.notify
    return NotifySettings(n.command, n.timeout_s, str(sweep.workdir)) if n is not None else None
