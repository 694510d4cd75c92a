"""slurmexp: run research parameter sweeps on Slurm as job arrays, tracked in an SQLite ledger."""

__version__ = "0.1.0"
