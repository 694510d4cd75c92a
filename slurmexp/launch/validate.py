"""Checks that run before anything is submitted, so a sweep cannot waste a queue wait.

Slurm's default `EnforcePartLimits=NO` accepts a job over a partition or QOS limit and lets
it pend forever; a typo in a GPU type does the same. So every limit is checked here, first
against site.toml (static, no cluster needed), then against the live cluster, and last with
`sbatch --test-only`. All problems are collected and reported together; a check that could
not run (sacctmgr not readable, controller down) is named in `skipped`, never guessed.
"""
from __future__ import annotations

import getpass
import shlex
import string
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable

from slurmexp import units
from slurmexp.backends.facts import ClusterFacts
from slurmexp.errors import Problem, SlurmUnavailable
from slurmexp.launch.capacity import capacity_problems
from slurmexp.sites.model import Site
from slurmexp.sweep.plan import Plan, Resources
from slurmexp.sweep.spec import Sweep

# Interpreters whose first non-option argument is the script the command runs.
INTERPRETERS = {"python", "python3", "bash", "sh", "zsh", "Rscript", "julia", "perl", "ruby", "node",
                "torchrun", "accelerate", "srun", "mpirun", "apptainer", "singularity", "uv", "time"}
# A reservation that starts within this window counts as "starts soon".
RESERVATION_SOON = timedelta(hours=24)


@dataclass
class ValidationReport:
    problems: list[Problem] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)   # checks not run, with why
    checked: list[str] = field(default_factory=list)   # checks that ran
    # Set when Slurm did not answer the live checks: validate and launch then exit 3 (could
    # not decide; launch writes nothing) unless a problem already refuses the sweep (exit 2).
    unavailable: SlurmUnavailable | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        lines = [p.format() for p in self.problems]
        lines += [f"skipped: {s}" for s in self.skipped]
        return "\n".join(lines)


# The sweep key a route problem is about, from the words route_problems uses.
_ROUTE_KEYS = [("reservation", "resources.reservation"), ("GPU type", "resources.gpu_type"),
               ("GPUs", "resources.gpus"), ("time ", "resources.time"), ("qos", "resources.qos"),
               ("cpus", "resources.cpus"), ("mem ", "resources.mem"), ("constraint", "resources.constraint"),
               ("nodes ", "resources.nodes"), ("partition", "resources.partition")]


def _route_key(message: str) -> str:
    for word, key in _ROUTE_KEYS:
        if word in message:
            return key
    return "resources"


# ----------------------------------------------------------------------------------------
# Static: the sweep against site.toml and the local file system
# ----------------------------------------------------------------------------------------


def static_problems(sweep: Sweep, site: Site, plan: Plan) -> list[Problem]:
    file = str(sweep.path)
    out: list[Problem] = []
    for chunk in plan.first_chunks():
        placement = plan.placements[chunk.group]
        res = chunk.resources
        if placement.partition in placement.excluded:
            out += _placement_problems(file, sweep, site, res, placement.excluded)
        out += _qos_problems(file, site, res)
    total = len(plan.runs)
    if site.max_job_count and total >= site.max_job_count:     # Slurm refuses at >=
        out.append(Problem(file, "params", f"{total} runs reach the cluster's MaxJobCount "
                           f"({site.max_job_count}): the tasks could never all be queued",
                           "split the sweep into several sweeps, or ask the admins", "max_job_count"))
    if site.max_submit_jobs and total > site.max_submit_jobs:
        out.append(Problem(file, "params", f"{total} runs exceed MaxSubmitJobs ({site.max_submit_jobs}) "
                           "per user", "split the sweep, or launch the rest after some finish",
                           "max_submit_jobs"))
    out += file_problems(sweep)
    return out


def _placement_problems(file: str, sweep: Sweep, site: Site, res: Resources,
                        excluded: dict[str, str]) -> list[Problem]:
    out: list[Problem] = []
    asked = bool(sweep.resources.partition)
    for partition, why in excluded.items():
        for message in why.split("; "):
            key = _route_key(message)
            fix = _route_fix(key, site, res, partition)
            where = f"partition {partition}" if asked else f"routed candidate {partition}"
            out.append(Problem(file, key, f"{where}: {message}", fix, "route"))
    if not asked and len(excluded) > 1:
        out.insert(0, Problem(file, "resources", "no partition of the site can take these runs",
                              "see each candidate below", "route"))
    return out


def _route_fix(key: str, site: Site, res: Resources, partition: str) -> str:
    if key == "resources.time":
        part = site.partitions.get(partition)
        return f"ask for at most {part.max_time} or pick a partition with a longer max_time" if part else ""
    if key == "resources.gpu_type":
        kinds = sorted({k for n in site.nodes.values() for k in n.gpus})
        return f"use one of the GPU types the site has: {', '.join(kinds) or 'none'}"
    if key == "resources.gpus":
        most = max((n.gpu_count for n in site.nodes.values()), default=0)
        return f"ask for at most {most} GPUs per task (one task runs on one node)"
    if key == "resources.partition":
        return f"use one of: {', '.join(site.partitions)}"
    if key == "resources.reservation":
        return f"use one of: {', '.join(site.reservations) or 'no reservations defined'}"
    if key == "resources.cpus" or key == "resources.mem":
        return "ask for less per task, or pick a partition with bigger nodes"
    return ""


def _qos_problems(file: str, site: Site, res: Resources) -> list[Problem]:
    if not res.qos:
        return []
    qos = site.qos.get(res.qos)
    if qos is None:
        if not site.qos:
            return []  # the site file lists no QOS at all: leave it to the live check
        return [Problem(file, "resources.qos", f"QOS {res.qos!r} is not defined in {site.path}",
                        f"use one of: {', '.join(site.qos)}", "qos")]
    out = []
    if qos.max_wall_min is not None and res.time_min > qos.max_wall_min:
        out.append(Problem(file, "resources.time", f"time {units.format_time(res.time_min)} over QOS "
                           f"{res.qos} MaxWall {qos.max_wall}",
                           f"ask for at most {qos.max_wall} or use another QOS", "qos"))
    for limits, what in ((qos.max_tres_pu, "MaxTRESPerUser"), (qos.max_tres_pj, "MaxTRESPerJob")):
        out += _tres_problems(file, res, limits, f"QOS {res.qos} {what}")
    return out


def _tres_problems(file: str, res: Resources, limits: dict[str, int], what: str) -> list[Problem]:
    out = []
    gpu_cap = limits.get(f"gres/gpu:{res.gpu_type}") if res.gpu_type else None
    gpu_cap = gpu_cap if gpu_cap is not None else limits.get("gres/gpu")
    if res.gpus and gpu_cap is not None and res.gpus > gpu_cap:
        out.append(Problem(file, "resources.gpus", f"{res.gpus} GPUs per task over {what} gres/gpu={gpu_cap}: "
                           "the task would pend forever", f"ask for at most {gpu_cap} GPUs", "qos"))
    cpu_cap = limits.get("cpu")
    if cpu_cap is not None and res.cpus > cpu_cap:
        out.append(Problem(file, "resources.cpus", f"{res.cpus} cpus per task over {what} cpu={cpu_cap}",
                           f"ask for at most {cpu_cap} cpus", "qos"))
    return out


def _command_words(command: str) -> list[str]:
    # Placeholders stand for one quoted word each; replace them before tokenising.
    parts = []
    for literal, name, _spec, _conv in string.Formatter().parse(command):
        parts.append(literal)
        if name is not None:
            parts.append("PLACEHOLDER")
    try:
        return shlex.split("".join(parts), comments=True)
    except ValueError:
        return []


def script_named(command: str) -> str | None:
    """The script file a command runs (`python train.py`, `./run.sh`), or None."""
    words = _command_words(command)
    while words and "=" in words[0] and not words[0].startswith(("/", ".")):
        words = words[1:]  # leading VAR=value assignments
    if not words:
        return None
    first = words[0]
    if Path(first).name in INTERPRETERS or Path(first).name.startswith("python"):
        for word in words[1:]:
            if word in ("-m", "-c", "exec", "run"):
                return None  # a module or inline code: nothing to check on disk
            if word.startswith("-") or word in INTERPRETERS:
                continue
            if word == "PLACEHOLDER":
                return None
            return word if ("/" in word or "." in word) else None
        return None
    if "/" in first and "PLACEHOLDER" not in first:
        return first
    return None


def file_problems(sweep: Sweep) -> list[Problem]:
    file = str(sweep.path)
    out: list[Problem] = []
    workdir = Path(sweep.workdir)
    if not workdir.is_dir():
        out.append(Problem(file, "workdir", f"workdir {workdir} does not exist",
                           "create it or fix the path (relative to the sweep file)", "file"))
        return out
    script = script_named(sweep.command) if sweep.command else None
    if sweep.function:
        out += function_problems(file, sweep.function, workdir)
    if script and "$" not in script:
        path = (workdir / Path(script).expanduser())
        if not path.exists():
            out.append(Problem(file, "command", f"the command runs {script}, which does not exist in {workdir}",
                               "fix the path (relative to workdir) or create the script", "file"))
    for i, line in enumerate(sweep.env.setup):
        words = _command_words(line)
        if len(words) >= 2 and words[0] in ("source", ".") and "$" not in words[1]:
            path = workdir / Path(words[1]).expanduser()
            if not path.exists():
                out.append(Problem(file, f"env.setup[{i}]", f"{words[1]} does not exist (looked in {workdir})",
                                   "fix the path (relative to workdir) or create the file", "file"))
    return out


def function_problems(file: str, ref: str, workdir: Path) -> list[Problem]:
    """`function = "module:callable"`: the module must be findable from workdir (found, not
    imported: importing a training script here could start the training)."""
    import importlib.util
    import sys

    top = ref.partition(":")[0].split(".")[0]
    sys.path.insert(0, str(workdir))
    try:
        found = importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        found = False
    finally:
        sys.path.remove(str(workdir))
    if found:
        return []
    return [Problem(file, "function", f"module {top!r} of {ref!r} is not in {workdir} nor importable here",
                    f"create {top}.py in workdir, fix the name, or install the package", "file")]


# ----------------------------------------------------------------------------------------
# Live: the sweep against what the cluster says now
# ----------------------------------------------------------------------------------------


def live_problems(sweep: Sweep, site: Site, plan: Plan, facts: ClusterFacts) -> ValidationReport:
    file = str(sweep.path)
    report = ValidationReport(skipped=list(facts.skipped))
    out = report.problems
    user = facts.user or getpass.getuser()
    if facts.cluster and facts.cluster != site.cluster:
        out.append(Problem(str(site.path), "cluster", f"site.toml describes cluster {site.cluster!r} but "
                           f"this is {facts.cluster!r}", "run `slurmexp site discover > site.toml` here", "live"))
    if facts.max_array_size is not None and site.max_array_size > facts.max_array_size:
        out.append(Problem(str(site.path), "max_array_size", f"site.toml says {site.max_array_size}, the cluster's "
                           f"MaxArraySize is {facts.max_array_size}", f"set max_array_size = {facts.max_array_size}",
                           "live"))
    out += capacity_problems(file, plan, facts)
    groups = {c.group: c.resources for c in plan.chunks}
    for res in groups.values():
        out += _live_resource_problems(file, res, facts, user, report)
    if facts.cached_age_s is None:
        report.checked.append("live cluster")
    else:
        report.checked.append(f"live cluster (QOS and associations as sacctmgr printed them "
                              f"{facts.cached_age_s:.0f} s ago; --fresh asks again)")
    return report


def _live_resource_problems(file: str, res: Resources, facts: ClusterFacts, user: str,
                            report: ValidationReport) -> list[Problem]:
    out: list[Problem] = []
    if facts.partitions is not None:
        part = facts.partitions.get(res.partition)
        if part is None:
            out.append(Problem(file, "resources.partition", f"partition {res.partition!r} does not exist on "
                               f"cluster {facts.cluster}", f"use one of: {', '.join(facts.partitions)}", "live"))
        else:
            if part.state.upper() != "UP":
                out.append(Problem(file, "resources.partition", f"partition {res.partition} is {part.state}",
                                   "wait for it to come back or pick another partition", "live"))
            if part.max_time_min is not None and res.time_min > part.max_time_min:
                out.append(Problem(file, "resources.time", f"time {units.format_time(res.time_min)} over partition "
                                   f"{res.partition} MaxTime {units.format_time(part.max_time_min)}",
                                   f"ask for at most {units.format_time(part.max_time_min)}", "live"))
            if part.allow_qos is not None and res.qos and res.qos not in part.allow_qos:
                out.append(Problem(file, "resources.qos", f"partition {res.partition} does not allow QOS {res.qos}",
                                   f"use one of: {', '.join(part.allow_qos)}", "live"))
            if facts.nodes is not None and res.gpus:
                out += _live_gpu_problems(file, res, [facts.nodes[n] for n in part.nodes if n in facts.nodes])
    if facts.qos is not None and res.qos:
        qos = facts.qos.get(res.qos)
        if qos is None:
            out.append(Problem(file, "resources.qos", f"QOS {res.qos!r} does not exist on cluster {facts.cluster}",
                               f"use one of: {', '.join(facts.qos)}", "live"))
        else:
            if qos.max_wall_min is not None and res.time_min > qos.max_wall_min:
                out.append(Problem(file, "resources.time", f"time {units.format_time(res.time_min)} over QOS "
                                   f"{res.qos} MaxWall {units.format_time(qos.max_wall_min)}",
                                   "ask for less time or use another QOS", "live"))
            out += _tres_problems(file, res, qos.max_tres_pu, f"QOS {res.qos} MaxTRESPerUser")
            out += _tres_problems(file, res, qos.max_tres_pj, f"QOS {res.qos} MaxTRESPerJob")
    if facts.associations is not None:
        out += _association_problems(file, res, facts, user)
    if res.reservation and facts.reservations is not None:
        out += _reservation_problems(file, res, facts, user)
    return out


def _live_gpu_problems(file: str, res: Resources, nodes: list) -> list[Problem]:
    if res.gpu_type:
        most = max((n.gres.get(res.gpu_type, 0) for n in nodes), default=0)
        kinds = sorted({k for n in nodes for k in n.gres if k})
        if most == 0:
            return [Problem(file, "resources.gpu_type", f"no node of partition {res.partition} has GPU type "
                            f"{res.gpu_type}", f"use one of: {', '.join(kinds) or 'no GPUs here'}", "live")]
    else:
        most = max((sum(n.gres.values()) for n in nodes), default=0)
    if most < res.gpus:
        return [Problem(file, "resources.gpus", f"{res.gpus} GPUs per task, but no node of partition "
                        f"{res.partition} has more than {most}", f"ask for at most {most}", "live")]
    return []


def _association_problems(file: str, res: Resources, facts: ClusterFacts, user: str) -> list[Problem]:
    mine = [a for a in facts.associations if a.user == user]
    if not mine:
        return [Problem(file, "resources.account", f"user {user} has no association on cluster {facts.cluster}",
                        "ask the admins to add you to an account (sacctmgr add user ...)", "live")]
    if res.account:
        accounts = [a for a in mine if a.account == res.account]
        if not accounts:
            return [Problem(file, "resources.account", f"user {user} has no association with account "
                            f"{res.account!r}", f"use one of: {', '.join(sorted({a.account for a in mine}))}",
                            "live")]
        mine = accounts
    if res.qos and not any(res.qos in a.qos for a in mine if a.qos):
        allowed = sorted({q for a in mine for q in a.qos})
        if allowed:
            return [Problem(file, "resources.qos", f"QOS {res.qos} is not allowed for user {user} in account "
                            f"{res.account or mine[0].account}", f"use one of: {', '.join(allowed)}", "live")]
    return []


def _reservation_problems(file: str, res: Resources, facts: ClusterFacts, user: str) -> list[Problem]:
    resv = facts.reservations.get(res.reservation)
    if resv is None:
        return [Problem(file, "resources.reservation", f"reservation {res.reservation!r} does not exist",
                        f"use one of: {', '.join(facts.reservations) or 'none exists now'} "
                        "(scontrol show reservation)", "live")]
    out = []
    now = datetime.now()
    if resv.state.upper() != "ACTIVE":
        if resv.start is None or resv.start - now > RESERVATION_SOON:
            out.append(Problem(file, "resources.reservation", f"reservation {res.reservation} is not active "
                               f"(starts {resv.start})", "wait, or drop the reservation", "live"))
    if resv.end is not None and resv.end < now:
        out.append(Problem(file, "resources.reservation", f"reservation {res.reservation} ended at {resv.end}",
                           "drop the reservation", "live"))
    admitted = (user in resv.users) or (res.account is not None and res.account in resv.accounts)
    if (resv.users or resv.accounts) and not admitted:
        out.append(Problem(file, "resources.reservation", f"reservation {res.reservation} does not admit user "
                           f"{user}" + (f" or account {res.account}" if res.account else ""),
                           "ask the reservation's owner to add you", "live"))
    return out


# ----------------------------------------------------------------------------------------
# The whole validation
# ----------------------------------------------------------------------------------------


def validate(sweep: Sweep, site: Site, plan: Plan, *, facts: ClusterFacts | None = None,
             test_only: Callable[[], list[tuple[str, str]]] | None = None) -> ValidationReport:
    """Static checks, then live ones when `facts` is given, then `sbatch --test-only`.

    `test_only` returns (chunk description, Slurm's refusal) pairs; it runs only when nothing
    else failed, because Slurm's own message is less precise than ours.
    """
    report = ValidationReport(problems=static_problems(sweep, site, plan), checked=["site.toml", "files"])
    if facts is None:
        report.skipped.append("live cluster checks (no cluster: --backend local or --offline)")
    else:
        live = live_problems(sweep, site, plan, facts)
        report.problems += live.problems
        report.skipped += live.skipped
        report.checked += live.checked
    if test_only is not None:
        if report.problems:
            report.skipped.append("sbatch --test-only (other problems first)")
        else:
            for what, message in test_only():
                report.problems.append(Problem(str(sweep.path), "resources",
                                               f"sbatch --test-only refused {what}: {message}",
                                               "see Slurm's message; check the resources asked for", "test_only"))
            report.checked.append("sbatch --test-only")
    return report
