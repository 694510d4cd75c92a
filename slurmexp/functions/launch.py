"""Python sweeps through the one launch path: a sweep.toml text, then plan, validate, write,
ledger and submit exactly as `slurmexp launch` does.

A Python sweep is first written as the sweep.toml it stands for (`sweep_toml`) and parsed by
the same strict schema, so `resources={"time": "1:00"}` and `resources.time = "1:00"` get the
same error, the experiment folder keeps a sweep.toml like any other, and the fingerprint,
routing, validation (static, live, `sbatch --test-only`) and templates are the command
sweep's. Two callers:

- `launch_sweep` (`slurmexp.sweep`): the runs come from the sweep's own grid/zip/sample/runs;
  it is `launch.launcher.launch` on that file.
- `launch_calls` (the submitit drop-in): the runs are the calls, one each, with the call
  pickled into the run folder; chunks are cut at MaxArraySize as any plan's are, and a named
  experiment is extended by new runs and chunks rather than replaced.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slurmexp import layout
from slurmexp.atomic import replace_file
from slurmexp.backends import base as backends
from slurmexp.errors import Problem, SlurmexpError, SlurmexpWarning, SpecError, ValidationError
from slurmexp.functions.calls import call_params, callable_name, run_ids_for
from slurmexp.functions.runner import runner_command
from slurmexp.launch.experiment_files import make_output_dir
from slurmexp.ledger import Ledger

SOURCE = "call"           # runs.source of a drop-in call


# ----------------------------------------------------------------------------------------
# The sweep.toml a Python sweep stands for
# ----------------------------------------------------------------------------------------


def _toml_value(value: Any, key: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v, f"{key}[{i}]") for i, v in enumerate(value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v, f'{key}.{k}')}"
                               for k, v in value.items()) + "}"
    raise SpecError(f"{key}: {type(value).__name__} value {value!r} has no sweep.toml form", [Problem(
        "", key, f"{type(value).__name__} value {value!r} cannot be a sweep value",
        "use strings, numbers, booleans, or lists and dicts of them", check="value")])


def sweep_toml(data: dict[str, Any]) -> str:
    """A sweep.toml text for `data` (top-level keys in order; tables written inline)."""
    lines = ["# Written by slurmexp for a Python sweep; `slurmexp launch` reads it the same way."]
    for key, value in data.items():
        if value is None:
            continue
        lines.append(f"{json.dumps(key)} = {_toml_value(value, key)}")
    return "\n".join(lines) + "\n"


def write_sweep_file(output_dir: Path, name: str, text: str) -> Path:
    """`<output_dir>/.sweeps/<name>-<hash>.toml` (`layout.SWEEPS_DIR`): the sweep's source file (content-addressed)."""
    folder = make_output_dir(output_dir) / layout.SWEEPS_DIR
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:12]}.toml"
    if not path.exists() or path.read_text() != text:
        replace_file(path, text)
    return path


def as_validation_error(exc: SpecError, what: str) -> ValidationError:
    """A Python caller gets one error class for everything found before submitting."""
    return ValidationError(f"{what}: {len(exc.problems)} problem(s); nothing was submitted",
                           exc.problems)


def scheduler(cluster: str | None):
    """The Slurm scheduler of `cluster`, from the one factory (`backends.base.scheduler_for`,
    looked up on its module at each call, so a test may replace it there)."""
    return backends.scheduler_for(backends.DEFAULT_KIND, cluster)


def open_ledger(ledger: Ledger | str | os.PathLike | None) -> Ledger:
    return ledger if isinstance(ledger, Ledger) else Ledger(ledger)


# ----------------------------------------------------------------------------------------
# slurmexp.sweep: a declarative sweep of a function
# ----------------------------------------------------------------------------------------


def _task_path(workdir: Path) -> list[Path]:
    """Where a task's Python finds modules: its cwd (workdir), $PYTHONPATH, the installation."""
    import sysconfig

    paths = [Path(workdir)] + [Path(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    paths += [Path(sysconfig.get_paths()[k]) for k in ("purelib", "platlib", "stdlib")]
    return [p.resolve() for p in paths]


def importable_ref(fn: Any, workdir: Path | None = None) -> str | None:
    """"module:qualname" when a task (cwd = workdir) can import `fn` by that name, else None."""
    ref = callable_name(fn)
    module, _, qual = ref.partition(":")
    if module in ("__main__", "?", "builtins") or "<" in qual:
        return None
    try:
        from slurmexp.functions.runner import _import

        if _import(ref) is not fn:
            return None
    except Exception:
        return None
    top = sys.modules.get(module.split(".")[0])
    where = getattr(top, "__file__", None)
    if where is None:
        return ref          # a namespace or built-in package: importable where this one is
    root = Path(where).resolve().parent
    if Path(where).name == "__init__.py":
        root = root.parent
    return ref if root in _task_path(workdir or Path.cwd()) else None


def pickle_by_value(fn: Any) -> bytes:
    """The callable with its module's code inside, for a task that cannot import it."""
    import cloudpickle

    module = sys.modules.get(getattr(fn, "__module__", "") or "")
    if module is None or module.__name__ == "__main__":
        return cloudpickle.dumps(fn)
    cloudpickle.register_pickle_by_value(module)
    try:
        return cloudpickle.dumps(fn)
    finally:
        cloudpickle.unregister_pickle_by_value(module)


def launch_sweep(fn: Any, data: dict[str, Any], *, site: str | os.PathLike | None, ledger: Ledger,
                 output_dir: Path, new: bool = False, slurm=None, skip_completed: bool = False):
    """`slurmexp.sweep`: write the sweep.toml, then `launcher.launch` it. Returns its
    LaunchResult (`submitted` False when the same sweep was launched before: reattach)."""
    from slurmexp.launch import launcher

    ref = importable_ref(fn, Path(data.get("workdir") or Path.cwd()))
    if ref is not None:
        data = {**data, "function": ref}
    else:
        blob = pickle_by_value(fn)
        folder = make_output_dir(output_dir) / layout.FUNCTIONS_DIR
        folder.mkdir(exist_ok=True)
        pickled = folder / f"{hashlib.sha256(blob).hexdigest()[:16]}.pkl"
        if not pickled.exists():
            pickled.write_bytes(blob)
        names = _param_names(data)
        data = {**data, "command": runner_command(sys.executable, function_pickle=pickled),
                "allow_unused": names or None}
    text = sweep_toml(data)
    path = write_sweep_file(output_dir, str(data.get("name") or "sweep"), text)
    if slurm is None:
        from slurmexp.sites.model import load_site

        slurm = scheduler(load_site(launcher.find_site(path, site)).cluster)
    try:
        result = launcher.launch(path, site, ledger=ledger, new=new, slurm=slurm,
                                 skip_completed=skip_completed)
    except ValidationError:
        raise
    except SpecError as exc:
        raise as_validation_error(exc, f"slurmexp.sweep({data.get('name')!r})") from None
    if result.reuse_message and not skip_completed:
        warnings.warn(SlurmexpWarning(result.reuse_message.replace(
            "launch with --skip-completed", "pass skip_completed=True")), stacklevel=3)
    return result


def _param_names(data: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for key in (data.get("params") or {}):
        names.append(key)
    for group in data.get("zip") or []:
        names += [k for k in group if k not in names]
    sample = data.get("sample") or {}
    names += [k for k in (sample.get("params") or {}) if k not in names]
    for run in data.get("runs") or []:
        names += [k for k in run if k not in names]
    return names


# ----------------------------------------------------------------------------------------
# The drop-in: each call one run
# ----------------------------------------------------------------------------------------


@dataclass
class CallsRequest:
    """What a drop-in executor hands over with its calls."""

    name: str                                   # experiment name (the function's by default)
    resources: dict[str, Any]                   # sweep.toml [resources] keys
    retry: dict[str, Any] = field(default_factory=dict)
    setup: list[str] = field(default_factory=list)
    site: str | os.PathLike | None = None
    ledger: Ledger | str | os.PathLike | None = None
    exp_id: str | None = None                   # experiment="..." given: extend it if it exists
    workdir: Path = field(default_factory=Path.cwd)
    output_dir: Path | None = None
    python: str = sys.executable
    submitit_folder: Path | None = None
    checkpoint: dict[str, Any] | None = None    # sweep.toml [checkpoint] keys


@dataclass
class CallsLaunched:
    exp_id: str
    run_ids: list[str]
    job_ids: list[str | None]                   # "<array>_<task>" per call (None: unanswered)
    ledger_path: Path
    message: str = ""


def launch_calls(calls: Sequence[Any], req: CallsRequest, *, slurm=None) -> CallsLaunched:
    """Validate, record and submit one run per call (`DelayedSubmission`s, in order).

    Raises `ValidationError` (nothing written, nothing queued) when the sweep could not run.
    """
    from slurmexp.launch import launcher
    from slurmexp.sites.model import load_site
    from slurmexp.sweep.plan import Plan, Run, make_chunks, resolve_resources
    from slurmexp.sweep.spec import parse_sweep

    if not calls:
        raise SlurmexpError("no calls to submit")
    ledger = open_ledger(req.ledger)
    output_dir = Path(req.output_dir or (req.workdir / "slurmexp-runs")).absolute()
    data = {"name": req.name,
            "command": runner_command(req.python, submitit_folder=req.submitit_folder),
            "workdir": str(Path(req.workdir).absolute()), "output_dir": str(output_dir),
            "resources": {k: v for k, v in req.resources.items() if v is not None},
            "env": {"setup": list(req.setup)} if req.setup else None,
            "retry": req.retry or None, "checkpoint": req.checkpoint}
    text = sweep_toml(data)
    what = f"{req.name}: {len(calls)} call(s)"
    try:
        path = write_sweep_file(output_dir, req.name, text)
        sweep = parse_sweep(text, path)
        site = load_site(launcher.find_site(path, req.site))
        resources, placement = resolve_resources(sweep, site)
    except SpecError as exc:
        raise as_validation_error(exc, what) from None

    existing = ledger.get_experiment(req.exp_id) if req.exp_id else None
    if existing is not None and existing["cluster"] != site.cluster:
        raise ValidationError(f"{what}: experiment {req.exp_id} is on cluster {existing['cluster']}", [
            Problem(str(site.path), "cluster", f"this site is cluster {site.cluster!r}",
                    "use another experiment name, or the experiment's own site.toml")])
    n_before, first_chunk = ledger.run_extent(req.exp_id) if existing else (0, 0)
    name = callable_name(calls[0].function)
    params = [call_params(c.function, tuple(c.args), dict(c.kwargs)) for c in calls]
    taken = set(ledger.run_ids(req.exp_id)) if existing else set()
    ids = run_ids_for(name, params, taken)
    runs = [Run(run_id=rid, index=n_before + i, params=p, source=SOURCE)
            for i, (rid, p) in enumerate(zip(ids, params))]
    chunks = make_chunks(runs, resources, site.max_array_size, sweep.resources.array_parallelism,
                         group=0, first_chunk=first_chunk)
    plan = Plan(runs=runs, placements=[placement], chunks=chunks)
    fp = launcher.fingerprint_of(sweep, site)
    fp = hashlib.sha256((fp + "".join(ids)).encode()).hexdigest()
    if req.exp_id:
        exp_id = req.exp_id
    else:
        base = f"{req.name}-{fp[:8]}"
        exp_id = base + ledger.next_experiment_suffix(base)
    template = sweep.template or site.template
    prep = launcher.Prepared(sweep, site, plan, fp, exp_id, Path(template) if template else None)

    slurm = slurm if slurm is not None else scheduler(site.cluster)
    report = launcher.check(prep, slurm, exp_id=exp_id)
    if not report.ok:
        raise ValidationError(f"{what}: {len(report.problems)} problem(s); nothing was submitted",
                              report.problems)
    # The pickled calls are on disk before the ledger says the runs are to be submitted: a
    # launch killed after the record leaves runs reconcile can submit, each with its call.
    _write_calls(layout.ExperimentPaths(prep.exp_dir(exp_id)), ids, calls)
    if existing is None:
        scripts = launcher._write_experiment(prep, exp_id, ledger, backends.DEFAULT_KIND,
                                             first_state="SUBMITTING")
    else:
        scripts = _extend_experiment(prep, exp_id, ledger)
    result = launcher._submit_slurm(prep, exp_id, ledger, scripts, slurm, report)
    by_chunk = {c.chunk: job for c, job in zip(chunks, result.job_ids)}
    job_ids: list[str | None] = []
    for chunk in chunks:
        job = by_chunk.get(chunk.chunk)
        job_ids += [f"{job}_{i}" if job else None for i in range(chunk.size)]
    if req.submitit_folder is not None:
        _write_submitted_pickles(req.submitit_folder, job_ids, calls)
    return CallsLaunched(exp_id, ids, job_ids, ledger.path, result.message)


def _write_calls(paths: layout.ExperimentPaths, run_ids: list[str], calls: Sequence[Any]) -> None:
    import cloudpickle

    for rid, call in zip(run_ids, calls):
        path = paths.run(rid).call
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_file(path, functools.partial(cloudpickle.dump, {
            "function": call.function, "args": tuple(call.args), "kwargs": dict(call.kwargs)}))


def _write_submitted_pickles(folder: Path, job_ids: Sequence[str | None], calls: Sequence[Any]) -> None:
    """Where plain submitit's `job.submission()` looks (`<folder>/<job id>_submitted.pkl`)."""
    from submitit.core.utils import JobPaths

    for job_id, call in zip(job_ids, calls):
        if job_id:
            path = JobPaths(folder, job_id=job_id).submitted_pickle
            path.parent.mkdir(parents=True, exist_ok=True)
            call.dump(path)


def _extend_experiment(prep, exp_id: str, ledger: Ledger) -> dict[int, Path]:
    """New runs and chunks of an existing experiment: files, then ledger rows and settings."""
    from dataclasses import replace

    from slurmexp.launch import launcher
    from slurmexp.launch.experiment_files import write_manifest, write_script
    from slurmexp.launch.render import render_script
    from slurmexp.sweep.plan import command_for

    paths = layout.ExperimentPaths(prep.exp_dir(exp_id))
    exp_dir = paths.exp_dir
    commands = {run.run_id: command_for(prep.sweep, run, paths.run_dir(run.run_id), exp_id)
                for run in prep.plan.runs}
    scripts: dict[int, Path] = {}
    rows = []
    for chunk in prep.plan.chunks:
        write_manifest(exp_dir, chunk, commands)
        scripts[chunk.chunk] = write_script(exp_dir, chunk.chunk, render_script(
            launcher.script_context(prep, exp_id, chunk)))
        rows += [{"run_id": r.run_id, "idx": r.index, "params": r.params, "seed": r.seed,
                  "source": r.source, "run_dir": str(paths.run_dir(r.run_id)), "chunk": chunk.chunk,
                  "task_index": i} for i, r in enumerate(chunk.runs)]
    ledger.add_runs(exp_id, rows)
    old = ledger.experiment_settings(exp_id)
    new = launcher.settings_for(prep)
    groups = tuple(old.groups) + tuple(replace(g, group=len(old.groups) + i)
                                       for i, g in enumerate(new.groups))
    ledger.set_experiment_settings(exp_id, replace(old, groups=groups))
    return scripts
