"""What sacct prints: one row per job record (-P with our delimiter), read into `SacctRow`s.
"""
from __future__ import annotations

from typing import Iterable, Sequence

from slurmexp import units
from slurmexp.arrays import split_job_id
from slurmexp.backends.facts import (
    SacctRow,
)
from slurmexp.backends.slurm.parse.common import DELIMITER, _opt
from slurmexp.backends.slurm.parse.scontrol import _int
from slurmexp.states import SLURM_ACTIVE_STATES, is_known, state_word

# Order matters: parse_sacct reads columns by position. Comment and JobName are free text and
# go last so that a stray newline in them (also unescaped) is easier to join back.
SACCT_FIELDS: tuple[str, ...] = (
    "JobID", "JobIDRaw", "State", "Submit", "Start", "End", "ElapsedRaw", "ExitCode",
    "NodeList", "Partition", "QOS", "Account", "Reason", "AllocTRES", "ReqMem", "MaxRSS",
    "TotalCPU", "AllocCPUS", "Cluster", "JobName", "Comment",
)
# --------------------------------------------------------------------------------------------
# sacct


def _rows(text: str, delimiter: str, n_fields: int) -> list[list[str]]:
    """Rows of exactly n_fields values. A free-text value holding a newline splits a record over
    two lines; they are joined back (the newline kept) instead of yielding two broken rows."""
    out: list[list[str]] = []
    pending: list[str] | None = None
    for line in (text or "").split("\n"):
        if line.endswith("\r"):
            line = line[:-1]
        if pending is not None:
            values = pending[:-1] + [pending[-1] + "\n" + line.split(delimiter)[0]] + \
                line.split(delimiter)[1:]
        else:
            if not line:
                continue
            values = line.split(delimiter)
            if len(values) == 1 and out:
                # No delimiter at all: the rest of the previous row's last (free-text) field.
                out[-1][-1] += "\n" + line
                continue
        if len(values) >= n_fields:
            out.append(values[:n_fields] if len(values) == n_fields else
                       values[:n_fields - 1] + [delimiter.join(values[n_fields - 1:])])
            pending = None
        else:
            pending = values
    return out


def parse_mem_mb(text: str | None) -> float | None:
    """MaxRSS-style sizes ("1234K", "5M", "1.5G", "0") -> MiB as a float; a bare number from
    sacct is bytes (sacct appends K/M/G whenever it scales)."""
    mem = units.read_mem(_opt(text), bare="B")
    return None if mem is None else mem[0]


def parse_cpu_seconds(text: str | None) -> float | None:
    """TotalCPU: "MM:SS.mmm", "HH:MM:SS", "D-HH:MM:SS" -> seconds."""
    text = _opt(text)
    if text is None:
        return None
    days = 0
    if "-" in text:
        day_text, _, text = text.partition("-")
        if not day_text.isdigit():
            return None
        days = int(day_text)
    try:
        parts = [float(p) for p in text.split(":")]
    except ValueError:
        return None
    seconds = 0.0
    for part in parts:
        seconds = seconds * 60 + part
    return days * 86400 + seconds


def _exit_code(text: str | None) -> tuple[int | None, int | None]:
    text = _opt(text)
    if text is None:
        return None, None
    code, _, sig = text.partition(":")
    return (int(code) if code.isdigit() else None, int(sig) if sig.isdigit() else None)


def parse_sacct(text: str, delimiter: str = DELIMITER, fields: Sequence[str] = SACCT_FIELDS,
                array_ids: Iterable[str] = ()) -> list[SacctRow]:
    """Allocation rows of `sacct -n -P --delimiter=D -D -o <fields>` (no -X), steps folded in.

    Steps ("123.batch", "123_4.0", "123.extern") follow their allocation row in sacct's output
    (their peak RSS and CPU time are folded in; the batch step's state and exit code are kept);
    with -D a requeued job prints each of its records with its own steps, so a step belongs to
    the latest allocation row seen with the same JobID, not to every row of that id.

    `array_ids` names jobs the caller knows to be arrays. For a few seconds after an array starts,
    slurmdbd can show it as one row under the bare id ("21", State PENDING, JobName
    "allocation": really the task that keeps the array's own id), which alone is
    indistinguishable from a plain job; such a row gets array_job_id set and no task index.
    """
    names = [f.split("%", 1)[0].lower() for f in fields]
    col = {name: i for i, name in enumerate(names)}
    known_arrays = set(array_ids)

    def get(values: list[str], name: str) -> str | None:
        i = col.get(name)
        return values[i] if i is not None and i < len(values) else None

    rows: list[SacctRow] = []
    latest: dict[str, SacctRow] = {}
    step_rss: dict[int, float] = {}
    step_cpu: dict[int, float] = {}
    seen: set[tuple[str, ...]] = set()
    for values in _rows(text, delimiter, len(fields)):
        job_id = (get(values, "jobid") or "").strip()
        if not job_id:
            continue
        # With -D, slurmdbd repeats a job that ran in a reservation once per reservation record
        # of that name (every recreated "resv1" adds one): byte-identical rows, steps included.
        # Real repeats (requeues) differ at least in Submit, so identical rows are dropped.
        key_values = tuple(values)
        if key_values in seen:
            continue
        seen.add(key_values)
        if "." in job_id:
            parent = latest.get(job_id.split(".", 1)[0])
            if parent is None:
                continue
            key = id(parent)
            if job_id.endswith(".batch"):
                parent.batch_state = state_word((get(values, "state") or "").strip())
                parent.batch_exit_code, parent.batch_signal = _exit_code(get(values, "exitcode"))
            rss = parse_mem_mb(get(values, "maxrss"))
            if rss is not None:
                step_rss[key] = max(step_rss.get(key, 0.0), rss)
            cpu = parse_cpu_seconds(get(values, "totalcpu"))
            if cpu is not None:
                step_cpu[key] = step_cpu.get(key, 0.0) + cpu
            continue
        state_raw = (get(values, "state") or "").strip()
        state = state_word(state_raw)
        array_job_id, task, pending = split_job_id(job_id)
        raw = (get(values, "jobidraw") or "").strip() or job_id
        if array_job_id is None and job_id in known_arrays:
            array_job_id = job_id
        exit_code, signal = _exit_code(get(values, "exitcode"))
        if state in SLURM_ACTIVE_STATES:
            exit_code, signal = None, None   # sacct prints "0:0" before a job has exited
        elapsed = _int(get(values, "elapsedraw"))
        if elapsed is None and "elapsed" in col:
            cpu_like = parse_cpu_seconds(get(values, "elapsed"))
            elapsed = int(cpu_like) if cpu_like is not None else None
        row = SacctRow(
            job_id=job_id,
            job_id_raw=raw,
            array_job_id=array_job_id,
            array_task=task,
            pending_tasks=pending,
            state=state,
            state_raw=state_raw,
            submit=_opt(get(values, "submit")),
            start=_opt(get(values, "start")),
            end=_opt(get(values, "end")),
            elapsed_s=elapsed,
            exit_code=exit_code,
            signal=signal,
            node_list=_opt(get(values, "nodelist")),
            partition=_opt(get(values, "partition")),
            qos=_opt(get(values, "qos")),
            account=_opt(get(values, "account")),
            reason=_opt(get(values, "reason")),
            alloc_tres=_opt(get(values, "alloctres")),
            req_mem=_opt(get(values, "reqmem")),
            max_rss_mb=parse_mem_mb(get(values, "maxrss")),
            total_cpu_s=parse_cpu_seconds(get(values, "totalcpu")),
            alloc_cpus=_int(get(values, "alloccpus")),
            job_name=get(values, "jobname"),
            comment=_opt(get(values, "comment")),
            cluster=_opt(get(values, "cluster")),
            known_state=is_known(state),
        )
        row.incomplete = row.partition is None and row.qos is None
        rows.append(row)
        latest[job_id] = row
    for row in rows:
        key = id(row)
        if key in step_rss:
            row.max_rss_mb = max(row.max_rss_mb or 0.0, step_rss[key])
        if key in step_cpu:
            # The allocation row already sums its steps on most versions; never count twice.
            row.total_cpu_s = max(row.total_cpu_s or 0.0, step_cpu[key])
    return rows
