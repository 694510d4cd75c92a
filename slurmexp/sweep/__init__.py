"""What the user asked for: the sweep file's schema (spec, checks, strict_toml, slurm_names)
and the plan of runs it expands to (plan, expand, routing).

The package is also callable: `slurmexp.sweep(fn, params=..., ...)` is
`slurmexp.functions.api.sweep` (the package's name and the public function's are the same word).
Importing a subpackage binds it on its parent, so once anything imported `slurmexp.sweep.*`
the attribute `slurmexp.sweep` is this package whatever `slurmexp.__getattr__` would say;
the package has to be callable for the public call to work in every import order. (Binding the
function after importing this package eagerly in `slurmexp/__init__` would avoid the module
class, but `import slurmexp.layout` and friends must import no other slurmexp module.)
"""
import sys as _sys
import types as _types


class _CallableModule(_types.ModuleType):
    def __call__(self, fn, /, **kwargs):
        from slurmexp.functions.api import sweep

        return sweep(fn, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
