"""Bringing the ledger in line with Slurm: the pass, record matching, retries, cancel, cron, health."""
