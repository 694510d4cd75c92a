"""Backends: the only code that starts jobs (Slurm or local processes)."""
