"""The `sweep.toml` schema and its loader.

Every problem in a file is collected before anything is raised: a sweep is usually edited on
a login node between queue waits, and fixing one error per round trip wastes hours. To get
there each top-level section is validated on its own (a typo in [resources] must not hide a
missing placeholder in `command`), then cross-section checks run on whatever did validate.
"""
from __future__ import annotations

import difflib
import functools
import json
import math
import os
import re
import string
import tomllib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    computed_field,
)

from . import units
from .errors import Problem, SpecError

BUILTIN_PLACEHOLDERS = ("run_id", "run_dir", "experiment_id")
QUOTE_FIX = "remove the quotes: slurmexp shell-quotes every value itself"

# ----------------------------------------------------------------------------------------
# Shared machinery for strict TOML files (site.py uses it too)
# ----------------------------------------------------------------------------------------


def toml_type(value: Any) -> str:
    """The TOML word for a value, because users know their file, not Python's types."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    return type(value).__name__.replace("datetime", "date-time")


def key_path(*parts: str | int) -> str:
    """`resources.time`, `runs[2].lr`: dots between names, brackets for array positions."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def read_text(path: str | Path) -> tuple[Path, str]:
    """(absolute path, text), or a SpecError saying why the file cannot be read."""
    path = Path(path).expanduser().resolve()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: file not found", [
            Problem(str(path), "", "file not found", "check the path", check="file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read", [
            Problem(str(path), "", f"cannot read the file: {exc}", check="file")]) from None
    return path, text


def parse_toml_text(text: str, path: str | Path) -> dict[str, Any]:
    """The TOML data, or a SpecError naming the file and the line of the syntax error."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # Python 3.11 keeps the position only inside the message: "... (at line 3, column 7)".
        msg = str(exc)
        where = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        reason = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", msg)
        line = f"line {where.group(1)}, column {where.group(2)}" if where else "end of file"
        problem = Problem(str(path), "", f"TOML syntax error at {line}: {reason}",
                          "fix the TOML syntax (strings need quotes, tables [like.this])",
                          check="toml_syntax")
        raise SpecError(f"{path}:{where.group(1) if where else 'end'}: not valid TOML",
                        [problem]) from None


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
        else:
            return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _model_at(tp: Any, path: tuple) -> type[BaseModel] | None:
    """The model class found at a pydantic error location, to list its allowed keys."""
    for part in path:
        tp = _unwrap(tp)
        if _is_model(tp):
            field = tp.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return None
            tp = field.annotation
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        elif typing.get_origin(tp) is list:
            tp = typing.get_args(tp)[0]
        else:
            return None
    tp = _unwrap(tp)
    return tp if _is_model(tp) else None


def unknown_key_problem(file: str, parent: tuple, key: str, allowed: list[str]) -> Problem:
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    where = f" in [{key_path(*parent)}]" if parent else ""
    guess = f" (did you mean {close[0]!r}?)" if close else ""
    message = f"unknown key {key!r}{where}{guess}; allowed keys: {', '.join(allowed)}"
    fix = f"rename it to {close[0]!r}" if close else "remove it or rename it to one of the allowed keys"
    return Problem(file, key_path(*parent, key), message, fix, check="unknown_key")


_EXPECTED = {
    "string_type": "a string", "int_type": "an integer", "float_type": "a number",
    "bool_type": "true or false", "list_type": "an array", "dict_type": "a table",
    "model_type": "a table", "model_attributes_type": "a table", "datetime_type": "a date-time",
}


def _type_fix(last: str | None, expected: str, value: Any) -> str:
    # `last` is None for an array element, where "key = value" would be the wrong advice.
    lhs = f"{last} = " if last else ""
    if expected == "a string" and isinstance(value, (int, float)):
        text = "true" if value is True else "false" if value is False else repr(value)
        return f'put it in quotes: {lhs}"{text}"'
    if expected in ("an integer", "a number") and isinstance(value, str):
        return f"write the number without quotes: {lhs}{value.strip()}"
    if expected == "true or false" and isinstance(value, str):
        return f"write {lhs}true or {lhs}false, without quotes"
    if expected == "an array" and last and not isinstance(value, (list, dict)):
        return f"wrap it in brackets: {last} = [{json.dumps(value)}]"
    return ""


def problems_from_error(err: ValidationError, root: Any, file: str, prefix: tuple = ()) -> list[Problem]:
    """Turn pydantic's error list into Problems with key paths and plain-language fixes."""
    problems = []
    for e in err.errors(include_url=False):
        loc = prefix + tuple(e["loc"])
        kind, value = e["type"], e.get("input")
        key = key_path(*loc)
        last = str(next((p for p in reversed(loc) if isinstance(p, str)), key))
        if kind == "extra_forbidden":
            model = _model_at(root, tuple(e["loc"])[:-1])
            allowed = list(model.model_fields) if model else []
            problems.append(unknown_key_problem(file, loc[:-1], str(loc[-1]), allowed))
            continue
        if kind == "missing":
            problems.append(Problem(file, key, f"required key {last!r} is missing",
                                    f"add {last} = ... under [{key_path(*loc[:-1])}]" if loc[:-1]
                                    else f"add {last} = ... at the top of the file",
                                    check="missing_key"))
            continue
        if kind in _EXPECTED:
            expected = _EXPECTED[kind]
            message = f"{last} must be {expected}, got {toml_type(value)} {value!r}"
            fix = _type_fix(last if isinstance(loc[-1], str) else None, expected, value)
            problems.append(Problem(file, key, message, fix, check="type"))
            continue
        ctx = e.get("ctx") or {}
        if kind == "value_error":
            message = str(ctx.get("error", e["msg"]))
        elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
            op = {"greater_than_equal": ">=", "greater_than": ">",
                  "less_than_equal": "<=", "less_than": "<"}[kind]
            bound = next(iter(ctx.values()))
            message = f"{last} must be {op} {bound}, got {value!r}"
        elif kind == "string_too_short":
            message = f"{last} must not be empty"
        elif kind == "literal_error":
            message = f"{last} must be one of {ctx.get('expected')}, got {value!r}"
        else:
            message = f"{last}: {e['msg']}"
        problems.append(Problem(file, key, message, check="value"))
    return problems


@functools.lru_cache(maxsize=None)
def _field_adapter(model: type[BaseModel], name: str) -> TypeAdapter:
    field = model.model_fields[name]
    tp = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
    return TypeAdapter(tp)


def validate_sections(model: type[BaseModel], data: dict[str, Any], file: str,
                      context: dict[str, Any], internal: tuple[str, ...] = ()
                      ) -> tuple[dict[str, Any], list[Problem]]:
    """Validate each top-level key on its own so that one bad section hides no other problem.

    Returns the keys that validated (for cross-section checks) and the problems found.
    `internal` fields are filled in by the loader and may not be written in the file.
    """
    allowed = [n for n in model.model_fields if n not in internal]
    problems: list[Problem] = []
    parts: dict[str, Any] = {}
    for key in data:
        if key not in allowed:
            problems.append(unknown_key_problem(file, (), key, allowed))
    for name in allowed:
        if name not in data:
            if model.model_fields[name].is_required():
                problems.append(Problem(file, name, f"required key {name!r} is missing",
                                        f"add {name} = ... at the top of the file",
                                        check="missing_key"))
            continue
        field = model.model_fields[name]
        value_type = _dict_value_type(field.annotation) if not field.metadata else None
        if value_type is not None and isinstance(data[name], dict):
            # Table of tables ([nodes.c1], [partitions.cpu]): check each entry on its own, so
            # one bad partition does not hide the cross-references of the others.
            parts[name] = {}
            for entry, value in data[name].items():
                try:
                    parts[name][entry] = _adapter(value_type).validate_python(
                        value, context=context, strict=True)
                except ValidationError as err:
                    problems += problems_from_error(err, value_type, file, (name, entry))
            continue
        try:
            # strict=True: a bare adapter does not inherit the model's strict config.
            parts[name] = _field_adapter(model, name).validate_python(
                data[name], context=context, strict=True)
        except ValidationError as err:
            problems += problems_from_error(err, field.annotation, file, (name,))
    return parts, problems


def _dict_value_type(annotation: Any) -> Any:
    tp = _unwrap(annotation)
    return typing.get_args(tp)[1] if typing.get_origin(tp) is dict else None


@functools.lru_cache(maxsize=None)
def _adapter(tp: Any) -> TypeAdapter:
    return TypeAdapter(tp)


# ----------------------------------------------------------------------------------------
# Field types
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


def _slurm_time(value: str) -> str:
    units.parse_time(value)
    return value


def _finite_time(value: str) -> str:
    minutes = units.parse_time(value)
    if minutes is None:
        raise ValueError(f"{value!r}: a run must ask for a finite time so Slurm can schedule it "
                         f"(e.g. \"1-00:00:00\")")
    if minutes == 0:
        raise ValueError(f"{value!r} is zero minutes (Slurm would read it as no limit); "
                         f"give the time the run needs")
    return value


def _slurm_mem(value: str) -> str:
    if units.parse_mem(value) == 0:
        raise ValueError(f"{value!r} is zero (Slurm reads --mem=0 as 'all memory of the node'); "
                         f"give the memory the run needs")
    return value


def _relative_path(value: Any, info: ValidationInfo) -> Path:
    if isinstance(value, Path):
        return value
    if not isinstance(value, str):
        raise ValueError(f"must be a path string, got {toml_type(value)} {value!r}")
    if not value:
        raise ValueError("must not be empty (use \".\" for the file's own folder)")
    base = Path((info.context or {}).get("base", "."))
    return (base / os.path.expanduser(value)).resolve()


Scalar = Annotated[Any, AfterValidator(_scalar)]
ParamValues = Annotated[Any, AfterValidator(_param_values)]
Number = Annotated[Any, AfterValidator(_number)]
Text = Annotated[str, Strict(), Field(min_length=1)]
NameStr = Annotated[str, Strict(), AfterValidator(_name)]
TimeStr = Annotated[str, Strict(), AfterValidator(_slurm_time)]
RunTimeStr = Annotated[str, Strict(), AfterValidator(_finite_time)]
MemStr = Annotated[str, Strict(), AfterValidator(_slurm_mem)]
RelPath = Annotated[Path, BeforeValidator(_relative_path)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


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
    command: Text
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
        return _placeholders(self.command)[0]

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
            bad("values", f"dist = \"choice\" needs values = [...]", "add values = [\"a\", \"b\"]")
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

    if "command" not in parts:
        return out
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
    return out


def parse_sweep(text: str, path: str | Path) -> Sweep:
    """Validate sweep text as if read from `path` (relative paths resolve against its folder)."""
    path = Path(path).expanduser().resolve()
    file = str(path)
    data = parse_toml_text(text, path)
    context = {"base": path.parent}
    parts, problems = validate_sections(Sweep, data, file, context, internal=("path", "raw_text"))
    problems += check_sweep(data, parts, file)
    if problems:
        raise SpecError(f"{file}: {len(problems)} problem(s) in the sweep file", problems)
    try:
        return Sweep.model_validate({**data, "path": path, "raw_text": text}, context=context)
    except ValidationError as err:  # only if a section check and the whole model disagree
        raise SpecError(f"{file}: problems in the sweep file",
                        problems_from_error(err, Sweep, file)) from None


def load_sweep(path: str | Path) -> Sweep:
    """Read and validate a sweep file; SpecError lists every problem found."""
    path, text = read_text(path)
    return parse_sweep(text, path)
