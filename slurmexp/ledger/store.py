"""What is left of the one-module ledger: the state sets and the array spec parser it used.

They move to slurmexp/states.py and slurmexp/arrays.py; until then they stay here, and
`from slurmexp.ledger.store import Ledger` keeps working (resolved on first use, so this module
imports nothing of the ledger and every ledger module may import it).
"""
from __future__ import annotations

TERMINAL_STATES = frozenset({
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
    "PREEMPTED", "BOOT_FAIL", "DEADLINE", "LOST",
})
ACTIVE_STATES = frozenset({"PLANNED", "SUBMITTED", "PENDING", "RUNNING", "REQUEUED", "SUSPENDED"})


# --- array specs -------------------------------------------------------------------------

def parse_array_spec(spec: str) -> set[int] | None:
    """Task indices named by an sbatch --array spec ("0-9%2", "1,3,5-11:2"); None if empty."""
    spec = (spec or "").split("%", 1)[0].strip()
    if not spec:
        return None
    out: set[int] = set()
    for part in spec.split(","):
        rng, _, step = part.partition(":")
        lo, _, hi = rng.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1, int(step or 1)))
    return out


def __getattr__(name: str):
    if name == "Ledger":
        from slurmexp.ledger import Ledger

        return Ledger
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
