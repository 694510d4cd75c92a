"""Strict TOML files: the machinery `sweep.toml` (spec) and `site.toml` (site) share.

Both files are edited by hand, far from the code that reads them, so both get the same
treatment: a syntax error names its line, a pydantic error becomes a `Problem` with the key
path and a fix in TOML terms (not Python's), an unknown key comes with the closest allowed one,
and each top-level section is validated on its own so one bad section hides no other.
The field types here are the ones whose rules are Slurm's or the file's, not one schema's.
"""
from __future__ import annotations

import difflib
import functools
import json
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union

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
)

from slurmexp import units
from slurmexp.errors import Problem, SpecError

# ----------------------------------------------------------------------------------------
# Reading, parsing, and pydantic's errors as Problems
# ----------------------------------------------------------------------------------------


class FixError(ValueError):
    """A validator's refusal that knows the fix: `suggest` is a value to write instead (the
    Problem's fix becomes `key = <suggest>`, which works when pasted), `fix` any other advice."""

    def __init__(self, message: str, fix: str = "", suggest: Any = None):
        super().__init__(message)
        self.fix = fix
        self.suggest = suggest


def toml_value(value: Any) -> str:
    """`value` as TOML source (strings in double quotes, escaped as JSON and TOML agree)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return repr(value)


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


def _example(model: type[BaseModel] | None, key: str) -> str:
    """A value a missing key could take, as TOML ("..." when its type says nothing)."""
    field = model.model_fields.get(key) if model is not None else None
    tp = _unwrap(field.annotation) if field is not None else None
    return {int: "1", float: "1.0", bool: "true"}.get(tp, "...")


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
        try:
            number = int(value.strip()) if expected == "an integer" else float(value.strip())
        except ValueError:  # "one", "1.5" for an integer: no number to unquote; give one
            return f"write a {'whole ' if expected == 'an integer' else ''}number without quotes, e.g. {lhs}1"
        return f"write the number without quotes: {lhs}{number!r}"
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
            example = _example(_model_at(root, tuple(e["loc"])[:-1]), last)
            problems.append(Problem(file, key, f"required key {last!r} is missing",
                                    f"add {last} = {example} under [{key_path(*loc[:-1])}]" if loc[:-1]
                                    else f"add {last} = {example} at the top of the file",
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
            error = ctx.get("error", e["msg"])
            message = str(error)
            if isinstance(error, FixError):
                fix = f"{last} = {toml_value(error.suggest)}" if error.suggest is not None else ""
                fix += (f" ({error.fix})" if fix else error.fix) if error.fix else ""
                problems.append(Problem(file, key, message, fix, check="value"))
                continue
        elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
            op = {"greater_than_equal": ">=", "greater_than": ">",
                  "less_than_equal": "<=", "less_than": "<"}[kind]
            bound = next(iter(ctx.values()))
            message = f"{last} must be {op} {bound}, got {value!r}"
        elif kind == "string_too_short":
            message = f"{last} must not be empty"
        elif kind == "literal_error":
            message = f"{last} must be one of {ctx.get('expected')}, got {value!r}"
            choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
            if choices and isinstance(loc[-1], str):
                best = difflib.get_close_matches(str(value), choices, n=1, cutoff=0) or choices
                problems.append(Problem(file, key, message, f"{last} = {toml_value(best[0])}", check="value"))
                continue
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
# Loading a whole file
# ----------------------------------------------------------------------------------------

Model = TypeVar("Model", bound=BaseModel)
Check = Callable[[dict[str, Any], dict[str, Any], str], list[Problem]]


def parse_strict(model: type[Model], text: str, path: str | Path, check: Check,
                 what: str) -> Model:
    """`text` validated into `model` as if read from `path`, or a SpecError with every problem.

    Sections first, then `check(data, parts, file)` across the sections that validated, and
    only then the whole model; relative paths resolve against the file's folder. The model's
    `path` and `raw_text` fields are filled in here and may not be written in the file.
    """
    path = Path(path).expanduser().resolve()
    file = str(path)
    data = parse_toml_text(text, path)
    context = {"base": path.parent}
    parts, problems = validate_sections(model, data, file, context, internal=("path", "raw_text"))
    problems += check(data, parts, file)
    if problems:
        raise SpecError(f"{file}: {len(problems)} problem(s) in the {what} file", problems)
    try:
        return model.model_validate({**data, "path": path, "raw_text": text}, context=context)
    except ValidationError as err:  # only if a section check and the whole model disagree
        raise SpecError(f"{file}: problems in the {what} file",
                        problems_from_error(err, model, file)) from None


# ----------------------------------------------------------------------------------------
# Field types both files use
# ----------------------------------------------------------------------------------------


def _slurm_time(value: str) -> str:
    units.parse_time(value)
    return value


def _finite_time(value: str) -> str:
    formats = '"MM", "MM:SS", "HH:MM:SS", "D-HH", "D-HH:MM" or "D-HH:MM:SS"'
    try:
        minutes = units.parse_time(value)
    except ValueError as exc:   # its list of formats ends in UNLIMITED, which a run may not ask for
        raise FixError(str(exc).replace(units.TIME_FORMATS, formats), f"a finite time: {formats}",
                       suggest="01:00:00") from None
    if minutes is None:
        raise FixError(f"{value!r}: a run must ask for a finite time so Slurm can schedule it",
                       suggest="1-00:00:00")
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


Text = Annotated[str, Strict(), Field(min_length=1)]
TimeStr = Annotated[str, Strict(), AfterValidator(_slurm_time)]
RunTimeStr = Annotated[str, Strict(), AfterValidator(_finite_time)]
MemStr = Annotated[str, Strict(), AfterValidator(_slurm_mem)]
RelPath = Annotated[Path, BeforeValidator(_relative_path)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
