"""Pure parsers for the text Slurm commands print, one module per command; nothing here runs a
command. Everything is re-exported here, so callers write `parse.parse_sacct(...)`.
"""
from slurmexp.backends.slurm.parse.cluster_facts import (  # noqa: F401
    cluster_facts_from,
)
from slurmexp.backends.slurm.parse.common import (  # noqa: F401
    DELIMITER,
    SBATCH_RETRYING,
    classify_error,
    expand_hostlist,
    submit_limit_name,
)
from slurmexp.backends.slurm.parse.sacct import (  # noqa: F401
    SACCT_FIELDS,
    parse_cpu_seconds,
    parse_mem_mb,
    parse_sacct,
)
from slurmexp.backends.slurm.parse.sacctmgr import (  # noqa: F401
    ASSOC_FIELDS,
    QOS_FIELDS,
    parse_sacctmgr_assoc,
    parse_sacctmgr_qos,
)
from slurmexp.backends.slurm.parse.sbatch import (  # noqa: F401
    parse_sbatch_parsable,
    parse_test_only,
)
from slurmexp.backends.slurm.parse.scontrol import (  # noqa: F401
    nodes_from,
    parse_gres,
    parse_scontrol_config,
    parse_scontrol_line,
    parse_scontrol_records,
    partitions_from,
    reservations_from,
)
from slurmexp.backends.slurm.parse.squeue import (  # noqa: F401
    SQUEUE_FIELDS,
    parse_squeue,
    squeue_format,
)
