"""Every state word slurmexp reads or writes, and what each one means (imports nothing)."""
from __future__ import annotations

INFRASTRUCTURE_STATES = frozenset({"NODE_FAIL", "BOOT_FAIL", "PREEMPTED", "LOST"})
RESOURCE_STATES = frozenset({"OUT_OF_MEMORY", "TIMEOUT"})
USER_STATES = frozenset({"FAILED", "CANCELLED", "DEADLINE"})
# Slurm words for "still going" that the ledger writes with its own, fewer words.
_ACTIVE_ALIASES = {
    "PENDING": "PENDING", "RUNNING": "RUNNING", "SUSPENDED": "SUSPENDED",
    "REQUEUED": "REQUEUED", "REQUEUE_HOLD": "REQUEUED", "REQUEUE_FED": "REQUEUED",
    "COMPLETING": "RUNNING", "CONFIGURING": "RUNNING", "SIGNALING": "RUNNING",
    "STAGE_OUT": "RUNNING", "RESIZING": "RUNNING", "STOPPED": "SUSPENDED",
    "RESV_DEL_HOLD": "PENDING", "POWER_UP_NODE": "PENDING",
}
# A record in this state is followed by another record of the same job (Slurm requeued it).
_REQUEUE_WORDS = frozenset({"REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"})
# How far along a job that is still going is; a record never moves an attempt backwards
# (a placeholder record can say PENDING for a job squeue already shows RUNNING).
PROGRESS = {"PLANNED": 0, "SUBMITTED": 0, "PENDING": 1, "REQUEUED": 1, "RUNNING": 2,
             "SUSPENDED": 2}


# ------------------------------------------------------------------------------------------
# State words


def classify(state: str, exit_code: int | None = None) -> str | None:
    """Failure class of a final Slurm state: "infrastructure", "resources", "user", "unknown".

    None for COMPLETED and for states that are still going (PENDING, RUNNING ...). The exit
    code never turns a failure into a success: a FAILED job is a user failure whatever it
    returned, and an unknown word stays "unknown".
    """
    word = (state or "").split()[0] if state else ""
    if word == "COMPLETED" or word in _ACTIVE_ALIASES or word in ("PLANNED", "SUBMITTED"):
        return None
    if word in INFRASTRUCTURE_STATES:
        return "infrastructure"
    if word in RESOURCE_STATES:
        return "resources"
    if word in USER_STATES:
        return "user"
    return "unknown"


def ledger_state(slurm_state: str) -> str:
    """The word the ledger stores for a Slurm state (unknown words are kept as they are)."""
    return _ACTIVE_ALIASES.get(slurm_state, slurm_state)
