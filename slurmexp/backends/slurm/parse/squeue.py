"""What squeue prints: the queue in the controller's view, read into `SqueueRow`s.
"""
from __future__ import annotations

from slurmexp.arrays import indices, split_job_id
from slurmexp.backends.facts import (
    SqueueRow,
)
from slurmexp.backends.slurm.parse.common import _EMPTY, DELIMITER, _opt
from slurmexp.backends.slurm.parse.sacct import _rows
from slurmexp.states import is_known, state_word

# squeue -o codes, in the order parse_squeue reads them (it unpacks them by position).
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
    n = len(SQUEUE_FIELDS)
    out: list[SqueueRow] = []
    words: dict[str, tuple[str, bool]] = {}     # state text -> (word, known): a handful per queue
    new, fields, empty = object.__new__, _ROW_FIELDS, _EMPTY
    for values in _rows(text, delimiter, n):
        job_id, array_job_id_text, task_text, state_text, reason, submit, nodes, name, comment = \
            map(str.strip, values)
        if not job_id:
            continue
        array_job_id, task, pending = split_job_id(job_id)
        if array_job_id is None and _opt(task_text) is not None:
            # %i of the array's last task can be printed as the bare array id on some versions.
            array_job_id = _opt(array_job_id_text)
            if task_text.isdigit():
                task = int(task_text)
            else:
                pending = indices(task_text)
        word = words.get(state_text)
        if word is None:
            state = state_word(state_text)
            word = words[state_text] = (state, is_known(state))
        # The dataclass's own __init__ for each of the queue's rows (thousands in a pass) cost
        # more than reading them: the instance's fields are set directly, all of them.
        row = new(SqueueRow)
        row.__dict__.update(zip(fields, (
            job_id, array_job_id, task, pending, word[0], None if reason in empty else reason,
            None if submit in empty else submit, None if nodes in empty else nodes, name,
            None if comment in empty else comment, word[1])))
        out.append(row)
    return out


# SqueueRow's fields, every one, in the order parse_squeue fills them (a test holds it to the
# dataclass).
_ROW_FIELDS = ("job_id", "array_job_id", "array_task", "pending_tasks", "state", "reason", "submit",
               "node_list", "name", "comment", "known_state")
