"""Job array specs, as sbatch reads them and sacct/squeue print them (imports nothing).

One parser (`indices`), one formatter (`format_spec`), one throttle rule (`throttle`) and one
way to share a sweep's throttle among its arrays (`split_throttle`), for
every place a spec is written (the plan's chunks, a retry of some tasks) or read back (the
ledger's submissions, a pending row "123_[5-10%4]", a chunk script's --array line):

- a spec is a comma list of indices "7", ranges "0-9" and stepped ranges "0-10:2";
- "%N" after it caps how many tasks run at once (the throttle); N is a whole number >= 1;
- sacct and squeue print the tasks that have not started as one row "<job>_[<spec>]", cut at
  64 bytes: a trailing part cut off ("1,3,5-") is read as far as it is readable;
- a task's job key is "<array job id>_<task>", Slurm's own %A_%a.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

_THROTTLE_RE = re.compile(r"%\s*(\d+)\s*\]?\s*$")
_TASK_RE = re.compile(r"^(\d+)_(\d+)$")
_PENDING_RE = re.compile(r"^(\d+)_\[(.*?)\]?$")


def indices(spec: str | None) -> list[int]:
    """Sorted task indices of a spec: "0-9%2", "1,3,5-7", "0-10:2", "[5-10%4]"; [] for none."""
    body = (spec or "").strip().strip("[]").split("%", 1)[0]
    out: set[int] = set()
    for item in body.split(","):
        item = item.strip()
        if not item:
            continue
        step = 1
        if ":" in item:
            item, _, step_text = item.partition(":")
            step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else 1
        if "-" in item:
            lo, _, hi = item.partition("-")
            if lo.isdigit() and hi.isdigit():
                out.update(range(int(lo), int(hi) + 1, step))
            elif lo.isdigit():
                out.add(int(lo))          # "5-" cut off by a column limit: 5 at least
        elif item.isdigit():
            out.add(int(item))
    return sorted(out)


def task_set(spec: str | None) -> set[int] | None:
    """The tasks a submission's spec names, or None when it has no spec (the whole chunk)."""
    if not (spec or "").split("%", 1)[0].strip():
        return None
    return set(indices(spec))


def throttle(spec: str | None) -> int | None:
    """The "%N" of a spec (also of a pending row's "[0-9%2]"); None when absent or not >= 1."""
    match = _THROTTLE_RE.search(spec or "")
    value = int(match.group(1)) if match else 0
    return value if value >= 1 else None


def split_throttle(sizes: list[int], limit: int | None) -> list[int | None]:
    """Each array's "%N" when at most `limit` tasks of all the arrays together may run at once.

    Shares are in proportion to the arrays' sizes (so they finish about together and the sweep
    stays near its limit the longest), at least 1 and at most the array's size each, summing to
    `limit` where that is possible: with more arrays than `limit` every array gets 1, and up to
    len(sizes) tasks run at once. One array gets `limit` itself. [1001, 1001, 498] with 16 ->
    [7, 6, 3]."""
    if limit is None or not sizes:
        return [None] * len(sizes)
    if len(sizes) == 1:
        return [limit]
    if limit <= len(sizes):
        return [1] * len(sizes)
    total = sum(sizes)
    if limit >= total:
        return list(sizes)            # every task may run at once
    ideal = [limit * size / total for size in sizes]
    shares = [min(size, max(1, int(x))) for size, x in zip(sizes, ideal)]
    while sum(shares) < limit:        # the largest remainder first, where there is room
        i = max((i for i in range(len(sizes)) if shares[i] < sizes[i]), key=lambda i: ideal[i] - shares[i])
        shares[i] += 1
    while sum(shares) > limit:        # a raise to 1 went over: take from the most over
        i = min((i for i in range(len(sizes)) if shares[i] > 1), key=lambda i: ideal[i] - shares[i])
        shares[i] -= 1
    return shares


def format_spec(tasks: Iterable[int], throttle: int | None = None) -> str:
    """[0, 1, 2, 5, 7, 8] -> "0-2,5,7-8", with "%N" appended for a throttle N >= 1."""
    values = sorted({int(i) for i in tasks})
    parts: list[str] = []
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        parts.append(str(values[i]) if i == j else f"{values[i]}-{values[j]}")
        i = j + 1
    spec = ",".join(parts)
    return f"{spec}%{throttle}" if throttle and throttle >= 1 else spec


def task_key(job_id: str | int, task: int | None) -> str:
    """The ledger's job key of a task: "<array job id>_<task>", or the plain job id."""
    return str(job_id) if task is None else f"{job_id}_{task}"


def task_key_sql(job_id: str, task: str) -> str:
    """`task_key` as an SQL expression, for rows the ledger makes inside SQLite: `job_id` and
    `task` are SQL expressions (a parameter, a column) for the job id text and the task index."""
    return f"CASE WHEN {task} IS NULL THEN {job_id} ELSE {job_id} || '_' || {task} END"


def split_job_id(job_id: str) -> tuple[str | None, int | None, list[int] | None]:
    """(array job id, task index, pending task indices) of a JobID as sacct/squeue print it:
    "5_3" -> ("5", 3, None); "5_[0-9%2]" -> ("5", None, [0, ..., 9]); "42" -> (None, None, None).
    """
    match = _TASK_RE.match(job_id)
    if match:
        return match.group(1), int(match.group(2)), None
    match = _PENDING_RE.match(job_id)
    if match:
        return match.group(1), None, indices(match.group(2))
    return None, None, None
