"""A plain submitit example; the only change for slurmexp is the import line.

Run it on a login node (site.toml found as the CLI finds it: $SLURMEXP_SITE, beside this file,
the current folder, ~/.slurmexp/): `python example.py`. Then `slurmexp status`, `slurmexp report`.
"""
import slurmexp.submitit as submitit  # was: import submitit


def add(a, b):
    return a + b


def describe(name):
    return f"{name} has {len(name)} letters"


if __name__ == "__main__":
    executor = submitit.AutoExecutor(folder="submitit_logs/%j")
    executor.update_parameters(timeout_min=5, slurm_partition="cpu")
    sums = executor.map_array(add, [1, 2, 3], [10, 20, 30])
    words = executor.map_array(describe, ["ada", "bob", "cy"])
    print([job.result() for job in sums])
    print([job.result() for job in words])
