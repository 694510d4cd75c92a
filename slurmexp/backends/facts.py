"""What slurmexp knows about a live cluster and its jobs, as plain data.

The Slurm backend fills these from command output through the pure parsers in
`backends.slurm.parse`; validation, discovery and reconciliation read only these types, so they
can be tested without a cluster and never depend on the text format of a Slurm command.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class NodeFacts:
    name: str
    state: str                          # lower-case sinfo/scontrol state, e.g. "idle", "down*"
    cpus: int
    mem_mb: int
    gres: dict[str, int] = field(default_factory=dict)   # gpu type -> count ("" when untyped)
    partitions: list[str] = field(default_factory=list)
    features: list[str] = field(default_factory=list)
    tres: dict[str, str] = field(default_factory=dict)   # CfgTRES as printed, e.g. {"mem": "7900M"}
    reason: str | None = None           # why an admin or Slurm took the node out, if it did


@dataclass
class PartitionFacts:
    name: str
    state: str                          # "UP", "DOWN", "DRAIN", "INACTIVE"
    max_time_min: int | None            # None: UNLIMITED
    nodes: list[str]
    default: bool = False
    allow_qos: list[str] | None = None  # None: ALL
    default_time_min: int | None = None  # DefaultTime; None: not set (the job gets MaxTime)
    qos: str | None = None              # the partition QOS, whose limits apply on top
    def_mem_per_cpu_mb: int | None = None  # the partition's own DefMemPerCPU, over the cluster's


@dataclass
class QosFacts:
    name: str
    max_wall_min: int | None = None
    max_tres_pu: dict[str, int] = field(default_factory=dict)   # e.g. {"gres/gpu": 2}
    max_tres_pj: dict[str, int] = field(default_factory=dict)
    max_submit_pu: int | None = None
    preempt: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)


@dataclass
class ReservationFacts:
    name: str
    state: str                          # "ACTIVE" / "INACTIVE"
    nodes: list[str]
    users: list[str]
    accounts: list[str]
    start: datetime | None
    end: datetime | None
    partition: str | None = None
    flags: list[str] = field(default_factory=list)


@dataclass
class Association:
    account: str
    user: str
    qos: list[str]
    default_qos: str | None = None
    partition: str | None = None
    cluster: str | None = None
    is_default_account: bool = False    # account is the user's DefaultAccount


@dataclass
class ClusterFacts:
    """A snapshot of the cluster for validation and `site discover`.

    Any part that could not be read is None and named in `skipped` with the reason, so the
    validator can say which checks it did not run instead of failing or guessing.
    """

    cluster: str
    user: str
    max_array_size: int | None = None
    max_job_count: int | None = None
    partitions: dict[str, PartitionFacts] | None = None
    nodes: dict[str, NodeFacts] | None = None
    reservations: dict[str, ReservationFacts] | None = None
    qos: dict[str, QosFacts] | None = None
    associations: list[Association] | None = None
    skipped: list[str] = field(default_factory=list)
    slurm_version: str | None = None    # SLURM_VERSION from scontrol show config
    # DefMemPerCPU from scontrol show config (MiB); None: not set, and a job that asks for no
    # memory gets DefMemPerNode, UNLIMITED by default: a whole node's memory.
    def_mem_per_cpu_mb: int | None = None
    # Seconds since QOS and associations were read, when they came from the facts cache
    # (backends.slurm.facts_cache); None: everything was read just now.
    cached_age_s: float | None = None
    # The user's jobs in the queue now (array tasks one by one), by QOS: MaxJobCount and the
    # QOS submit limits count them before a sweep's runs. None: squeue did not answer.
    queued_by_qos: dict[str, int] | None = None


@dataclass
class SacctRow:
    """One allocation row of `sacct` (steps folded in), keyed as the ledger keys attempts."""

    job_id: str                  # JobID as printed: "123", "123_4", "123_[5-10%4]"
    job_id_raw: str              # JobIDRaw: the job's own id
    array_job_id: str | None     # "123" for array tasks and pending arrays
    array_task: int | None       # task index; None for a plain job or a pending range row
    pending_tasks: list[int] | None  # for a not-yet-started array row: the task indices it stands for
    state: str                   # first word: "CANCELLED by 0" -> "CANCELLED"
    state_raw: str
    submit: str | None           # ISO, as sacct prints with SLURM_TIME_FORMAT=standard
    start: str | None
    end: str | None
    elapsed_s: int | None
    exit_code: int | None
    signal: int | None
    node_list: str | None
    partition: str | None
    qos: str | None
    account: str | None
    reason: str | None
    alloc_tres: str | None
    req_mem: str | None
    max_rss_mb: float | None     # the largest MaxRSS of the job's steps
    total_cpu_s: float | None
    alloc_cpus: int | None
    job_name: str | None
    comment: str | None
    cluster: str | None
    known_state: bool = True     # False: a state word slurmexp does not know (kept, flagged)
    # True: slurmdbd has the job's step/end records but not yet its submit record, so job_name
    # reads "allocation" and comment, partition, QOS and ReqMem are blank or placeholders (seen
    # for seconds after short jobs end). State, times, node and exit code are already right;
    # anything matched by name or comment must wait for the next query.
    incomplete: bool = False
    # The job's batch step ("<id>.batch"), when sacct printed one: its state word and exit code.
    # After a slurmctld outage the allocation can say TIMEOUT while the batch script had
    # exited 0 (COMPLETED 0:0); reconcile weighs the two (with the attempt's own exit_code).
    batch_state: str | None = None
    batch_exit_code: int | None = None
    batch_signal: int | None = None


@dataclass
class SqueueRow:
    """One row of `squeue -r`: what the controller knows now, before accounting has caught up."""

    job_id: str                  # %i: "123", "123_4", or "123_[5-9%2]" without -r
    array_job_id: str | None     # %F for array tasks, None for a plain job
    array_task: int | None       # %K as a number, None for a plain job or a pending range
    pending_tasks: list[int] | None  # the indices of a "123_[5-9%2]" row
    state: str                   # %T, e.g. "PENDING"
    reason: str | None           # %r; None for "None"
    submit: str | None           # %V, ISO with SLURM_TIME_FORMAT=standard
    node_list: str | None        # %N; None while pending
    name: str                    # %j
    comment: str | None          # %k; None for "(null)"
    known_state: bool = True


@dataclass
class SubmitResult:
    job_id: str
    cluster: str | None
    submit_time: str | None = None   # when the scheduler says so with its answer (local runs)
