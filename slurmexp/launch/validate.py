"""Checks that run before anything is submitted, so a sweep cannot waste a queue wait.

Slurm's default `EnforcePartLimits=NO` accepts a job over a partition or QOS limit and lets
it pend forever; a typo in a GPU type does the same. So every limit is checked here, first
against site.toml (static, no cluster needed), then against the live cluster, and last with
`sbatch --test-only`. All problems are collected and reported together; a check that could
not run (sacctmgr not readable, controller down) is named in `skipped`, never guessed.
"""
from __future__ import annotations

import dataclasses
import getpass
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable

from slurmexp import units
from slurmexp.backends.facts import ClusterFacts
from slurmexp.errors import Problem, SlurmUnavailable
from slurmexp.launch.capacity import capacity_problems
from slurmexp.launch.file_checks import file_problems, function_problems, script_named
from slurmexp.launch.fixes import one_of, remove_line, route_fix, set_line
from slurmexp.sites.model import Site
from slurmexp.sites.stale import rediscover_fix, stale_problems
from slurmexp.sweep.overrides import problem_key
from slurmexp.sweep.plan import Plan, Resources
from slurmexp.sweep.spec import Sweep

__all__ = ["ValidationReport", "file_problems", "function_problems", "live_problems", "script_named",
           "set_line", "static_problems", "validate"]

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


# Problems that follow from where routing placed the runs, which a stale site.toml decided.
_PLACEMENT_KEYS = {"resources", "resources.partition", "resources.gpu_type", "resources.gpus"}


def _time(res: Resources) -> str:
    return res.shown("time", f"time {units.format_time(res.time_min)}")


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
        found = []
        if placement.partition in placement.excluded:
            group = plan.group(chunk.group)
            asked = (group.request if group is not None else sweep.resources).partition
            found += _placement_problems(file, bool(asked), site, res, placement.excluded)
        found += _qos_problems(file, site, res)
        out += for_group(plan, chunk.group, found)
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


def for_group(plan: Plan, number: int, problems: list[Problem]) -> list[Problem]:
    """The problems of one resource group of a sweep with [[override]]: said of the group, and
    of the [[override]] key that set the value (`override[1].time`) rather than [resources]."""
    group = plan.group(number)
    if group is None:
        return problems
    n = len(group.runs)
    out = []
    for p in problems:
        key = problem_key(group, p.key)
        table = key.split(".", 1)[0]
        fix = p.fix.replace("in [resources]", f"in [[override]] table {table[9:-1]}") \
            if table.startswith("override[") else p.fix
        out.append(dataclasses.replace(p, key=key, fix=fix,
                                       message=f"group {number} ({n} run{'s' * (n != 1)}): {p.message}"))
    return out


def _placement_problems(file: str, asked: bool, site: Site, res: Resources,
                        excluded: dict[str, str]) -> list[Problem]:
    out: list[Problem] = []
    for partition, why in excluded.items():
        for message in why.split("; "):
            key = _route_key(message)
            fix = route_fix(key, message, site, res, partition)
            where = f"partition {partition}" if asked else f"routed candidate {partition}"
            out.append(Problem(file, key, f"{where}: {message}", fix, "route"))
    if not asked and len(excluded) > 1:
        out.insert(0, Problem(file, "resources", "no partition of the site can take these runs",
                              "see each candidate below", "route"))
    return out


def _qos_problems(file: str, site: Site, res: Resources) -> list[Problem]:
    if not res.qos:
        return []
    qos = site.qos.get(res.qos)
    if qos is None:
        if not site.qos:
            return []  # the site file lists no QOS at all: leave it to the live check
        return [Problem(file, "resources.qos", f"QOS {res.qos!r} is not defined in {site.path}",
                        one_of("qos", list(site.qos), res.qos), "qos")]
    out = []
    if qos.max_wall_min is not None and res.time_min > qos.max_wall_min:
        out.append(Problem(file, "resources.time", f"{_time(res)} over QOS {res.qos} MaxWall {qos.max_wall}",
                           f"{set_line('time', qos.max_wall)}, or use another QOS", "qos"))
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
                           f"this is {facts.cluster!r}", rediscover_fix(site), "live"))
    else:
        out += stale_problems(site, facts)
    if facts.max_array_size is not None and site.max_array_size > facts.max_array_size:
        out.append(Problem(str(site.path), "max_array_size", f"site.toml says {site.max_array_size}, the cluster's "
                           f"MaxArraySize is {facts.max_array_size}", f"set max_array_size = {facts.max_array_size}",
                           "live"))
    out += capacity_problems(file, plan, facts)
    stale = bool(out) and any(p.check == "stale_site" for p in out)
    groups = {c.group: c.resources for c in plan.chunks}
    for group, res in groups.items():
        # Placed by a stale site.toml: what the partition and its GPUs would say follows from that.
        out += for_group(plan, group, [p for p in _live_resource_problems(file, res, facts, user, report)
                                       if not (stale and p.key in _PLACEMENT_KEYS)])
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
                               f"cluster {facts.cluster}", one_of("partition", list(facts.partitions), res.partition),
                               "live"))
        else:
            if part.state.upper() != "UP":
                out.append(Problem(file, "resources.partition", f"partition {res.partition} is {part.state}",
                                   "wait for it to come back or pick another partition", "live"))
            if part.max_time_min is not None and res.time_min > part.max_time_min:
                out.append(Problem(file, "resources.time", f"{_time(res)} over partition "
                                   f"{res.partition} MaxTime {units.format_time(part.max_time_min)}",
                                   set_line("time", units.format_time(part.max_time_min)), "live"))
            exists = facts.qos is None or res.qos in facts.qos   # else: reported as not existing
            if part.allow_qos is not None and res.qos and exists and res.qos not in part.allow_qos:
                out.append(Problem(file, "resources.qos", f"partition {res.partition} does not allow "
                                   f"{res.shown('qos', f'QOS {res.qos}')}",
                                   one_of("qos", list(part.allow_qos), res.qos), "live"))
            if facts.nodes is not None and res.gpus:
                out += _live_gpu_problems(file, res, [facts.nodes[n] for n in part.nodes if n in facts.nodes])
    if facts.qos is not None and res.qos:
        qos = facts.qos.get(res.qos)
        if qos is None:
            out.append(Problem(file, "resources.qos", f"{res.shown('qos', f'QOS {res.qos!r}')} does not exist on "
                               f"cluster {facts.cluster}",
                               one_of("qos", list(facts.qos), res.qos), "live"))
        else:
            if qos.max_wall_min is not None and res.time_min > qos.max_wall_min:
                out.append(Problem(file, "resources.time", f"{_time(res)} over QOS "
                                   f"{res.qos} MaxWall {units.format_time(qos.max_wall_min)}",
                                   f"{set_line('time', units.format_time(qos.max_wall_min))}, or use another QOS",
                                   "live"))
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
                            f"{res.gpu_type}", one_of("gpu_type", kinds, res.gpu_type, none=remove_line("gpus")),
                            "live")]
    else:
        most = max((sum(n.gres.values()) for n in nodes), default=0)
    if most < res.gpus:
        return [Problem(file, "resources.gpus", f"{res.gpus} GPUs per task, but no node of partition "
                        f"{res.partition} has more than {most}",
                        set_line("gpus", most) if most else remove_line("gpus"), "live")]
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
                            f"{res.account!r}", one_of("account", sorted({a.account for a in mine}), res.account),
                            "live")]
        mine = accounts
    if res.qos and facts.qos is not None and res.qos not in facts.qos:
        return []   # a QOS that does not exist is reported as that, not as "not allowed"
    if res.qos and not any(res.qos in a.qos for a in mine if a.qos):
        allowed = sorted({q for a in mine for q in a.qos})
        if allowed:
            return [Problem(file, "resources.qos", f"{res.shown('qos', f'QOS {res.qos}')} is not allowed for "
                            f"user {user} in account {res.account or mine[0].account}",
                            one_of("qos", allowed, res.qos), "live")]
    return []


def _reservation_problems(file: str, res: Resources, facts: ClusterFacts, user: str) -> list[Problem]:
    resv = facts.reservations.get(res.reservation)
    if resv is None:
        return [Problem(file, "resources.reservation", f"reservation {res.reservation!r} does not exist",
                        one_of("reservation", list(facts.reservations), res.reservation) + " "
                        "(scontrol show reservation)", "live")]
    out = []
    now = datetime.now()
    if resv.state.upper() != "ACTIVE":
        if resv.start is None or resv.start - now > RESERVATION_SOON:
            out.append(Problem(file, "resources.reservation", f"reservation {res.reservation} is not active "
                               f"(starts {resv.start})", f"{remove_line('reservation')}, or wait for it to start",
                               "live"))
    if resv.end is not None and resv.end < now:
        out.append(Problem(file, "resources.reservation", f"reservation {res.reservation} ended at {resv.end}",
                           remove_line("reservation"), "live"))
    admitted = (user in resv.users) or (res.account is not None and res.account in resv.accounts)
    if (resv.users or resv.accounts) and not admitted:
        out.append(Problem(file, "resources.reservation", f"reservation {res.reservation} does not admit user "
                           f"{user}" + (f" or account {res.account}" if res.account else ""),
                           f"{remove_line('reservation')}, or ask the reservation's owner to add you", "live"))
    return out


# ----------------------------------------------------------------------------------------
# The whole validation
# ----------------------------------------------------------------------------------------


def _once(static: list[Problem], live: list[Problem]) -> list[Problem]:
    """One problem, one message: a live problem at a key a static one already reports (the same
    QOS typo seen in site.toml, on the cluster and in the associations) is the same problem."""
    seen = {(p.file, p.key) for p in static}
    out = []
    for problem in live:
        if (problem.file, problem.key) not in seen:
            seen.add((problem.file, problem.key))
            out.append(problem)
    return out


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
        if any(p.check == "stale_site" for p in live.problems):
            report.problems = [p for p in report.problems if p.check != "route"]
            report.skipped.append("routing against site.toml (it no longer matches the cluster)")
        report.problems += _once(report.problems, live.problems)
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
