"""The SQLite ledger: every experiment, run, submission, attempt and event, plus provenance.

Callers import `Ledger` from here; how the package is cut inside is its own business:

- connection: the file (0600), journal mode for its file system, BEGIN IMMEDIATE transactions
- schema: the tables and their migrations
- experiments, submissions, runs, attempts, events: the reads and writes of each table
- reuse: runs reused from other experiments, the [notify] command's bookkeeping
- rows: the typed rows those queries return for reconcile and status
- tables: whole tables as pandas frames, for reports
- store: the state sets and array spec parser, until slurmexp/states.py and arrays.py own them
- provenance: what a launch records to reproduce an experiment
"""
from slurmexp.ledger.attempts import AttemptsMixin
from slurmexp.ledger.connection import LedgerConnection
from slurmexp.ledger.events import EventsMixin
from slurmexp.ledger.experiments import ExperimentsMixin
from slurmexp.ledger.reuse import ReuseMixin
from slurmexp.ledger.runs import RunsMixin
from slurmexp.ledger.submissions import SubmissionsMixin
from slurmexp.ledger.tables import TablesMixin


class Ledger(ExperimentsMixin, SubmissionsMixin, RunsMixin, AttemptsMixin, EventsMixin,
             TablesMixin, ReuseMixin, LedgerConnection):
    """The SQLite ledger: the one place that remembers what was planned, submitted and seen.

    Every state change is written together with its event in one `BEGIN IMMEDIATE` transaction,
    so a launch that dies between sbatch and the ledger update leaves an `INTENT` row to recover
    from rather than jobs nobody knows about, and the event log never disagrees with the tables.
    Several slurmexp processes (a launch, a cron reconcile, a report) may touch the file at once;
    the busy timeout plus immediate transactions serialise them instead of failing.
    """


__all__ = ["Ledger"]
