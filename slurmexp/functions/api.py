"""`slurmexp.sweep(fn, params=..., ...)`: a sweep.toml's meaning, written in Python.

The keywords are the sweep file's keys (`params`, `zip`, `sample`, `runs`, `resources`,
`retry`, `env`, `name`, `workdir`, `output_dir`) with the same semantics and the same errors
(raised as `slurmexp.ValidationError`); `fn` is called with each run's parameters as keyword
arguments, as `function = "module:callable"` in a sweep.toml is. The same sweep launched again
(same function, parameters, resources, site) is not submitted twice: the call returns the
existing experiment, so re-running a notebook cell reattaches. `new=True` launches a copy.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from slurmexp.functions.calls import short_name
from slurmexp.functions.handle import Experiment
from slurmexp.functions.launch import launch_sweep, open_ledger


def sweep(fn: Any, *, params: dict[str, Any] | None = None, zip: list[dict[str, Any]] | None = None,  # noqa: A002
          sample: dict[str, Any] | None = None, runs: list[dict[str, Any]] | None = None,
          resources: dict[str, Any] | None = None, retry: dict[str, Any] | None = None,
          env: dict[str, Any] | None = None, name: str | None = None,
          site: str | os.PathLike | None = None, ledger: Any = None,
          workdir: str | os.PathLike | None = None, output_dir: str | os.PathLike | None = None,
          new: bool = False, wait: bool = False, slurm: Any = None,
          notify: dict[str, Any] | None = None, skip_completed: bool = False) -> Experiment:
    """Validate, record and submit a sweep of `fn`; returns its `Experiment` handle.

    `skip_completed` is `launch --skip-completed`: runs that completed in another experiment
    with the same command and resources are reused, not run again; without it, a warning says
    how many could be. `notify` is the `[notify]` table (`{"command": ..., "timeout": "60s"}`)."""
    workdir = Path(workdir or Path.cwd()).absolute()
    output = Path(output_dir).absolute() if output_dir else workdir / "slurmexp-runs"
    data = {"name": name or short_name(fn), "workdir": str(workdir), "output_dir": str(output),
            "params": params, "zip": zip, "sample": sample, "runs": runs,
            "resources": resources, "env": env, "retry": retry, "notify": notify}
    book = open_ledger(ledger)
    result = launch_sweep(fn, data, site=site, ledger=book, output_dir=output, new=new, slurm=slurm,
                          skip_completed=skip_completed)
    handle = Experiment(result.exp_id, book)
    if wait:
        handle.wait()
    return handle
