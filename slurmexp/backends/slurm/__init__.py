"""Slurm: commands built and run through one function, their output parsed by pure functions."""
