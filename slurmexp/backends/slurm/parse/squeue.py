"""What squeue prints: the queue in the controller's view, read into `SqueueRow`s.
"""
from __future__ import annotations

from slurmexp.arrays import indices, split_job_id
from slurmexp.backends.facts import (
    SqueueRow,
)
from slurmexp.backends.slurm.parse.common import DELIMITER, _opt
from slurmexp.backends.slurm.parse.sacct import _rows
from slurmexp.states import is_known, state_word

# squeue -o codes, in the order parse_squeue reads them.
SQUEUE_FIELDS: tuple[tuple[str, str], ...] = (
    ("job_id", "%i"), ("array_job_id", "%F"), ("array_task", "%K"), ("state", "%T"),
    ("reason", "%r"), ("submit", "%V"), ("node_list", "%N"), ("name", "%j"), ("comment", "%k"),
)

# --------------------------------------------------------------------------------------------
# squeue


def squeue_format(delimiter: str = DELIMITER) -> str:
    return delimiter.join(code for _, code in SQUEUE_FIELDS)


def parse_squeue(text: str, delimiter: str = DELIMITER) -> list[SqueueRow]:
    """Rows of `squeue -h -r -o <squeue_format()>`.

    Without -r a pending array is one row "123_[4-9%2]"; with -r each task has its own row.
    Both are read: the bracket form fills `pending_tasks`.
    """
    names = [name for name, _ in SQUEUE_FIELDS]
    out: list[SqueueRow] = []
    for values in _rows(text, delimiter, len(names)):
        row = dict(zip(names, (v.strip() for v in values)))
        job_id = row["job_id"]
        if not job_id:
            continue
        array_job_id, task, pending = split_job_id(job_id)
        if array_job_id is None and _opt(row["array_task"]) is not None:
            # %i of the array's last task can be printed as the bare array id on some versions.
            array_job_id = _opt(row["array_job_id"])
            task_text = row["array_task"]
            if task_text.isdigit():
                task = int(task_text)
            else:
                pending = indices(task_text)
        state = state_word(row["state"])
        out.append(SqueueRow(
            job_id=job_id,
            array_job_id=array_job_id,
            array_task=task,
            pending_tasks=pending,
            state=state,
            reason=_opt(row["reason"]),
            submit=_opt(row["submit"]),
            node_list=_opt(row["node_list"]),
            name=row["name"],
            comment=_opt(row["comment"]),
            known_state=is_known(state),
        ))
    return out
