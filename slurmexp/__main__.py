"""`python -m slurmexp` is the `slurmexp` command (for cron lines without the console script)."""
from slurmexp.cli import main

main(prog_name="slurmexp")
