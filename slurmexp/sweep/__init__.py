"""The sweep stage: sweep.toml schema (spec), expansion and routing (plan).

The package is also callable: `slurmexp.sweep(fn, params=..., ...)` is
`slurmexp.functions.api.sweep` (the package's name and the function's are the same word).
"""
import sys as _sys
import types as _types


class _CallableModule(_types.ModuleType):
    def __call__(self, fn, /, **kwargs):
        from slurmexp.functions.api import sweep

        return sweep(fn, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
