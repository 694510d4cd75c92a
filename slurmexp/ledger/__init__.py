"""The SQLite ledger: every experiment, run, submission, attempt and event, plus provenance."""
