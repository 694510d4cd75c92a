"""A drop-in for submitit: `import slurmexp.submitit as submitit` instead of `import submitit`.

Same names, signatures and `slurm_` parameters; Slurm submissions become slurmexp
experiments (validated, placed, split at MaxArraySize, tagged, in the ledger, retried by
`slurmexp reconcile`), and jobs read their state from the ledger instead of polling sacct.
The local and debug executors, helpers and JobEnvironment are submitit's own. See
docs/FROM_SUBMITIT.md.
"""
from submitit import DebugExecutor as DebugExecutor
from submitit import DebugJob as DebugJob
from submitit import Executor as Executor
from submitit import Job as Job
from submitit import JobEnvironment as JobEnvironment
from submitit import LocalExecutor as LocalExecutor
from submitit import LocalJob as LocalJob
from submitit import __version__ as __version__
from submitit import helpers as helpers

from slurmexp.errors import ValidationError as ValidationError
from slurmexp.submitit.executor import AutoExecutor as AutoExecutor
from slurmexp.submitit.executor import SlurmExecutor as SlurmExecutor
from slurmexp.submitit.job import SlurmJob as SlurmJob

__all__ = ["AutoExecutor", "DebugExecutor", "DebugJob", "Executor", "Job", "JobEnvironment",
           "LocalExecutor", "LocalJob", "SlurmExecutor", "SlurmJob", "ValidationError",
           "helpers", "__version__"]
