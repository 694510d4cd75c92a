"""Render the sbatch script of one array chunk (pure: reads templates, writes nothing).

The script is the same text for every task of a chunk and does not grow with the sweep; the
files it reads (manifest, run folders) are written by `experiment_files`.

Templates come in layers (base.sh.j2 <- slurm.sh.j2 <- a site's or sweep's own file), searched
first in the folder of the site/sweep template and then in the package, so a site changes only
the blocks it needs and inherits fixes to the rest.
"""
from __future__ import annotations

import functools
import hashlib
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import jinja2
import jinja2.meta

from slurmexp import layout, units
from slurmexp.errors import Problem, SpecError
from slurmexp.sweep.plan import ArrayChunk

PACKAGE_TEMPLATES = Path(__file__).resolve().parent / "templates"
DEFAULT_TEMPLATE = "slurm.sh.j2"
# Package layers are also reachable as "slurmexp/<name>", so a site folder that replaces a layer
# with a file of the same name can still extend the original instead of itself.
PACKAGE_PREFIX = "slurmexp"
_LAYER_NAMES = frozenset({"base.sh.j2", "slurm.sh.j2"})

_SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# sbatch splits #SBATCH lines on whitespace, strips quotes and backslashes and treats an
# unquoted '#' as the start of a comment; a value with any of these would arrive changed.
_SBATCH_UNSAFE = re.compile(r"[\s\"'\\#]|[\x00-\x1f\x7f]")


@dataclass
class ScriptContext:
    """Everything one chunk's script needs; the planner and launch fill it."""

    experiment_id: str
    chunk: ArrayChunk
    exp_dir: Path
    workdir: Path
    manifest_path: Path
    runs_dir: Path
    job_name: str
    comment: str
    env_setup: list[str] = field(default_factory=list)     # shell lines, run as written
    env_modules: list[str] = field(default_factory=list)
    env_vars: dict[str, str] = field(default_factory=dict)
    template: Path | None = None                           # a site's or sweep's own layer
    cluster: str = ""
    checkpoint: Any = None                                 # the sweep's CheckpointSpec, if any
    heartbeat_s: int = 30                                  # [liveness] heartbeat, in seconds


# --------------------------------------------------------------------------------------------
# Failing with the template's name


def _template_frame(frame) -> tuple[str, int | None] | None:
    """Name and line of the template whose compiled code runs in `frame`, if any.

    Jinja puts `__jinja_template__` into the globals of each compiled template, blocks included,
    so the innermost such frame is the layer that was rendering, not the leaf template.
    """
    tmpl = frame.f_globals.get("__jinja_template__")
    if tmpl is None:
        return None
    name = tmpl.filename or tmpl.name or "<template>"
    try:
        line = tmpl.get_corresponding_lineno(frame.f_lineno)
    except Exception:  # pragma: no cover - line maps are best effort
        line = None
    return name, line


def _where_in_stack() -> tuple[str, int | None]:
    frame = sys._getframe(1)
    while frame is not None:
        found = _template_frame(frame)
        if found:
            return found
        frame = frame.f_back
    return "<template>", None


def _where_in_traceback(tb) -> tuple[str, int | None] | None:
    # Jinja rewrites the traceback of a failed render: each template frame becomes a fake frame
    # compiled under the template's file name and line, marked by `__jinja_exception__`.
    found = None
    while tb is not None:
        f_globals = tb.tb_frame.f_globals
        if "__jinja_exception__" in f_globals:
            found = (tb.tb_frame.f_code.co_filename, tb.tb_lineno)
        elif "__jinja_template__" in f_globals:
            tmpl = f_globals["__jinja_template__"]
            found = (tmpl.filename or tmpl.name, tmpl.get_corresponding_lineno(tb.tb_lineno))
        tb = tb.tb_next
    return found


def _spec_error(name: str, line: int | None, message: str, fix: str = "") -> SpecError:
    at = f"{name}, line {line}" if line else name
    return SpecError(
        f"template {at}: {message}",
        [Problem(file=name, key=f"line {line}" if line else "", message=message, fix=fix,
                 check="render")],
    )


def _fail(message: str, fix: str = "") -> NoReturn:
    name, line = _where_in_stack()
    raise _spec_error(name, line, message, fix)


# --------------------------------------------------------------------------------------------
# Filters and globals (every user-supplied value reaches the script through one of these)


def _raise(message: str) -> NoReturn:
    """`{{ raise("...") }}`: a template's guard. Stops rendering; the error names the template."""
    _fail(str(message))


def _text(value: Any, what: str) -> str:
    if value is None:
        _fail(f"{what}: got None where a value is needed")
    text = os.fspath(value) if isinstance(value, os.PathLike) else str(value)
    if "\x00" in text:
        _fail(f"{what}: value {text!r} contains a NUL byte")
    return text


def _shquote(value: Any) -> str:
    """Quote one value as one shell word; the only way values enter shell code."""
    return shlex.quote(_text(value, "shquote"))


def _comment_text(value: Any) -> str:
    """A value inside a '#' comment line: a newline would end the comment and start code."""
    text = _text(value, "comment")
    if re.search(r"[\r\n\x00-\x08\x0b-\x1f\x7f]", text):
        _fail(f"value {text!r} contains a line break or control character")
    return text


def _sbatch_value(value: Any, option: str = "#SBATCH") -> str:
    """A value on an #SBATCH line that sbatch must read back unchanged (names, specs)."""
    text = _text(value, option)
    if not text or _SBATCH_UNSAFE.search(text):
        _fail(f"{option}={text!r}: sbatch would split, truncate or unquote this value "
              f"(whitespace, quotes, backslash, '#' or control characters)",
              fix="use a plain Slurm name without spaces")
    return text


def _sbatch_path(value: Any, option: str = "#SBATCH", suffix: str = "") -> str:
    """A path on an #SBATCH line, quoted the way sbatch's tokenizer unquotes it.

    A '%' in the folder is doubled because sbatch expands %A, %a, %j ... in --output/--error;
    a backslash is refused because it switches that expansion off for the whole name.
    """
    text = _text(value, option)
    if re.search(r"[\r\n\x00-\x1f\x7f\\]", text):
        _fail(f"{option}: path {text!r} contains a line break, control character or "
              f"backslash, which an #SBATCH line cannot carry",
              fix="move the experiment to a path without them")
    if option in ("--output", "--error"):
        text = text.replace("%", "%%")
    text += suffix
    if re.search(r"[\s\"'#]", text):
        text = '"' + text.replace('"', '\\"') + '"'
    return text


def _slurm_time(minutes: Any) -> str:
    """Minutes as D-HH:MM:SS, the one time format every sbatch version reads the same way."""
    if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes < 1:
        _fail(f"--time: {minutes!r} is not a positive number of minutes")
    return units.format_seconds(minutes * 60, always_days=True)


def _slurm_mem(mib: Any) -> str:
    if isinstance(mib, bool) or not isinstance(mib, int) or mib < 1:
        _fail(f"--mem: {mib!r} is not a positive number of MiB")
    return f"{mib}M"


def _positive_int(value: Any, option: str = "#SBATCH") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        _fail(f"{option}: {value!r} is not a positive integer")
    return value


def _signal_name(value: Any) -> str:
    """A [checkpoint] signal: one of the names the sweep schema allows, nothing else."""
    from slurmexp.sweep.spec import CHECKPOINT_SIGNALS

    text = _text(value, "--signal")
    if text not in CHECKPOINT_SIGNALS:
        _fail(f"--signal: {text!r} is not one of {', '.join(CHECKPOINT_SIGNALS)}")
    return text


def _shell_name(name: Any) -> str:
    text = _text(name, "environment variable")
    if not _SHELL_NAME.match(text):
        _fail(f"environment variable name {text!r} is not a shell variable name",
              fix="use letters, digits and underscores, not starting with a digit")
    if text.startswith("SLURMEXP_"):
        _fail(f"environment variable {text!r} is set by slurmexp for every run; a sweep "
              f"must not override it")
    return text


def _shell_code(line: Any) -> str:
    """A setup line is the sweep's own shell code (like its command): written as it is."""
    return _text(line, "setup line")


@functools.lru_cache(maxsize=16)
def _environment(site_dir: str | None) -> jinja2.Environment:
    package = jinja2.FileSystemLoader(str(PACKAGE_TEMPLATES))
    loaders: list[jinja2.BaseLoader] = []
    if site_dir is not None:
        loaders.append(jinja2.FileSystemLoader(site_dir))
    loaders += [package, jinja2.PrefixLoader({PACKAGE_PREFIX: package})]
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        shquote=_shquote,
        comment_text=_comment_text,
        sbatch_value=_sbatch_value,
        sbatch_path=_sbatch_path,
        slurm_time=_slurm_time,
        slurm_mem=_slurm_mem,
        positive_int=_positive_int,
        shell_name=_shell_name,
        signal_name=_signal_name,
        shell_code=_shell_code,
    )
    env.globals["raise"] = _raise
    return env


def _resolve_template(template: Path | None) -> tuple[jinja2.Environment, str]:
    if template is None:
        return _environment(None), DEFAULT_TEMPLATE
    template = Path(template).absolute()
    if template.name in _LAYER_NAMES:
        raise SpecError(
            f"template {template}: its name is the name of a package layer",
            [Problem(file=str(template), key="", check="render",
                     message=f"a site or sweep template named {template.name!r} would find "
                             f"itself when it extends {template.name!r}",
                     fix='rename it, e.g. "site-<name>.sh.j2", and keep '
                         '{% extends "slurm.sh.j2" %}')],
        )
    if not template.is_file():
        raise SpecError(
            f"template {template} does not exist",
            [Problem(file=str(template), key="", message="template file not found",
                     fix="fix the template path in site.toml or sweep.toml", check="render")],
        )
    return _environment(str(template.parent)), template.name


# --------------------------------------------------------------------------------------------
# Rendering


def _check_path(what: str, path: Path) -> str:
    text = os.fspath(Path(path).absolute())
    if re.search(r"[\r\n\x00]", text):
        raise SpecError(f"{what} {text!r} contains a line break",
                        [Problem(file="", key=what, message="path contains a line break",
                                 check="render")])
    return text


def _check_directives_first(text: str, template_name: str) -> None:
    """sbatch ignores #SBATCH lines after the first command; a layer must not hide them there."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("#!"):
        raise _spec_error(template_name, 1, "the script must start with a '#!' line")
    seen_command = None
    for number, line in enumerate(lines[1:], start=2):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#SBATCH"):
            if seen_command is not None:
                raise _spec_error(
                    template_name, None,
                    f"rendered line {number} ({stripped!r}) comes after the command on line "
                    f"{seen_command}; sbatch would ignore it",
                    fix="put only comments in the header block and #SBATCH lines in directives")
        elif not stripped.startswith("#") and seen_command is None:
            seen_command = number


def render_script(ctx: ScriptContext) -> str:
    """The sbatch script text of one chunk. Pure: reads templates, writes nothing."""
    env, name = _resolve_template(ctx.template)
    exp_dir = _check_path("exp_dir", ctx.exp_dir)
    variables = {
        "experiment_id": ctx.experiment_id,
        "chunk": ctx.chunk,
        "resources": ctx.chunk.resources,
        "exp_dir": exp_dir,
        "workdir": _check_path("workdir", ctx.workdir),
        "manifest_path": _check_path("manifest_path", ctx.manifest_path),
        "manifest_files_path": _check_path("manifest_path", layout.manifest_files_of(ctx.manifest_path)),
        "runs_dir": _check_path("runs_dir", ctx.runs_dir),
        "log_dir": os.fspath(layout.ExperimentPaths(exp_dir).logs_dir),
        "job_name": ctx.job_name,
        "comment": ctx.comment,
        "env_setup": list(ctx.env_setup),
        "env_modules": list(ctx.env_modules),
        "env_vars": dict(ctx.env_vars),
        "cluster": ctx.cluster,
        # {"signal": "USR1", "before_s": 90} or None: the --signal line and the forwarding wrapper
        "checkpoint": ({"signal": ctx.checkpoint.signal, "before_s": ctx.checkpoint.before_s}
                       if ctx.checkpoint is not None else None),
        "heartbeat_s": max(1, int(ctx.heartbeat_s)),
        "template_name": name,
        "files": layout.script_names(),
    }
    try:
        tmpl = env.get_template(name)
        text = tmpl.render(variables)
    except SpecError:
        raise
    except jinja2.TemplateSyntaxError as exc:
        raise _spec_error(exc.filename or exc.name or name, exc.lineno,
                          f"syntax error: {exc.message}") from None
    except jinja2.TemplateNotFound as exc:
        raise _spec_error(name, None, f"cannot find template {exc.name!r} "
                          f"(searched the template's folder, then {PACKAGE_TEMPLATES})") from None
    except jinja2.UndefinedError as exc:
        where = _where_in_traceback(exc.__traceback__) or (name, None)
        raise _spec_error(*where, f"{exc.message}",
                          fix="use only the variables render passes, or define it with "
                              "{% set %}") from None
    except RecursionError:
        raise _spec_error(name, None, "templates extend each other in a loop",
                          fix='extend "slurmexp/slurm.sh.j2" to reach the package layer') from None
    _check_directives_first(text, tmpl.filename or name)
    return text


def template_sha256(template: Path | None) -> str:
    """One hash over every layer a render would use, for the experiment's provenance.

    Hashes each layer's name and text, not its absolute path, so the same templates in
    another checkout give the same hash.
    """
    env, name = _resolve_template(template)
    digest = hashlib.sha256()
    queue, seen = [name], set()
    while queue:
        current = queue.pop(0)
        if current in seen:
            continue
        seen.add(current)
        try:
            source, _, _ = env.loader.get_source(env, current)
        except jinja2.TemplateNotFound:
            raise _spec_error(current, None, "template not found") from None
        digest.update(current.encode() + b"\0" + source.encode() + b"\0")
        try:
            refs = jinja2.meta.find_referenced_templates(env.parse(source))
        except jinja2.TemplateSyntaxError as exc:
            raise _spec_error(current, exc.lineno, f"syntax error: {exc.message}") from None
        for ref in refs:
            if ref is None:
                digest.update(b"<dynamic>\0")   # a computed name: hash that there was one
            else:
                queue.append(ref)
    return digest.hexdigest()

