"""The checks of a sweep file that span sections, run on the raw data and on the sections
that validated (see spec): placeholders in `command` and the shell quoting around them,
sampled distributions, parameters defined twice or never used, [[runs]] that miss a value.
"""
from __future__ import annotations

import difflib
import os
import re
import string
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slurmexp.errors import Problem

if TYPE_CHECKING:
    from slurmexp.sweep.spec import Distribution, EnvSpec, ResourceRequest, SampleSpec

BUILTIN_PLACEHOLDERS = ("run_id", "run_dir", "experiment_id")
QUOTE_FIX = "remove the quotes: slurmexp shell-quotes every value itself"


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
    for sub, other, example in (("low", d.high, 0), ("high", d.low, 1)):
        if getattr(d, sub) is None:
            if other is not None:   # a value on the right side of the other bound
                example = (other / 10 if sub == "low" else other * 10) if d.dist == "loguniform" and other > 0 \
                    else other - 1 if sub == "low" else other + 1
            elif d.dist == "loguniform":
                example = 1e-5 if sub == "low" else 1.0
            bad(sub, f"dist = {d.dist!r} needs {sub}", f"add {sub} = {example!r} under [{key}]")
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


def _raw_distributions(data: dict[str, Any]) -> list[tuple[str, Distribution]]:
    from pydantic import ValidationError as PydanticValidationError

    from slurmexp.sweep.spec import Distribution

    sample = data.get("sample")
    params = sample.get("params") if isinstance(sample, dict) else None
    out = []
    for name, raw in (params.items() if isinstance(params, dict) else []):
        try:
            out.append((name, Distribution.model_validate(raw)))
        except PydanticValidationError:
            pass
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


def project_root(folder: Path) -> tuple[Path, str]:
    """The sweep's project: the git work tree holding its folder (the nearest folder with a
    `.git`), else the folder itself; and those words, for messages."""
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists():
            return candidate, "the git work tree that holds the sweep file"
    return folder, "the sweep file's folder, as it is in no git work tree"


def output_dir_problem(raw: Any, file: str) -> tuple[bool, Problem] | None:
    """(refused?, problem) for a relative output_dir that climbs out of the sweep's folder:
    a warning while it stays in the sweep's project, refused outside it. An absolute path
    (or ~) is taken as written. Checked on the words, not the file system, so a run folder
    that is a symlink to scratch space is fine."""
    if not isinstance(raw, str) or not raw or os.path.isabs(os.path.expanduser(raw)):
        return None
    folder = Path(file).parent
    target = Path(os.path.normpath(folder / raw))
    if target == folder or folder in target.parents:
        return None
    root, what = project_root(folder)
    if target == root or root in target.parents:
        return False, Problem(file, "output_dir", f"output_dir = {raw!r} leaves the sweep's folder: "
                              f"runs are written to {target}", "", check="output_dir")
    return True, Problem(
        file, "output_dir", f"output_dir = {raw!r} resolves to {target}, outside the sweep's "
        f"project {root} ({what}); a relative output_dir must stay in the project",
        f'output_dir = "{target}" if you mean that folder (an absolute path is taken as written), '
        f'or output_dir = "slurmexp-runs" to keep the runs beside the sweep', check="output_dir")


def _override_problems(file: str, data: dict[str, Any], parts: dict[str, Any],
                       params: dict[str, str]) -> list[Problem]:
    """[[override]] `where` tables naming no parameter, or nothing (whether a table matches a
    run is known once the runs are expanded: sweep.overrides)."""
    raw = data.get("override")
    out: list[Problem] = []
    names = [n for n in params if n.isidentifier()]
    for i, table in enumerate(raw if isinstance(raw, list) else []):
        where = table.get("where") if isinstance(table, dict) else None
        if not isinstance(where, dict):
            continue        # missing or not a table: the schema says so
        if not where:
            out.append(Problem(file, f"override[{i}].where", f"[[override]] table {i}: where = {{}} "
                               "names no parameter, so it would match every run",
                               "move its keys into [resources], or name a parameter: "
                               f"where = {{ {names[0] if names else 'model'} = ... }}",
                               check="override_where"))
        for name in where:
            if name in params:
                continue
            close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
            fix = (f"did you mean {close[0]!r}? where = {{ {close[0]} = ... }}" if close else
                   f"name one of the parameters ({', '.join(names) or 'none'})")
            out.append(Problem(file, f"override[{i}].where.{name}",
                               f"[[override]] table {i}: where names {name!r}, which is not a "
                               f"parameter of this sweep", fix, check="undefined_name"))
    return out


def check_sweep(data: dict[str, Any], parts: dict[str, Any], file: str) -> list[Problem]:
    """Checks that span sections, on the raw data and on the sections that validated."""
    out: list[Problem] = []

    def add(key: str, message: str, fix: str = "", check: str = "value") -> None:
        out.append(Problem(file, key, message, fix, check=check))

    defined, run_keys = _parameter_keys(data)
    found = output_dir_problem(data.get("output_dir"), file) if "output_dir" in parts else None
    if found is not None and found[0]:
        out.append(found[1])
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
    else:
        # [sample] did not validate (a missing seed, one bad dist): its schema problems are
        # reported already; check each distribution that did validate now, not next round.
        out += [p for name, dist in _raw_distributions(data) for p in _check_distribution(file, name, dist)]
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
    out += _override_problems(file, data, parts, all_keys)
    # [resources], then each [[override]] table: the same checks on the keys each writes.
    tables: list[tuple[str, ResourceRequest]] = [("resources", res)] if res is not None else []
    tables += [(f"override[{i}]", t) for i, t in enumerate(parts.get("override") or [])]
    ckpt = parts.get("checkpoint")
    for where, table in tables:
        gpus = table.gpus if table.gpus is not None or where == "resources" or res is None else res.gpus
        if table.gpu_type and not gpus:
            add(f"{where}.gpu_type", f"gpu_type = {table.gpu_type!r} but gpus is {gpus or 0}",
                "set gpus = 1 (GPUs per task), or remove gpu_type")
        if ckpt is not None:
            from slurmexp.sweep.sbatch_options import SIGNAL, option_name

            for i, item in enumerate(table.sbatch or []):
                if "signal".startswith(option_name(item)):
                    add(f"{where}.sbatch[{i}]", f"{item!r} sets --signal, which slurmexp owns here: "
                        f"{SIGNAL[0]}", SIGNAL[1])
        if ckpt is not None and table.time_min is not None and ckpt.before_s >= table.time_min * 60:
            add("checkpoint.before", f"before = {ckpt.before!r} is not shorter than the time limit "
                f"({table.time}{'' if where == 'resources' else ' in ' + where}): the signal would "
                f"come as each run starts",
                f'before = "{max(table.time_min * 60 // 4, 1)}s" (Slurm may send it up to a minute '
                f"early, so leave the run time to work)")
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
    if "command" not in parts or parts["command"] is None:
        return out      # a function sweep: parameters are keyword arguments, no placeholders
    if not parts["command"].strip():
        words = " ".join(f"--{n} {{{n}}}" for n in all_keys if n.isidentifier() and n not in allow_unused)
        add("command", f"command is {'empty' if not parts['command'] else 'only whitespace'}: "
                       "every run would run nothing and count as COMPLETED",
            f'write the program to run, e.g. command = "python3 train.py{" " + words if words else ""}"',
            check="empty_command")
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

    return out
