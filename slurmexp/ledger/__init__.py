"""The SQLite ledger: every experiment, run, submission, attempt and event, plus provenance.

Callers import `Ledger` from here; how the package is cut inside is its own business.
"""
from slurmexp.ledger.store import Ledger

__all__ = ["Ledger"]
