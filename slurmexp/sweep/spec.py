"""The `sweep.toml` schema and its checks.

Every problem in a file is collected before anything is raised: a sweep is usually edited on
a login node between queue waits, and fixing one error per round trip wastes hours. To get
there each top-level section is validated on its own (a typo in [resources] must not hide a
missing placeholder in `command`), then cross-section checks run on whatever did validate.
The strict-TOML machinery that does this, shared with `site.toml`, is in strict_toml.
"""
from __future__ import annotations

import difflib
import json
import math
import re
import string
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, Strict, computed_field

from slurmexp import units
from slurmexp.errors import Problem
from slurmexp.sweep.strict_toml import (
    MemStr,
    RelPath,
    RunTimeStr,
    StrictModel,
    Text,
    parse_strict,
    read_text,
    toml_type,
)

BUILTIN_PLACEHOLDERS = ("run_id", "run_dir", "experiment_id")
QUOTE_FIX = "remove the quotes: slurmexp shell-quotes every value itself"

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


def _name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._-]+", value):
        raise ValueError(f"{value!r} may only contain letters, digits, '.', '_' and '-' "
                         f"(it becomes part of job names and directory names)")
    return value


def _function_ref(value: str) -> str:
    module, sep, attr = value.partition(":")
    if not sep or not all(p.isidentifier() for p in module.split(".")) \
            or not all(p.isidentifier() for p in attr.split(".")):
        raise ValueError(f"{value!r} is not \"module:callable\" (e.g. \"train:main\")")
    return value


Scalar = Annotated[Any, AfterValidator(_scalar)]
FunctionRef = Annotated[str, Strict(), AfterValidator(_function_ref)]
ParamValues = Annotated[Any, AfterValidator(_param_values)]
Number = Annotated[Any, AfterValidator(_number)]
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
    gpu_type: Text | None = None
    cpus: Annotated[int, Field(ge=1)] | None = None
    mem: MemStr | None = None
    time: RunTimeStr | None = None
    partition: Text | None = None
    qos: Text | None = None
    reservation: Text | None = None
    account: Text | None = None
    constraint: Text | None = None
    nodes: Annotated[int, Field(ge=1)] | None = None
    array_parallelism: Annotated[int, Field(ge=1)] | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def mem_mb(self) -> int | None:
        return units.parse_mem(self.mem) if self.mem is not None else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def time_min(self) -> int | None:
        return units.parse_time(self.time) if self.time is not None else None


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
    command: Text | None = None
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
    env: EnvSpec = Field(default_factory=EnvSpec)
    retry: RetrySpec = Field(default_factory=RetrySpec)
    # Filled in by the loader, never read from the file.
    path: Path
    raw_text: str

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
        data = self.model_dump(mode="json", exclude={"path", "raw_text"})
        return json.loads(json.dumps(data, sort_keys=True))


# ----------------------------------------------------------------------------------------
# Cross-section checks
# ----------------------------------------------------------------------------------------


def _shell_state(text: str, state: str | None, escaped: bool) -> tuple[str | None, bool]:
    """Advance a tiny model of bash quoting over literal command text."""
    for ch in text:
        if escaped:
            escaped = False
        elif state == "'":
            if ch == "'":
                state = None
        elif ch == "\\":
            escaped = True
        elif state == '"':
            if ch == '"':
                state = None
        elif ch in "'\"":
            state = ch
    return state, escaped


def _placeholders(command: str) -> tuple[list[str], list[tuple[str, str]]]:
    """(names, [(message, fix)]) for the {placeholders} in a command."""
    names: list[str] = []
    issues: list[tuple[str, str]] = []
    try:
        pieces = list(string.Formatter().parse(command))
    except ValueError as exc:
        return [], [(f"command has unbalanced braces: {exc}",
                     "write {{ and }} for literal braces, {name} for a parameter")]
    state, escaped = None, False
    for literal, field, spec, conversion in pieces:
        state, escaped = _shell_state(literal, state, escaped)
        if field is None:
            continue
        shown = "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        if field == "" or field.isdigit():
            issues.append((f"positional placeholder {shown} in command",
                           "name the parameter: {lr}; write {{ and }} for literal braces"))
            continue
        if not field.isidentifier():
            issues.append((f"placeholder {shown} is not a plain parameter name",
                           "use {name} only; attribute or index access is not supported"))
            continue
        if conversion or spec:
            issues.append((f"placeholder {shown} has a format spec or conversion",
                           f"write {{{field}}} and give the value exactly as it should appear"))
        if state is not None:
            kind = "single" if state == "'" else "double"
            issues.append((f"placeholder {{{field}}} is written inside {kind} quotes", QUOTE_FIX))
        elif escaped:
            issues.append((f"placeholder {{{field}}} follows a backslash, which would "
                                  f"escape the quoting slurmexp adds", "remove the backslash"))
        escaped = False
        if field not in names:
            names.append(field)
    if state is not None:
        issues.append((f"command has an unterminated {'single' if state == chr(39) else 'double'} "
                           f"quote", "close the quote"))
    return names, issues


def _check_distribution(file: str, name: str, d: Distribution) -> list[Problem]:
    key = f"sample.params.{name}"
    out: list[Problem] = []

    def bad(sub: str, message: str, fix: str = "") -> None:
        out.append(Problem(file, f"{key}.{sub}" if sub else key, message, fix, check="value"))

    if d.dist == "choice":
        if d.values is None:
            bad("values", "dist = \"choice\" needs values = [...]", "add values = [\"a\", \"b\"]")
        elif not d.values:
            bad("values", "values is empty", "give at least one value")
        for sub in ("low", "high"):
            if getattr(d, sub) is not None:
                bad(sub, f"{sub} has no meaning for dist = \"choice\"", f"remove {sub}")
        return out
    if d.values is not None:
        bad("values", f"values has no meaning for dist = {d.dist!r}", "remove values, use low/high")
    for sub in ("low", "high"):
        if getattr(d, sub) is None:
            bad(sub, f"dist = {d.dist!r} needs {sub}", f"add {sub} = ...")
    if d.low is None or d.high is None:
        return out
    if d.dist == "int":
        for sub in ("low", "high"):
            if not isinstance(getattr(d, sub), int):
                bad(sub, f"dist = \"int\" needs whole-number bounds, got {getattr(d, sub)!r}")
        if d.low > d.high:
            bad("", f"low {d.low} is above high {d.high}", "swap them")
    else:
        if d.low >= d.high:
            bad("", f"low {d.low} must be below high {d.high}", "swap them or widen the range")
        if d.dist == "loguniform" and d.low <= 0:
            bad("low", f"loguniform needs low > 0, got {d.low}", "use e.g. low = 1e-5")
    return out


def _parameter_keys(data: dict[str, Any]) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Where each parameter is named in the raw file: (product name -> keys, runs name -> key).

    Names come from the raw data, not the validated sections, so that a bad value in
    [params] does not also produce "{x} is not a parameter" for every placeholder.
    """
    defined: dict[str, list[str]] = {}
    params = data.get("params")
    if isinstance(params, dict):
        for name in params:
            defined.setdefault(name, []).append(f"params.{name}")
    zips = data.get("zip")
    for i, group in enumerate(zips if isinstance(zips, list) else []):
        for name in group if isinstance(group, dict) else []:
            defined.setdefault(name, []).append(f"zip[{i}].{name}")
    sample = data.get("sample")
    sampled = sample.get("params") if isinstance(sample, dict) else None
    for name in sampled if isinstance(sampled, dict) else []:
        defined.setdefault(name, []).append(f"sample.params.{name}")
    run_keys: dict[str, str] = {}
    runs = data.get("runs")
    for i, run in enumerate(runs if isinstance(runs, list) else []):
        for name in run if isinstance(run, dict) else []:
            run_keys.setdefault(name, f"runs[{i}].{name}")
    return defined, run_keys


def check_sweep(data: dict[str, Any], parts: dict[str, Any], file: str) -> list[Problem]:
    """Checks that span sections, on the raw data and on the sections that validated."""
    out: list[Problem] = []

    def add(key: str, message: str, fix: str = "", check: str = "value") -> None:
        out.append(Problem(file, key, message, fix, check=check))

    defined, run_keys = _parameter_keys(data)
    for i, group in enumerate(parts.get("zip", [])):
        if not group:
            add(f"zip[{i}]", "empty [[zip]] group", "give two or more lists of equal length, or remove it")
        lengths = {name: len(values) for name, values in group.items()}
        if len(set(lengths.values())) > 1:
            add(f"zip[{i}]", "lists in one [[zip]] group must have equal length; got "
                + ", ".join(f"{n} has {k}" for n, k in lengths.items()),
                "make the lists the same length (they vary together)", check="zip_length")
    sample: SampleSpec | None = parts.get("sample")
    if sample is not None:
        if not sample.params:
            add("sample.params", "[sample] has no parameters", "add [sample.params] entries or remove [sample]")
        for name, dist in sample.params.items():
            out += _check_distribution(file, name, dist)
    for name, keys in defined.items():
        for key in keys[1:]:
            add(key, f"parameter {name!r} is defined in more than one place: {', '.join(keys)}",
                "define each parameter once: in [params], one [[zip]] group or [sample.params]",
                check="parameter_conflict")

    all_keys = {name: keys[0] for name, keys in defined.items()}
    for name, key in run_keys.items():
        all_keys.setdefault(name, key)
    for name, key in all_keys.items():
        if not name.isidentifier():
            add(key, f"parameter name {name!r} is not an identifier",
                "use letters, digits and _ only, not starting with a digit", check="parameter_name")
        elif name in BUILTIN_PLACEHOLDERS:
            add(key, f"parameter name {name!r} is reserved for slurmexp's own placeholder",
                "rename the parameter", check="parameter_name")

    raw_unused = data.get("allow_unused")
    allow_unused = [n for n in raw_unused if isinstance(n, str)] if isinstance(raw_unused, list) else []
    for i, name in enumerate(allow_unused):
        if name not in all_keys:
            add(f"allow_unused[{i}]", f"allow_unused names {name!r}, which is not a parameter",
                "remove it, or check the spelling", check="undefined_name")

    res: ResourceRequest | None = parts.get("resources")
    if res is not None and res.gpu_type and not res.gpus:
        add("resources.gpu_type", f"gpu_type = {res.gpu_type!r} but gpus is {res.gpus or 0}",
            "set gpus = 1 (GPUs per task), or remove gpu_type")
    env: EnvSpec | None = parts.get("env")
    if env is not None:
        for name in env.vars:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                add(f"env.vars.{name}", f"{name!r} is not a valid shell variable name",
                    "use letters, digits and _ only, not starting with a digit")
    if ("command" in data) == ("function" in data):
        both = "command" in data
        add("function" if both else "command",
            "give either command or function, not both" if both else
            "required key 'command' is missing",
            "keep one of them" if both else
            "add command = ... at the top of the file (or function = \"module:callable\")",
            check="value" if both else "missing_key")
    if "command" not in parts:
        return out      # a function sweep: parameters are keyword arguments, no placeholders
    used, issues = _placeholders(parts["command"])
    for message, fix in issues:
        add("command", message, fix,
            check="quoted_placeholder" if fix == QUOTE_FIX else "placeholder")
    known = list(all_keys) + list(BUILTIN_PLACEHOLDERS)
    for name in used:
        if name not in known:
            close = difflib.get_close_matches(name, [k for k in known if k.isidentifier()], n=1, cutoff=0.6)
            add("command", f"placeholder {{{name}}} is not a parameter or a built-in "
                           f"(parameters: {', '.join(all_keys) or 'none'}; built-ins: "
                           f"{', '.join(BUILTIN_PLACEHOLDERS)})",
                f"did you mean {{{close[0]}}}?" if close else f"define {name} in [params] or fix the name",
                check="placeholder")
        elif name in run_keys and name not in defined and defined:
            add("command", f"placeholder {{{name}}} has a value only in [[runs]]; the runs made "
                           f"from params/zip/sample have none",
                f"add {name} to [params] too", check="placeholder")
    for name, key in all_keys.items():
        if name not in used and name not in allow_unused and name.isidentifier():
            add(key, f"parameter {name!r} does not appear in command",
                f"use {{{name}}} in command, or add \"{name}\" to allow_unused", check="unused_parameter")
    needed = [n for n in used if n in all_keys]
    raw_runs = data.get("runs")
    for i, run in enumerate(raw_runs if isinstance(raw_runs, list) else []):
        missing = [n for n in needed if isinstance(run, dict) and n not in run]
        if missing:
            add(f"runs[{i}]", f"this run gives no value for {', '.join(missing)}",
                "each [[runs]] entry must give every parameter used in command", check="run_incomplete")
    return out


def parse_sweep(text: str, path: str | Path) -> Sweep:
    """Validate sweep text as if read from `path` (relative paths resolve against its folder)."""
    return parse_strict(Sweep, text, path, check_sweep, "sweep")


def load_sweep(path: str | Path) -> Sweep:
    """Read and validate a sweep file; SpecError lists every problem found."""
    path, text = read_text(path)
    return parse_sweep(text, path)
