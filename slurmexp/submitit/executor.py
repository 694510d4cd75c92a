"""`SlurmExecutor` and `AutoExecutor`: submitit's, submitting through slurmexp.

They subclass submitit's executors (isinstance checks, `update_parameters`, `slurm_` prefixes
and `with executor.batch():` behave as there) and replace one method, the one every
submission goes through (`_internal_process_submissions`): the calls become one experiment
(`slurmexp.functions.launch.launch_calls`), validated, routed, split at MaxArraySize, rendered
from the site's templates, recorded and tagged as `slurmexp launch` does.
"""
from __future__ import annotations

import typing as tp
from pathlib import Path

import submitit as _submitit
from submitit.auto.auto import _convert_deprecated_args, flexible_init
from submitit.core import core, plugins, utils

from slurmexp import units
from slurmexp.errors import Problem, ValidationError
from slurmexp.functions.calls import short_name
from slurmexp.functions.launch import CallsRequest, launch_calls
from slurmexp.submitit.job import SlurmJob

# Keywords slurmexp adds (all optional). The last three are submitit's `slurm_*` ones, also
# accepted unprefixed by AutoExecutor.
EXTRA = ("experiment", "site", "ledger", "retry", "gpu_type", "reservation", "output_dir")
UNPREFIXED = ("qos", "account", "reservation", "gpu_type")
# submitit parameters slurmexp cannot honour: refused rather than silently dropped.
UNSUPPORTED = {
    "nodelist": "slurmexp places runs itself (site.toml routing)",
    "exclude": "slurmexp places runs itself (site.toml routing)",
    "dependency": "runs are tracked in the ledger; chain experiments from Python instead",
    "exclusive": "not part of a slurmexp resource request",
    "additional_parameters": "every #SBATCH line comes from the site's templates",
    "mem_per_gpu": "give mem (per node) instead", "mem_per_cpu": "give mem (per node) instead",
    "cpus_per_gpu": "give cpus_per_task instead",
    "teardown": "put it in the function, or in the site template's footer block",
}
# Accepted and without effect here (logs, signals and job names are slurmexp's own).
IGNORED = ("job_name", "stderr_to_stdout", "wckey", "use_srun", "srun_args",
           "comment", "mail_type", "mail_user", "map_count")


def resources_from(params: dict[str, tp.Any], extra: dict[str, tp.Any]) -> tuple[dict, list[str], list[Problem]]:
    """(sweep [resources], env setup lines, problems) from submitit's Slurm parameters."""
    res: dict[str, tp.Any] = {}
    problems = []
    for name, why in UNSUPPORTED.items():
        if params.get(name) not in (None, [], {}, False):
            problems.append(Problem("", f"slurm_{name}", f"{name}={params[name]!r} is not supported "
                                    f"by slurmexp.submitit: {why}", f"remove {name}, or use plain submitit "
                                    f"for this job", "value"))
    tasks = params.get("ntasks_per_node")
    if tasks not in (None, 1):
        problems.append(Problem("", "slurm_ntasks_per_node", f"ntasks_per_node={tasks}: each run is "
                                "one task", "use one task per run (tasks_per_node=1)", "value"))
    if params.get("time") is not None:
        minutes = params["time"]
        res["time"] = units.format_seconds(int(minutes) * 60, always_days=True) \
            if isinstance(minutes, (int, float)) and not isinstance(minutes, bool) else minutes
    if params.get("mem") is not None:
        res["mem"] = str(params["mem"])
    for src, dst in (("cpus_per_task", "cpus"), ("partition", "partition"), ("qos", "qos"),
                     ("account", "account"), ("constraint", "constraint"), ("nodes", "nodes"),
                     ("array_parallelism", "array_parallelism")):
        if params.get(src) is not None:
            res[dst] = params[src]
    gpus = params.get("gpus_per_node") or params.get("gpus_per_task") or params.get("num_gpus")
    gres = params.get("gres")
    if gres:
        parts = str(gres).split(":")
        if parts[0] != "gpu" or len(parts) not in (2, 3) or not parts[-1].isdigit():
            problems.append(Problem("", "slurm_gres", f"gres={gres!r}: only gpu:N or gpu:TYPE:N",
                                    "use gpus_per_node=N and gpu_type=TYPE", "value"))
        else:
            gpus = int(parts[-1])
            if len(parts) == 3:
                res["gpu_type"] = parts[1]
    if gpus:
        res["gpus"] = gpus
    if res.get("array_parallelism") == 256 and "array_parallelism" not in extra.get("_set", ()):
        res.pop("array_parallelism")      # submitit's default, not a request
    for key in ("gpu_type", "reservation"):
        if extra.get(key) is not None:
            res[key] = extra[key]
    return res, list(params.get("setup") or []), problems


def checkpoint_from(params: dict[str, tp.Any], resources: dict[str, tp.Any]) -> dict[str, tp.Any]:
    """The [checkpoint] table of submitit's protocol: its signal (USR2, or
    $SUBMITIT_PREEMPT_SIGNAL) `signal_delay_s` (90) before the limit, and requeue, so a
    Checkpointable is continued from what its `checkpoint()` returned (functions.runner).

    A delay that is not shorter than the time limit (submitit would signal at once) becomes a
    quarter of it, so the call has time to work before it is asked to save."""
    from submitit.slurm.slurm import SlurmJobEnvironment

    delay = int(params.get("signal_delay_s") or 90)
    try:
        limit_s = (units.parse_time(resources["time"]) or 0) * 60 if "time" in resources else 0
    except ValueError:
        limit_s = 0          # validation reports the time itself
    if limit_s and delay >= limit_s:
        delay = max(limit_s // 4, 1)
    return {"signal": SlurmJobEnvironment.USR_SIG, "before": f"{max(delay, 1)}s", "requeue": True}


class SlurmExecutor(_submitit.SlurmExecutor):
    """submitit's SlurmExecutor; jobs go through slurmexp (see the module doc).

    Extra keywords (constructor or update_parameters): experiment, site, ledger, retry,
    gpu_type, reservation, output_dir.
    """

    job_class = SlurmJob

    def __init__(self, folder: tp.Union[str, Path], max_num_timeout: int = 3,
                 max_pickle_size_gb: float = 1.0, python: tp.Optional[str] = None,
                 **extra: tp.Any) -> None:
        import shlex
        import sys

        unknown = sorted(set(extra) - set(EXTRA))
        if unknown:
            raise TypeError(f"SlurmExecutor got unexpected keyword(s) {unknown}; slurmexp adds "
                            f"only {', '.join(EXTRA)}")
        core.PicklingExecutor.__init__(self, folder, max_num_timeout=max_num_timeout,
                                       max_pickle_size_gb=max_pickle_size_gb)
        self.python = shlex.quote(sys.executable) if python is None else python
        self.slurmexp: dict[str, tp.Any] = dict(extra)

    @classmethod
    def _valid_parameters(cls) -> tp.Set[str]:
        return set(super()._valid_parameters()) | set(EXTRA)

    def _internal_update_parameters(self, **kwargs: tp.Any) -> None:
        for key in EXTRA:
            if key in kwargs:
                self.slurmexp[key] = kwargs.pop(key)
        if "array_parallelism" in kwargs:
            self.slurmexp.setdefault("_set", set()).add("array_parallelism")
        super()._internal_update_parameters(**kwargs)

    def _request(self, fn: tp.Any) -> CallsRequest:
        resources, setup, problems = resources_from(self.parameters, self.slurmexp)
        if problems:
            raise ValidationError(f"{len(problems)} submitit parameter(s) slurmexp cannot honour; "
                                  "nothing was submitted", problems)
        name = self.slurmexp.get("experiment")
        folder = utils.JobPaths.get_first_id_independent_folder(self.folder)
        output = self.slurmexp.get("output_dir")
        return CallsRequest(
            name=str(name) if name else short_name(fn), exp_id=str(name) if name else None,
            resources=resources, retry=dict(self.slurmexp.get("retry") or {}), setup=setup,
            site=self.slurmexp.get("site"), ledger=self.slurmexp.get("ledger"),
            output_dir=Path(output) if output else folder / "slurmexp", python=self.python,
            submitit_folder=self.folder, checkpoint=checkpoint_from(self.parameters, resources))

    def _internal_process_submissions(
            self, delayed_submissions: tp.List[utils.DelayedSubmission]) -> tp.List[core.Job[tp.Any]]:
        timeout_min = self.parameters.get("time", 5)
        for d in delayed_submissions:
            d.set_timeout(timeout_min, self.max_num_timeout)
        req = self._request(delayed_submissions[0].function)
        launched = launch_calls(list(delayed_submissions), req)
        return [SlurmJob(self.folder, job_id, exp_id=launched.exp_id, run_id=run_id,
                         ledger_path=launched.ledger_path)
                for run_id, job_id in zip(launched.run_ids, launched.job_ids)]

    @classmethod
    def affinity(cls) -> int:
        return _submitit.SlurmExecutor.affinity()


def _executors() -> dict[str, tp.Type[core.Executor]]:
    return {**plugins.get_executors(), "slurm": SlurmExecutor}


class AutoExecutor(_submitit.AutoExecutor):
    """submitit's AutoExecutor; on Slurm it uses slurmexp's SlurmExecutor.

    Also takes slurmexp's keywords unprefixed (experiment, site, ledger, retry, gpu_type,
    reservation, output_dir; qos and account too, which submitit spells slurm_qos and
    slurm_account)."""

    def __init__(self, folder: tp.Union[str, Path], cluster: tp.Optional[str] = None, **kwargs: tp.Any) -> None:
        ours = {k: kwargs.pop(k) for k in list(kwargs) if k in EXTRA}
        self.cluster = cluster or self.which()
        executors = _executors()
        if self.cluster not in executors:
            raise ValueError(f"AutoExecutor doesn't know any executor named {self.cluster}")
        _convert_deprecated_args(kwargs, self._ctor_deprecated_args)
        err = "Extra arguments must be prefixed by executor named, received unknown arg"
        err_ex_list = f"Known executors: {', '.join(executors)}."
        for name in kwargs:
            assert "_" in name, f"{err} '{name}'. {err_ex_list}"
            prefix = name.split("_")[0]
            assert prefix in executors, f"{err} '{name}', and '{prefix}' executor is also unknown. {err_ex_list}"
        self._executor = flexible_init(executors[self.cluster], folder, **kwargs)
        if isinstance(self._executor, SlurmExecutor):
            self._executor.slurmexp.update(ours)
        valid = self._valid_parameters()
        self._deprecated_args = {arg: f"{ex_name}_{arg}" for ex_name, ex in executors.items()
                                 for arg in ex._valid_parameters() if arg not in valid}
        for key in UNPREFIXED + EXTRA:
            self._deprecated_args.pop(key, None)
        core.Executor.__init__(self, self._executor.folder, self._executor.parameters)

    @classmethod
    def _valid_parameters(cls) -> tp.Set[str]:
        return set(super()._valid_parameters()) | set(EXTRA) | set(UNPREFIXED)

    def _internal_update_parameters(self, **kwargs: tp.Any) -> None:
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        ours = {}
        for key in set(EXTRA) | set(UNPREFIXED):
            for spelled in (key, f"slurm_{key}"):
                if spelled in kwargs and (key in EXTRA or spelled == key):
                    ours[key] = kwargs.pop(spelled)
        if ours and self.cluster == "slurm":
            self._executor._internal_update_parameters(**ours)
        super()._internal_update_parameters(**kwargs)
