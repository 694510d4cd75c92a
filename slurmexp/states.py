"""Every state word slurmexp reads or writes, and what each one means.

Three kinds of things have states, each with its own words:

- an experiment (the `experiments` table): PLANNED -> SUBMITTING -> SUBMITTED (or RUNNING with
  the local backend) -> FINISHED | FINISHED_WITH_FAILURES, or FAILED / CANCELLED;
- a submission (one sbatch of a chunk): INTENT (written before sbatch runs) -> SUBMITTED,
  ADOPTED (its job was found by tag after a crash) or FAILED (sbatch refused);
- a run and each of its attempts: PLANNED and SUBMITTED are slurmexp's own; the rest are Slurm's
  job states as the ledger stores them. Slurm has more words for "still going" than the ledger
  needs (`ACTIVE_ALIASES` maps them), prints final words as they are ("CANCELLED by 123": the
  first word counts), and slurmexp adds LOST (in neither sacct nor squeue after the grace
  period), STALLED (Slurm says RUNNING, but the attempt shows no life) and DEPENDENCY_FAILED
  (its `[depends]` can never be met; its job was cancelled). A word nobody here
  knows is kept as it is, flagged, and watched: never read as success, never as final.

Final states fall into failure classes, the retry policy's input: infrastructure failures are
retried, resource failures escalate when the sweep asks, user failures are final.

Imports nothing, so the report and the parsers can use it without pulling in the ledger.
"""
from __future__ import annotations

# ------------------------------------------------------------------------------------------
# Experiments

EXPERIMENT_STATES = ("PLANNED", "SUBMITTING", "SUBMITTED", "RUNNING", "FINISHED",
                     "FINISHED_WITH_FAILURES", "FAILED", "CANCELLED")
# Every run is final (a retry or a requeue reopens them).
FINISHED_EXPERIMENT_STATES = frozenset({"FINISHED", "FINISHED_WITH_FAILURES"})
# Stopped by a person or by a refused launch: reconcile neither finishes nor resubmits them.
STOPPED_EXPERIMENT_STATES = frozenset({"FAILED", "CANCELLED"})

# ------------------------------------------------------------------------------------------
# Submissions

SUBMISSION_STATES = ("INTENT", "SUBMITTED", "ADOPTED", "FAILED")
# A submission whose job id is known.
RECORDED_SUBMISSION_STATES = frozenset({"SUBMITTED", "ADOPTED"})

# ------------------------------------------------------------------------------------------
# Slurm's job state words (the first word of sacct's and squeue's State)

# Still going, and the fewer words the ledger writes for them.
ACTIVE_ALIASES = {
    "PENDING": "PENDING", "RUNNING": "RUNNING", "SUSPENDED": "SUSPENDED",
    "REQUEUED": "REQUEUED", "REQUEUE_HOLD": "REQUEUED", "REQUEUE_FED": "REQUEUED",
    "COMPLETING": "RUNNING", "CONFIGURING": "RUNNING", "SIGNALING": "RUNNING",
    "STAGE_OUT": "RUNNING", "RESIZING": "RUNNING", "STOPPED": "SUSPENDED",
    "RESV_DEL_HOLD": "PENDING", "POWER_UP_NODE": "PENDING",
}
SLURM_ACTIVE_STATES = frozenset(ACTIVE_ALIASES)
# Final, stored as they are.
SLURM_FINAL_STATES = frozenset({
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
    "BOOT_FAIL", "DEADLINE"})
# Words Slurm can print that slurmexp has no meaning for: known (not flagged), classified
# "unknown", kept and watched.
SLURM_OTHER_STATES = frozenset({"REVOKED", "SPECIAL_EXIT", "LAUNCH_FAILED", "RECONFIG_FAIL",
                                "UPDATE_DB"})
SLURM_STATES = SLURM_ACTIVE_STATES | SLURM_FINAL_STATES | SLURM_OTHER_STATES
# A record in one of these is followed by another record of the same job (Slurm requeued it).
REQUEUE_WORDS = frozenset({"REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"})
# What the parsers write when Slurm printed no state at all.
NO_STATE = "UNKNOWN"

# ------------------------------------------------------------------------------------------
# Runs and attempts (the ledger's words)

# slurmexp's own: not yet submitted / submitted, not yet seen by Slurm's accounting.
PLANNED = "PLANNED"
SUBMITTED = "SUBMITTED"
COMPLETED = "COMPLETED"
CANCELLED = "CANCELLED"
# In neither sacct nor squeue for the grace period (or a runaway record): slurmexp's word.
LOST = "LOST"
RUNNING = "RUNNING"
PENDING = "PENDING"
# slurmexp's word for an attempt Slurm calls RUNNING that shows no life (`reconcile.liveness`):
# its task heartbeat is stale (the job may be hung or its node lost) or, with [liveness]
# stall_after, its stdout, stderr and metrics have not changed for that long. An attempt state,
# stored with its event and reason (so the run shows it too), and still active: a fresh
# heartbeat or new output moves it back to RUNNING, a final record ends it as any other; with
# stall_action = "requeue" reconcile cancels the job and records it CANCELLED, infrastructure.
STALLED = "STALLED"
# What [liveness] stall_action may say: only show STALLED, or also cancel and retry the job.
STALL_ACTIONS = ("flag", "requeue")
# slurmexp's word for a run whose [depends] can never be met: Slurm keeps its job PENDING with
# reason DEPENDENCY_NEVER (an upstream job did not complete; the test cluster and Slurm's
# default leave `kill_invalid_depend` unset); reconcile cancels the job and records this final
# state, failure class DEPENDENCY: never retried by the policy, only by `slurmexp retry`.
DEPENDENCY_FAILED = "DEPENDENCY_FAILED"
DEPENDENCY_NEVER = "DependencyNeverSatisfied"
ACTIVE_STATES = frozenset({PLANNED, SUBMITTED, STALLED, *ACTIVE_ALIASES.values()})
TERMINAL_STATES = SLURM_FINAL_STATES | {LOST, DEPENDENCY_FAILED}
# Every way an attempt can end without its run's result.
FAILED_STATES = TERMINAL_STATES - {COMPLETED}
# How far along a run that is still going is; a record never moves an attempt backwards
# (a placeholder record can say PENDING for a job squeue already shows RUNNING).
PROGRESS = {"PLANNED": 0, "SUBMITTED": 0, "PENDING": 1, "REQUEUED": 1, "RUNNING": 2,
            "SUSPENDED": 2, STALLED: 2}

# ------------------------------------------------------------------------------------------
# Failure classes

INFRASTRUCTURE = "infrastructure"
RESOURCES = "resources"
USER = "user"
UNKNOWN = "unknown"
# Not a failure: the attempt received its [checkpoint] signal (or a preemption's SIGTERM), the
# sweep asked for `requeue`, and the run goes on from its checkpoint as its next attempt.
CHECKPOINTED = "checkpointed"
# Not this run's fault, and not worth retrying on its own: an experiment it depends on failed.
DEPENDENCY = "dependency"
FAILURE_CLASSES = (INFRASTRUCTURE, RESOURCES, USER, UNKNOWN, CHECKPOINTED, DEPENDENCY)

INFRASTRUCTURE_STATES = frozenset({"NODE_FAIL", "BOOT_FAIL", "PREEMPTED", LOST})
# Frozen copies for the ledger's partial indexes (migration 8 of ledger.schema): SQLite uses such
# an index only when a query spells its list as written, so these never change. A new final or
# requeue state needs a new migration's index; tests/test_ledger_schema.py fails until it has one.
TERMINAL_STATES_AT_SCHEMA_8 = ("BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "DEPENDENCY_FAILED",
                               "FAILED", "LOST", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "TIMEOUT")
REQUEUES_STATES_AT_SCHEMA_8 = ("BOOT_FAIL", "NODE_FAIL", "PREEMPTED")
# Slurm itself may put a job that ended so back in the queue, under the same job key (`--requeue`,
# or the cluster's JobRequeue=1, the default; for a preemption PreemptMode=REQUEUE). Until a pass
# has seen the controller no longer hold the job, slurmexp's own retry could run the task twice:
# such an attempt is watched for its requeue while its retry waits (reconcile.resubmit).
SLURM_REQUEUES_STATES = frozenset({"NODE_FAIL", "BOOT_FAIL", "PREEMPTED"})
RESOURCE_STATES = frozenset({"OUT_OF_MEMORY", "TIMEOUT"})
USER_STATES = frozenset({"FAILED", "CANCELLED", "DEADLINE"})
DEPENDENCY_STATES = frozenset({DEPENDENCY_FAILED})
# How an attempt that received the checkpoint signal may end and still be continued: the time
# limit, a preemption, or the command's own exit after saving. CANCELLED is a person's decision.
CONTINUABLE_STATES = frozenset({"TIMEOUT", "PREEMPTED", "FAILED"})


# ------------------------------------------------------------------------------------------
# Reading a word


def state_word(text: str | None) -> str:
    """The state word of what Slurm printed: "CANCELLED by 123" -> "CANCELLED"; NO_STATE when
    nothing was printed."""
    words = (text or "").split()
    return words[0] if words else NO_STATE


def is_known(state: str | None) -> bool:
    """Whether Slurm's word is one slurmexp knows; an unknown one is kept but flagged."""
    return state_word(state) in SLURM_STATES


def classify(state: str, exit_code: int | None = None) -> str | None:
    """Failure class of a final Slurm state: "infrastructure", "resources", "user", "unknown".

    None for COMPLETED and for states that are still going (PENDING, RUNNING ...). The exit
    code never turns a failure into a success: a FAILED job is a user failure whatever it
    returned, and an unknown word stays "unknown".
    """
    word = state_word(state) if state else ""
    if word == COMPLETED or word in SLURM_ACTIVE_STATES or word in ACTIVE_STATES:
        return None
    if word in DEPENDENCY_STATES:
        return DEPENDENCY
    if word in INFRASTRUCTURE_STATES:
        return INFRASTRUCTURE
    if word in RESOURCE_STATES:
        return RESOURCES
    if word in USER_STATES:
        return USER
    return UNKNOWN


def ledger_state(slurm_state: str) -> str:
    """The word the ledger stores for a Slurm state (unknown words are kept as they are)."""
    word = state_word(slurm_state)
    return ACTIVE_ALIASES.get(word, word)
