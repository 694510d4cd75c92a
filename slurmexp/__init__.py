"""slurmexp: run experiments on Slurm clusters unattended and keep them trustworthy.

The public names below are imported lazily, so `import slurmexp` inside a training script
(for `slurmexp.log_metrics`) and `slurmexp --help` stay fast.
"""
__version__ = "0.1.0"

_LAZY = {
    "log_metrics": ("slurmexp.metrics", "log_metrics"),
    "Ledger": ("slurmexp.ledger", "Ledger"),
    "launch": ("slurmexp.launch.launcher", "launch"),
    "ValidationError": ("slurmexp.errors", "ValidationError"),
    "SlurmexpError": ("slurmexp.errors", "SlurmexpError"),
    # `slurmexp.sweep` is also the sweep stage's package; that package is callable (its
    # __init__), so `slurmexp.sweep(fn, params=...)` works whether or not it was imported.
    "sweep": ("slurmexp.sweep", None),
    "experiment": ("slurmexp.functions.handle", "experiment"),
    "Experiment": ("slurmexp.functions.handle", "Experiment"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        loaded = importlib.import_module(module)
        return loaded if attr is None else getattr(loaded, attr)
    raise AttributeError(f"module 'slurmexp' has no attribute {name!r}")
