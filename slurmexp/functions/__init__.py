"""Python functions as sweeps: the calls of the submitit drop-in (`slurmexp.submitit`), the
declarative `slurmexp.sweep(fn, params=...)` and sweep.toml's `function = "module:callable"`,
all planned, validated, rendered, recorded and submitted by the same path as command sweeps.

- `calls`: a call's arguments as run parameters, and stable run ids;
- `launch`: a Python sweep as a sweep.toml text (same schema, same errors), then plan,
  validate, write, ledger and submit through `launch.submission`;
- `runner`: the task side (`python -m slurmexp.functions.runner RUN_DIR`);
- `waiting`: waiting on runs through the ledger, with shared, rate-limited reconcile passes;
- `handle`: the experiment handle (`slurmexp.experiment(id)`); `api`: `slurmexp.sweep`.
"""
