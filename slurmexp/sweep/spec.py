"""The `sweep.toml` schema and its checks.

Every problem in a file is collected before anything is raised: a sweep is usually edited on
a login node between queue waits, and fixing one error per round trip wastes hours. To get
there each top-level section is validated on its own (a typo in [resources] must not hide a
missing placeholder in `command`), then the cross-section checks (in `checks`) run on whatever
did validate. The strict-TOML machinery that does this, shared with `site.toml`, is in strict_toml.
"""
from __future__ import annotations

import json
import math
import re
import tomllib
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, Strict, ValidationInfo, WithJsonSchema, computed_field

from slurmexp import units
from slurmexp.errors import SlurmexpWarning
from slurmexp.sweep.checks import (
    BUILTIN_PLACEHOLDERS,
    QUOTE_FIX,
    _placeholders,
    check_sweep,
    output_dir_problem,
)
from slurmexp.sweep.run_tables import (
    CHECKPOINT_SIGNALS,
    MAX_NOTIFY_TIMEOUT_S,
    CheckpointSpec,
    DependsSpec,
    LivenessSpec,
    MetaSpec,
    NotifySpec,
    ProvenanceSpec,
    check_tag,
)
from slurmexp.sweep.sbatch_options import SbatchOption
from slurmexp.sweep.slurm_names import SlurmName
from slurmexp.sweep.strict_toml import (
    FixError,
    MemStr,
    RelPath,
    RunTimeStr,
    StrictModel,
    Text,
    parse_strict,
    read_text,
    toml_type,
)

__all__ = ["BUILTIN_PLACEHOLDERS", "CHECKPOINT_SIGNALS", "QUOTE_FIX", "CheckpointSpec", "check_name",
           "Distribution", "EnvSpec", "LivenessSpec", "Override", "ProvenanceSpec", "ResourceRequest", "RetrySpec",
           "SampleSpec", "Sweep", "DependsSpec", "check_sweep", "load_sweep", "parse_sweep", "MetaSpec", "NotifySpec",
           "check_tag", "MAX_NOTIFY_TIMEOUT_S"]

# ----------------------------------------------------------------------------------------
# Field types of the sweep alone
# ----------------------------------------------------------------------------------------


def _scalar(value: Any) -> Any:
    if isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a finite number")
        return value
    raise ValueError(f"must be a string, integer, float or boolean, not {toml_type(value)}")


def _param_values(value: Any) -> list[Any]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ValueError("empty list: give at least one value (or remove the parameter)")
    for i, item in enumerate(values):
        try:
            _scalar(item)
        except ValueError as exc:
            raise ValueError(f"value #{i + 1} ({item!r}) {exc}") from None
    return list(values)


def _number(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"must be a number, got {toml_type(value)} {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{value!r} is not a finite number")
    return value


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _name(value: str, info: ValidationInfo) -> str:
    # Experiment ids start with the name and become folder names, job names and arguments:
    # "-rf" would read as options, "." and ".." as folders that are not the experiment's.
    if _NAME.fullmatch(value):
        return value
    suggest = _safe_name(value) or _safe_name(Path((info.context or {}).get("base", ".")).name) or "sweep"
    raise FixError(f"{value!r} is not a valid name: it must start with a letter or digit and "
                   f"contain only letters, digits, '.', '_' and '-' (it becomes part of job names, "
                   f"folder names and command arguments)", suggest=suggest)


def _safe_name(text: str) -> str:
    return re.sub(r"^[^A-Za-z0-9]+", "", re.sub(r"[^A-Za-z0-9._-]+", "-", text))


def check_name(value: str) -> str | None:
    """Why `value` cannot be a sweep name (with the fix), or None (for `init --name`)."""
    if _NAME.fullmatch(value):
        return None
    suggest = _safe_name(value)
    return (f"{value!r}: a name starts with a letter or digit and has only letters, digits, '.', "
            f"'_' and '-'" + (f"; write {suggest!r}" if suggest else ""))


def _function_ref(value: str) -> str:
    module, sep, attr = value.partition(":")
    if not sep or not all(p.isidentifier() for p in module.split(".")) \
            or not all(p.isidentifier() for p in attr.split(".")):
        raise ValueError(f"{value!r} is not \"module:callable\" (e.g. \"train:main\")")
    return value


# What `slurmexp schema sweep` says of the types checked by hand (pydantic sees `Any`).
_SCALAR_SCHEMA = {"type": ["string", "number", "boolean"]}
Scalar = Annotated[Any, AfterValidator(_scalar), WithJsonSchema(_SCALAR_SCHEMA)]
FunctionRef = Annotated[str, Strict(), AfterValidator(_function_ref)]
ParamValues = Annotated[Any, AfterValidator(_param_values), WithJsonSchema({"anyOf": [
    _SCALAR_SCHEMA, {"type": "array", "items": _SCALAR_SCHEMA, "minItems": 1}]})]
Number = Annotated[Any, AfterValidator(_number), WithJsonSchema({"type": "number"})]
NameStr = Annotated[str, Strict(), AfterValidator(_name)]


# ----------------------------------------------------------------------------------------
# The sweep schema
# ----------------------------------------------------------------------------------------


class Distribution(StrictModel):
    """One sampled parameter. Bounds are inclusive for `int`."""

    dist: Literal["uniform", "loguniform", "int", "choice"]
    low: Number | None = None
    high: Number | None = None
    values: list[Scalar] | None = None


class SampleSpec(StrictModel):
    seed: int
    n: Annotated[int, Field(ge=1)]
    params: dict[str, Distribution]


class ResourceRequest(StrictModel):
    """What the sweep asks for; anything left out comes from the site defaults."""

    gpus: Annotated[int, Field(ge=0)] | None = None
    gpu_type: SlurmName("GPU type") | None = None
    cpus: Annotated[int, Field(ge=1)] | None = None
    mem: MemStr | None = None
    time: RunTimeStr | None = None
    partition: SlurmName("partition") | None = None
    qos: SlurmName("qos") | None = None
    reservation: SlurmName("reservation") | None = None
    account: SlurmName("account") | None = None
    constraint: SlurmName("constraint") | None = None
    nodes: Annotated[int, Field(ge=1)] | None = None
    array_parallelism: Annotated[int, Field(ge=1)] | None = None
    # Raw sbatch options for every chunk, e.g. ["--exclusive", "--mail-type=END"]
    # (sweep.sbatch_options: refused when slurmexp writes the option itself).
    sbatch: list[SbatchOption] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def mem_mb(self) -> int | None:
        return units.parse_mem(self.mem) if self.mem is not None else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def time_min(self) -> int | None:
        return units.parse_time(self.time) if self.time is not None else None


class Override(ResourceRequest):
    """One `[[override]]` table: [resources] keys for the runs whose parameters `where` matches.

    The resource keys are [resources]'s own (one schema, one validation); only the keys a table
    writes apply (`model_fields_set`). Matching and merging are in sweep.overrides.
    """

    # parameter -> the value a run must have (a list: any of them); every key must match
    where: dict[str, ParamValues]
    # Absent: the runs keep [resources]'s sbatch options; a list (even []) replaces them.
    sbatch: list[SbatchOption] | None = None  # type: ignore[assignment]


class EnvSpec(StrictModel):
    setup: list[str] = Field(default_factory=list)
    modules: list[Text] = Field(default_factory=list)
    vars: dict[str, str] = Field(default_factory=dict)


class RetrySpec(StrictModel):
    max_attempts: Annotated[int, Field(ge=1)] = 3
    escalate: bool = False
    escalate_factor: Annotated[float, Field(gt=1.0)] = 2.0
    backoff_s: Annotated[float, Field(ge=0)] = 60.0


class Sweep(StrictModel):
    name: NameStr
    # One of command and function (check_sweep says so). A blank command is refused there too.
    command: Annotated[str, Strict()] | None = None
    # "module:callable", run with each run's parameters as keyword arguments (instead of command)
    function: FunctionRef | None = None
    workdir: RelPath = Field(default=".", validate_default=True)
    output_dir: RelPath = Field(default="slurmexp-runs", validate_default=True)
    template: RelPath | None = None
    allow_unused: list[str] = Field(default_factory=list)
    params: dict[str, ParamValues] = Field(default_factory=dict)
    zip: list[dict[str, ParamValues]] = Field(default_factory=list)
    runs: list[dict[str, Scalar]] = Field(default_factory=list)
    sample: SampleSpec | None = None
    resources: ResourceRequest = Field(default_factory=ResourceRequest)
    # [[override]] tables, in file order: a later one wins key by key (sweep.overrides)
    override: list[Override] = Field(default_factory=list)
    env: EnvSpec = Field(default_factory=EnvSpec)
    retry: RetrySpec = Field(default_factory=RetrySpec)
    checkpoint: CheckpointSpec | None = None
    liveness: LivenessSpec | None = None
    provenance: ProvenanceSpec = Field(default_factory=ProvenanceSpec)
    meta: MetaSpec = Field(default_factory=MetaSpec)
    notify: NotifySpec | None = None
    depends: DependsSpec | None = None
    # Filled in by the loader, never read from the file.
    path: Path
    raw_text: str

    @property
    def live(self) -> LivenessSpec:      # [liveness] as written, or its defaults
        return self.liveness or LivenessSpec()

    def product_param_names(self) -> list[str]:
        """Parameters every grid/zip/sample run has, in file order (grid, zip, sample)."""
        names = list(self.params)
        for group in self.zip:
            names += list(group)
        if self.sample:
            names += list(self.sample.params)
        return names

    def param_names(self) -> list[str]:
        """All parameter names: the product's, then those only [[runs]] give."""
        names = self.product_param_names()
        for run in self.runs:
            names += [k for k in run if k not in names]
        return names

    def placeholder_names(self) -> list[str]:
        """Names used as {placeholders} in `command`, first occurrence order."""
        return _placeholders(self.command)[0] if self.command else []

    def canonical(self) -> dict[str, Any]:
        """A JSON-able, key-sorted view for fingerprinting: equal meaning gives equal dicts."""
        data = self.model_dump(mode="json", exclude={"path", "raw_text", "provenance", "meta",
                                                           "notify", "depends"})
        for table in ("checkpoint", "liveness"):
            if data.get(table) is None:
                # Absent, as before the table existed: a sweep without it keeps its identity.
                data.pop(table, None)
        if self.override:
            # Only the keys a table writes apply: `sbatch = []` clears, an absent sbatch does not.
            data["override"] = [o.model_dump(mode="json", exclude_unset=True) for o in self.override]
        else:
            data.pop("override", None)       # no [[override]]: the sweep keeps its identity
        if not data["resources"].get("sbatch"):
            data["resources"].pop("sbatch", None)       # the same, for [resources] sbatch
        return json.loads(json.dumps(data, sort_keys=True))


def parse_sweep(text: str, path: str | Path) -> Sweep:
    """Validate sweep text as if read from `path` (relative paths resolve against its folder).

    What is allowed but worth knowing (an output_dir outside the sweep's folder) is said with
    a SlurmexpWarning, which the CLI prints as `warning: ...`.
    """
    sweep = parse_strict(Sweep, text, path, check_sweep, "sweep")
    if ".." in text:   # only a relative output_dir with ".." can leave the sweep's folder
        found = output_dir_problem(tomllib.loads(text).get("output_dir"), str(sweep.path))
        if found is not None:
            warnings.warn(SlurmexpWarning(found[1].format()), stacklevel=2)
    return sweep


def load_sweep(path: str | Path) -> Sweep:
    """Read and validate a sweep file; SpecError lists every problem found."""
    path, text = read_text(path)
    return parse_sweep(text, path)
