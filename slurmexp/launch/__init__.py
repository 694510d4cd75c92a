"""From a plan to jobs in the queue: validation, sbatch scripts, submission, the launch itself."""
