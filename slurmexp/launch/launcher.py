"""From a sweep file to jobs in the queue: spec -> plan -> validate -> render -> ledger -> submit.

The order of writes is what makes a crash harmless: the experiment, its runs and each
chunk's submission intent are in the ledger before sbatch runs, every job carries the
experiment's tag, and the job id is recorded right after sbatch answers. A launch killed
between sbatch and that record leaves an INTENT row that `slurmexp reconcile` resolves by
finding the tagged job, so nothing is submitted twice and nothing is lost.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from slurmexp import layout
from slurmexp.backends.base import DEFAULT_KIND, backend_kind, scheduler_for
from slurmexp.backends.slurm import facts_cache
from slurmexp.errors import ExperimentExists, Problem, SlurmexpError, SlurmUnavailable, ValidationError
from slurmexp.launch import depends, remote, reuse
from slurmexp.launch.capacity import record_partly_submitted, with_queue_count
from slurmexp.launch.experiment_files import (
    files_full_error,
    make_output_dir,
    write_manifest,
    write_script,
)
from slurmexp.launch.local_run import run_local, warn_ignored_resources
from slurmexp.launch.render import ScriptContext, render_script, template_sha256
from slurmexp.launch.submission import (
    REFUSED,
    UNANSWERED,
    ChunkRequest,
    is_storage_full,
    stamp_submit_times,
    submit_chunk,
    unanswered_message,
)
from slurmexp.launch.validate import ValidationReport, live_problems, validate
from slurmexp.ledger import Ledger, provenance
from slurmexp.settings import (
    CheckpointSettings,
    DependsSettings,
    ExperimentSettings,
    GroupSettings,
    LivenessSettings,
    RemoteSettings,
    RetrySettings,
)
from slurmexp.sites.model import Site, load_site
from slurmexp.sweep.expand import params_text
from slurmexp.sweep.plan import ArrayChunk, Plan, command_for, describe, describe_tables, make_plan
from slurmexp.sweep.spec import Sweep, load_sweep
from slurmexp.tags import job_comment, job_name


@dataclass
class Prepared:
    """A parsed, planned sweep with the identity it would get; nothing written yet."""

    sweep: Sweep
    site: Site
    plan: Plan
    fingerprint: str
    base_id: str
    template: Path | None
    remote: RemoteSettings | None = None     # [remote]: where it goes on the cluster (set by launch)
    sources: dict | None = None              # [remote]: the synced sources, for the provenance
    depends: tuple[DependsSettings, ...] = ()   # [depends], resolved in the ledger (launch.depends)
    kind: str = DEFAULT_KIND                  # the backend kind it was prepared for

    def exp_dir(self, exp_id: str) -> Path:
        return layout.ExperimentPaths.under(self.sweep.output_dir, exp_id).exp_dir

    def job_paths(self, exp_id: str) -> layout.ExperimentPaths:
        """The experiment's folder as its jobs see it: here, or its copy on the [remote] cluster."""
        return layout.ExperimentPaths(self.remote.exp_dir if self.remote else self.exp_dir(exp_id))

    def job_workdir(self) -> Path:
        return Path(self.remote.src_dir) if self.remote and self.remote.src_dir else Path(self.sweep.workdir)


@dataclass
class LaunchResult:
    exp_id: str
    submitted: bool
    job_ids: list[str] = field(default_factory=list)
    message: str = ""
    report: ValidationReport | None = None
    pending_intents: int = 0      # chunks whose sbatch outcome is unknown (reconcile adopts them)
    unsubmitted: list[str] = field(default_factory=list)   # runs of chunks sbatch refused
    unanswered: SlurmUnavailable | None = None   # why sbatch's outcome is unknown (pending_intents)
    reuse_message: str = ""       # runs reused, or that --skip-completed would reuse (launch.reuse)


# ----------------------------------------------------------------------------------------
# Finding and preparing
# ----------------------------------------------------------------------------------------


def find_site(sweep_path: Path, site_path: str | Path | None = None) -> Path:
    """--site, $SLURMEXP_SITE, site.toml beside the sweep, in the cwd, in $SLURMEXP_HOME."""
    if site_path:
        return Path(site_path)
    candidates = []
    if os.environ.get("SLURMEXP_SITE"):
        candidates.append(Path(os.environ["SLURMEXP_SITE"]))
    candidates += [Path(sweep_path).resolve().parent / "site.toml", Path.cwd() / "site.toml",
                   Path(os.environ.get("SLURMEXP_HOME", Path.home() / ".slurmexp")) / "site.toml"]
    for path in candidates:
        if path.is_file():
            return path
    raise SlurmexpError("no site.toml found", [Problem(
        "", "--site", "looked in: " + ", ".join(str(c) for c in candidates),
        "run `slurmexp site discover --output site.toml` on a login node, or pass --site FILE")])


def fingerprint_of(sweep: Sweep, site: Site, backend: str = DEFAULT_KIND) -> str:
    """The experiment's identity: the sweep, the site and the backend kind it runs on (a local
    run of a sweep launched on Slurm is another experiment). The default kind adds nothing, so
    Slurm experiments keep the ids they had before the backend was part of it."""
    data = {"sweep": sweep.canonical(), "site": site.hash()}
    if backend != DEFAULT_KIND:
        data["backend"] = backend
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def prepare(sweep_path: str | Path, site_path: str | Path | None = None,
            backend: str = DEFAULT_KIND) -> Prepared:
    sweep = load_sweep(sweep_path)
    site = load_site(find_site(Path(sweep_path), site_path))
    plan = make_plan(sweep, site)
    kind = backend_kind(backend, key="--backend").kind
    fp = fingerprint_of(sweep, site, kind)
    template = sweep.template or site.template
    return Prepared(sweep, site, plan, fp, f"{sweep.name}-{fp[:8]}", Path(template) if template else None,
                    kind=kind)


def with_depends(prep: Prepared, open_ledger) -> Prepared:
    """`prep` as launch would submit it, for render, explain and --dry-run: its [depends]
    resolved in the ledger `open_ledger()` returns (opened only when the sweep has [depends]),
    and with a [remote] site the cluster's paths (sources and experiment folder), computed
    here without reaching it."""
    if prep.sweep.depends is not None:
        prep.depends = depends.resolve(prep.sweep, open_ledger())
    if prep.site.remote is not None and prep.remote is None and backend_kind(prep.kind).live_checks:
        prep.remote = remote.planned_remote(prep.site, prep.base_id, Path(prep.sweep.workdir),
                                            Path(prep.sweep.output_dir))
    return prep


def script_context(prep: Prepared, exp_id: str, chunk: ArrayChunk) -> ScriptContext:
    paths = prep.job_paths(exp_id)
    return ScriptContext(
        experiment_id=exp_id, chunk=chunk, exp_dir=paths.exp_dir, workdir=prep.job_workdir(),
        manifest_path=paths.manifest(chunk.chunk),
        runs_dir=paths.runs_dir, job_name=job_name(exp_id, chunk.chunk), comment=job_comment(exp_id),
        env_setup=list(prep.sweep.env.setup), env_modules=list(prep.sweep.env.modules),
        env_vars=dict(prep.sweep.env.vars), template=prep.template, cluster=prep.site.cluster,
        checkpoint=prep.sweep.checkpoint, heartbeat_s=prep.sweep.live.heartbeat_s)


def render_all(prep: Prepared, exp_id: str) -> list[str]:
    return [render_script(script_context(prep, exp_id, c)) for c in prep.plan.chunks]


def dry_run_text(prep: Prepared, exp_id: str | None = None, *, scripts: bool = True) -> str:
    exp_id = exp_id or prep.base_id
    lines = [f"experiment: {exp_id}", f"runs: {len(prep.plan.runs)}", describe(prep.plan)]
    lines += [x for text in describe_tables(prep.sweep) for x in ("", text)]
    if prep.depends:
        lines += ["", depends.describe(prep.depends)]
    if scripts:
        for chunk, text in zip(prep.plan.chunks, render_all(prep, exp_id)):
            lines += ["", f"# ---- chunk {chunk.chunk}: {job_name(exp_id, chunk.chunk)} "
                      f"(array {chunk.array_spec}) ----", text.rstrip()]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------


def check(prep: Prepared, backend=None, *, exp_id: str | None = None, fresh: bool = False) -> ValidationReport:
    """All checks; live ones and sbatch --test-only only when a Slurm backend is given.

    QOS and associations may come from the facts cache (unless `fresh`); a live check that
    fails on cached facts is checked again on fresh ones, so nothing is refused on a copy."""
    facts = None
    test_only = None
    if backend is not None:
        try:
            facts = backend.cluster_facts(max_age_s=0 if fresh else facts_cache.MAX_AGE_S)
            if facts.cached_age_s is not None and _live_refusal(prep, facts):
                facts = backend.cluster_facts(max_age_s=0)
        except SlurmUnavailable as exc:
            report = validate(prep.sweep, prep.site, prep.plan)
            report.skipped.append(f"live cluster checks: {exc.message}")
            report.unavailable = exc
            return report
        test_only = lambda: _test_only(prep, backend, exp_id or prep.base_id)  # noqa: E731
    return validate(prep.sweep, prep.site, prep.plan, facts=facts, test_only=test_only)


def _live_refusal(prep: Prepared, facts) -> bool:
    return bool(live_problems(prep.sweep, prep.site, prep.plan, facts).problems)


def _test_only(prep: Prepared, backend, exp_id: str) -> list[tuple[str, str]]:
    # One --test-only per resource group: the chunks of a group differ only in their size.
    refusals = []
    with tempfile.TemporaryDirectory(prefix="slurmexp-test-only-") as tmp:
        for chunk in prep.plan.first_chunks():
            path = Path(tmp) / layout.script_name(chunk.chunk)
            path.write_text(render_script(script_context(prep, exp_id, chunk)))
            ok, message = backend.test_only(path)
            if not ok:
                refusals.append((f"chunk {chunk.chunk} (partition {chunk.resources.partition})", message))
    return refusals


# ----------------------------------------------------------------------------------------
# Launch
# ----------------------------------------------------------------------------------------


def launch(sweep_path: str | Path, site_path: str | Path | None = None, *, backend: str = "slurm",
           ledger: Ledger | None = None, new: bool = False, slurm=None,
           max_parallel: int | None = None, fresh: bool = False, tags: Sequence[str] = (),
           note: str | None = None, skip_completed: bool = False) -> LaunchResult:
    """Validate, record and submit a sweep with backend kind `backend` (see backends.base);
    `tags` and `note` go with [meta]'s onto the experiment; `skip_completed` reuses runs that
    completed elsewhere with the same command and resources (launch.reuse).

    `slurm` is a scheduler to use instead of the one the factory builds for the site's cluster
    (for tests)."""
    kind = backend_kind(backend, key="--backend")
    prep = prepare(sweep_path, site_path, kind.kind)
    if kind.in_process:
        warn_ignored_resources(prep.sweep, kind.kind)
    ledger = ledger or Ledger()
    prep.depends = depends.resolve(prep.sweep, ledger, kind=None if kind.live_checks else kind.kind)
    exp_id = prep.base_id
    existing = ledger.get_experiment(exp_id)
    if existing is not None and not new:
        return _already_launched(ledger, exp_id)
    if new:
        exp_id = exp_id + ledger.next_experiment_suffix(exp_id)
    if prep.site.remote is not None and kind.live_checks:
        # Over SSH (launch.remote): sources to <root>/src/<hash>/, the runs' paths the cluster's.
        sync = remote.sync_workdir(prep.site, Path(prep.sweep.workdir), Path(prep.sweep.output_dir))
        prep.remote = remote.remote_of_site(prep.site, exp_id, Path(prep.sweep.workdir), sync)
        prep.sources = remote.provenance_entry(prep.remote, sync)
        if slurm is None:
            slurm = remote.scheduler(prep.remote, prep.site.cluster, prep.exp_dir(exp_id))
    scheduler = slurm if slurm is not None else scheduler_for(kind.kind, prep.site.cluster)
    reused = reuse.plan_reuse(prep, ledger, skip=skip_completed, exp_id=exp_id)
    total, prep = len(prep.plan.runs), reused.prep
    report = check(prep, scheduler if kind.live_checks else None, exp_id=exp_id, fresh=fresh)
    if not report.ok:
        raise ValidationError(f"{prep.sweep.path}: {len(report.problems)} problem(s); nothing was submitted",
                              report.problems)
    if report.unavailable is not None:      # the controller did not answer: nothing written
        raise report.unavailable
    try:
        # A reconciled kind's experiment is born SUBMITTING, in the transaction that records it
        # with its runs and settings: a launch killed right after leaves work reconcile (or a
        # relaunch) finishes, never an experiment nothing would ever submit.
        scripts = _write_experiment(prep, exp_id, ledger, kind.kind, tags=tags, note=note,
                                    first_state=None if kind.in_process else "SUBMITTING",
                                    reused=reused.reused, keys=reused.keys)
    except (OSError, sqlite3.OperationalError) as exc:
        if not is_storage_full(exc):
            raise
        raise files_full_error(exc, prep.sweep.path, ledger.path) from None
    except ExperimentExists:
        if new:
            raise
        return _already_launched(ledger, exp_id)     # a concurrent launch of the same sweep won
    if not prep.plan.chunks:
        result = reuse.finish_all_reused(ledger, exp_id, LaunchResult(exp_id, True, report=report))
    elif kind.in_process:
        result = run_local(prep, exp_id, ledger, scripts, max_parallel,
                           LaunchResult(exp_id, True, report=report), scheduler)
    else:
        result = _submit_slurm(prep, exp_id, ledger, scripts, scheduler, report)
    result.reuse_message = reused.message(total)
    return result


def _already_launched(ledger: Ledger, exp_id: str) -> LaunchResult:
    existing = ledger.get_experiment(exp_id, required=True)
    message = (f"{exp_id} was already launched on {existing['created']} (state {existing['state']}); "
               f"nothing submitted. See `slurmexp status {exp_id}`, or launch again with --new.")
    if existing["state"] == "SUBMITTING":
        unsent = len(ledger.runs(exp_id, state="PLANNED"))
        if unsent:
            message += (f" {unsent} of its runs are not submitted yet (a launch still running, or "
                        "one that died): `slurmexp reconcile` submits them once no launch has "
                        "written for the grace period, never twice.")
    return LaunchResult(exp_id, False, message=message)


def settings_for(prep: Prepared) -> ExperimentSettings:
    """What reconcile needs later to retry without the sweep file: the retry policy and, per
    resource group, what it asked for and the limits of the partition and QOS it went to."""
    groups: dict[int, list[ArrayChunk]] = {}
    for chunk in prep.plan.chunks:
        groups.setdefault(chunk.group, []).append(chunk)
    out = []
    for group, chunks in sorted(groups.items()):
        res = chunks[0].resources
        part = prep.site.partitions.get(res.partition)
        caps = [part.max_time_min] if part and part.max_time_min is not None else []
        qos = prep.site.qos.get(res.qos or "")
        if qos and qos.max_wall_min is not None:
            caps.append(qos.max_wall_min)
        nodes = prep.site.partition_nodes(res.partition) if part else []
        out.append(GroupSettings(
            group=group, chunks=tuple(c.chunk for c in chunks), partition=res.partition,
            time_min=res.time_min, mem_mb=res.mem_mb, cpus=res.cpus, gpus=res.gpus,
            gpu_type=res.gpu_type, qos=res.qos, throttle=prep.plan.throttle or chunks[0].throttle,
            max_time_min=min(caps) if caps else None,
            max_mem_mb=max((n.mem_mb for n in nodes), default=None)))
    r, c, v = prep.sweep.retry, prep.sweep.checkpoint, prep.sweep.live
    return ExperimentSettings(RetrySettings(r.max_attempts, r.escalate, r.escalate_factor, r.backoff_s),
                              tuple(out),
                              CheckpointSettings(c.signal, c.before_s, c.requeue) if c else None,
                              prep.remote,
                              LivenessSettings(v.heartbeat_s, v.stall_after_s, v.stall_action),
                              notify=reuse.notify_settings(prep.sweep), depends=prep.depends)


def _write_experiment(prep: Prepared, exp_id: str, ledger: Ledger, backend: str, *,
                      first_state: str | None = None, tags: Sequence[str] = (),
                      note: str | None = None, reused: Sequence[dict] = (),
                      keys: dict[str, str] | None = None) -> dict[int, Path]:
    """Manifests, scripts and provenance on disk, then the ledger rows. `keys`: the runs'
    reuse keys where `reuse.plan_reuse` has made them already."""
    paths = layout.ExperimentPaths(prep.exp_dir(exp_id))
    exp_dir = paths.exp_dir
    make_output_dir(prep.sweep.output_dir)
    exp_dir.mkdir(parents=True, exist_ok=True)
    sweep_copy = paths.sweep_copy
    shutil.copyfile(prep.sweep.path, sweep_copy)
    shutil.copyfile(prep.site.path, paths.site_copy)
    prov = provenance.collect(Path(prep.sweep.workdir), paths.provenance_dir,
                              prep.sweep.provenance.secret_patterns, exclude=[Path(prep.sweep.output_dir)])
    if prep.remote is not None:
        prov["sources"] = prep.sources
    job_paths = prep.job_paths(exp_id)
    job_runs_dir = os.fspath(job_paths.runs_dir)      # strings: pathlib per run costs 0.4 s at 8,000
    commands = {run.run_id: command_for(prep.sweep, run, os.path.join(job_runs_dir, run.run_id), exp_id)
                for run in prep.plan.runs}
    scripts: dict[int, Path] = {}
    where: dict[str, tuple[int, int]] = {}
    keys = keys if keys is not None else reuse.reuse_keys(prep)
    for chunk in prep.plan.chunks:
        write_manifest(exp_dir, chunk, commands)
        scripts[chunk.chunk] = write_script(exp_dir, chunk.chunk,
                                            render_script(script_context(prep, exp_id, chunk)))
        for i, run in enumerate(chunk.runs):
            where[run.run_id] = (chunk.chunk, i)
    runs_dir = os.fspath(paths.runs_dir)
    runs = [{"run_id": r.run_id, "idx": r.index, "params": r.params, "params_json": params_text(r),
             "seed": r.seed, "source": r.source,
             "run_dir": os.path.join(runs_dir, r.run_id), "chunk": where[r.run_id][0],
             "task_index": where[r.run_id][1], "reuse_key": keys.get(r.run_id)} for r in prep.plan.runs]
    if prep.remote is not None:
        remote.publish(prep.remote, exp_dir)     # on the cluster before the ledger names it
    cluster = None if backend_kind(backend).in_process else prep.site.cluster   # local: ran here
    with ledger.transaction():
        ledger.create_experiment(
            exp_id, prep.sweep.name, prep.fingerprint, cluster, backend, exp_dir,
            prep.sweep.path, sweep_copy, prep.site.path, prep.site.hash(), template_sha256(prep.template),
            prov, runs)
        ledger.set_experiment_settings(exp_id, settings_for(prep))
        meta = prep.sweep.meta
        ledger.set_experiment_meta(exp_id, [*meta.tags, *tags], note or meta.description)
        reuse.record(ledger, exp_id, prep, list(reused))
        if first_state:
            ledger.set_experiment_state(exp_id, first_state, "launch: submitting its arrays")
    return scripts


def _submit_slurm(prep: Prepared, exp_id: str, ledger: Ledger, scripts: dict[int, Path], slurm,
                  report: ValidationReport) -> LaunchResult:
    if ledger.get_experiment(exp_id, required=True)["state"] != "SUBMITTING":
        ledger.set_experiment_state(exp_id, "SUBMITTING")
    result = LaunchResult(exp_id, True, report=report)
    outcomes = []
    for chunk in prep.plan.chunks:
        outcome = submit_chunk(ledger, slurm, ChunkRequest(
            exp_id, chunk.chunk, chunk.array_spec, chunk.size, scripts[chunk.chunk],
            prep.site.cluster, extra_args=depends.sbatch_args(prep.depends),
            cwd=Path(prep.sweep.workdir)))
        outcomes.append(outcome)
        if outcome.status == UNANSWERED:
            # sbatch may have created the job although it timed out: the intent stays for
            # reconcile to adopt by tag, and nothing more is submitted now.
            result.pending_intents = sum(1 for c in prep.plan.chunks if c.chunk >= chunk.chunk)
            result.unanswered = outcome.error
            result.message = unanswered_message(outcome, len(result.job_ids), len(prep.plan.chunks))
            break
        if outcome.status == REFUSED:
            if not result.job_ids:
                ledger.set_experiment_state(exp_id, "FAILED", f"sbatch refused chunk {chunk.chunk}")
                raise with_queue_count(outcome.error, slurm)
            result.unsubmitted, result.message = record_partly_submitted(
                ledger, exp_id, prep.plan.chunks, result.job_ids, chunk, outcome.error, slurm)
            break
        result.job_ids.append(outcome.job_id)
    stamp_submit_times(ledger, slurm, outcomes)
    if not result.pending_intents:
        ledger.set_experiment_state(exp_id, "SUBMITTED", f"{len(result.job_ids)} array job(s)"
                                    + (f"; {len(result.unsubmitted)} run(s) refused by sbatch"
                                       if result.unsubmitted else ""))
    return result
