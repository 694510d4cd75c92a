"""How slurmexp marks its jobs in Slurm, so a crashed launch's jobs can always be found.

Launch writes these into every job (job name and comment); reconcile and cancel search for
them. One module owns the format so the writer and the readers cannot drift apart. It imports
nothing, so a cron pass pays nothing for it.
"""
from __future__ import annotations

PREFIX = "sx"


def job_name(exp_id: str, chunk: int) -> str:
    """`sx.<experiment id>.<chunk, 3 digits>`: unique per array, found with sacct --name."""
    return f"{PREFIX}.{exp_id}.{int(chunk):03d}"


def name_prefix(exp_id: str) -> str:
    """What every job name of the experiment starts with (squeue filters by prefix)."""
    return f"{PREFIX}.{exp_id}."


def job_comment(exp_id: str) -> str:
    return f"slurmexp:{exp_id}"
