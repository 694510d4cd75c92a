"""A Python call as a run: its arguments as parameters, and a run id that does not change.

Parameters are the call's arguments bound to the function's parameter names (so
`map_array(train, configs)` gives runs with a `config` parameter and report columns
`param.config.*`), each value as JSON when it is JSON (round trip exact) and as a stable
text otherwise: its repr, unless that repr holds a memory address, then its type and a hash
of its pickle. A call whose arguments cannot be bound (a builtin, a C function) keeps them
as `args` / `kwargs`.

Run ids hash the callable's name, the parameters and the number of earlier identical calls
in the experiment: calling `f(1)` three times is three runs, and launching the same script
again gives the same ids.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import math
from typing import Any

_JSON_TYPES = (str, int, float, bool, type(None), list, dict)


def callable_name(fn: Any) -> str:
    """"module:qualname" of a function or of a callable object's class."""
    target = fn if inspect.isroutine(fn) or inspect.isclass(fn) else type(fn)
    func = getattr(target, "func", None)      # functools.partial
    if func is not None and not inspect.isroutine(target):
        target = func
    module = getattr(target, "__module__", None) or "?"
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or repr(target)
    return f"{module}:{name}"


def short_name(fn: Any) -> str:
    """The function's own name, usable as an experiment name ("<lambda>" -> "lambda")."""
    name = callable_name(fn).rpartition(":")[2].rpartition(".")[2]
    cleaned = "".join(c if c.isalnum() or c in "._-" else "" for c in name).strip("._-")
    return cleaned or "call"


def _is_json(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (str, int, bool, type(None))):
        return True
    if isinstance(value, list):
        return all(_is_json(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v) for k, v in value.items())
    return False


def param_value(value: Any) -> Any:
    """JSON when the value is JSON (tuples become lists), else a stable text for it."""
    if isinstance(value, tuple):
        value = list(value)
    if _is_json(value):
        return value
    text = repr(value)
    if " at 0x" in text or len(text) > 500:
        try:
            import cloudpickle

            digest = hashlib.sha256(cloudpickle.dumps(value)).hexdigest()[:12]
        except Exception:  # unpicklable here means unpicklable for the job too; submit says so
            digest = "?"
        return f"<{type(value).__module__}.{type(value).__qualname__} {digest}>"
    return text


def call_params(fn: Any, args: tuple, kwargs: dict) -> dict[str, Any]:
    """The parameters of one call (see the module doc)."""
    try:
        bound = inspect.signature(fn).bind(*args, **kwargs)
    except (TypeError, ValueError):
        out: dict[str, Any] = {}
        if args:
            out["args"] = [param_value(a) for a in args]
        out.update({k: param_value(v) for k, v in kwargs.items()})
        return out
    out = {}
    for name, value in bound.arguments.items():
        kind = bound.signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            out.update({k: param_value(v) for k, v in value.items()})
        else:
            out[name] = param_value(value)
    return out


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def run_ids_for(name: str, params_list: list[dict[str, Any]], taken: set[str] | None = None) -> list[str]:
    """One id per call: identical calls get their occurrence number in the hash."""
    taken = set(taken or ())
    out = []
    for params in params_list:
        base = _canonical({"fn": name, "params": params})
        n = 0
        while True:
            rid = "r" + hashlib.sha256(f"{base}#{n}".encode()).hexdigest()[:10]
            if rid not in taken:
                break
            n += 1
        taken.add(rid)
        out.append(rid)
    return out
