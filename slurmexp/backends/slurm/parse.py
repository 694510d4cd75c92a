"""Pure parsers for the text Slurm commands print; nothing here runs a command.

Every function takes the exact text a command wrote (tests feed them output captured from the
real test cluster, `tests/data/captured/`), so a change in Slurm's output shows up as a failing
unit test instead of as wrong states in somebody's ledger. Command lines that produce this text
live in `slurm.py`; the field lists they use live here, next to the code that depends on their
order.
"""
from __future__ import annotations

import re
from datetime import datetime
from typing import Iterable, Sequence

from slurmexp import units
from slurmexp.errors import SlurmexpError
from slurmexp.backends.facts import (
    Association,
    ClusterFacts,
    NodeFacts,
    PartitionFacts,
    QosFacts,
    ReservationFacts,
    SacctRow,
    SqueueRow,
    SubmitResult,
)

# `sacct -P` and `squeue -o` do no escaping at all: a "|" in a job name or comment would shift
# every later column. The ASCII unit separator cannot be typed into sbatch's --job-name or
# --comment by accident and Slurm never prints it itself.
DELIMITER = "\x1f"

# Order matters: parse_sacct reads columns by position. Comment and JobName are free text and
# go last so that a stray newline in them (also unescaped) is easier to join back.
SACCT_FIELDS: tuple[str, ...] = (
    "JobID", "JobIDRaw", "State", "Submit", "Start", "End", "ElapsedRaw", "ExitCode",
    "NodeList", "Partition", "QOS", "Account", "Reason", "AllocTRES", "ReqMem", "MaxRSS",
    "TotalCPU", "AllocCPUS", "Cluster", "JobName", "Comment",
)

# squeue -o codes, in the order parse_squeue reads them.
SQUEUE_FIELDS: tuple[tuple[str, str], ...] = (
    ("job_id", "%i"), ("array_job_id", "%F"), ("array_task", "%K"), ("state", "%T"),
    ("reason", "%r"), ("submit", "%V"), ("node_list", "%N"), ("name", "%j"), ("comment", "%k"),
)

QOS_FIELDS: tuple[str, ...] = ("Name", "MaxWall", "MaxTRESPU", "MaxTRES", "MaxSubmitPU",
                               "Preempt", "Flags")
ASSOC_FIELDS: tuple[str, ...] = ("Cluster", "User", "DefaultAccount", "Account", "Partition",
                                 "QOS", "DefaultQOS")

# Job states as sacct and squeue print them (first word). Anything else is kept but flagged, so a
# newer Slurm's new state is reported as "unknown" rather than silently read as a failure.
KNOWN_STATES = frozenset({
    "PENDING", "RUNNING", "SUSPENDED", "COMPLETING", "CONFIGURING", "COMPLETED", "CANCELLED",
    "FAILED", "TIMEOUT", "PREEMPTED", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY",
    "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "REVOKED", "SPECIAL_EXIT",
    "STOPPED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD", "LAUNCH_FAILED", "POWER_UP_NODE",
    "RECONFIG_FAIL", "UPDATE_DB",
})

_UNFINISHED = frozenset({"PENDING", "RUNNING", "SUSPENDED", "COMPLETING", "CONFIGURING",
                         "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "STOPPED",
                         "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD", "POWER_UP_NODE"})

# Words Slurm prints where a value is absent; all of them mean None to us.
_EMPTY = frozenset({"", "None", "none", "Unknown", "(null)", "N/A", "n/a", "None assigned"})


def _opt(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return None if value in _EMPTY else value


# --------------------------------------------------------------------------------------------
# sbatch


def parse_sbatch_parsable(text: str) -> SubmitResult:
    """`sbatch --parsable` prints "123" or "123;cluster"; anything else means we do not know
    whether a job was created, which the caller must hear about rather than store a bad id."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    # sbatch may print warnings to stdout before the id on some sites; the id is the last line.
    last = lines[-1] if lines else ""
    job, _, cluster = last.partition(";")
    if not re.fullmatch(r"\d+", job):
        raise SlurmexpError(f"could not read a job id from sbatch --parsable output {text!r}")
    return SubmitResult(job_id=job, cluster=cluster.strip() or None)


_TEST_ONLY_RE = re.compile(r"Job (\d+) to start at (\S+)")


def parse_test_only(stderr: str) -> tuple[str, str] | None:
    """(job id, start time) from `sbatch --test-only`'s stderr, None when it did not say so."""
    match = _TEST_ONLY_RE.search(stderr or "")
    return (match.group(1), match.group(2)) if match else None


# --------------------------------------------------------------------------------------------
# errors


_UNAVAILABLE_PATTERNS = (
    "unable to contact slurm controller",
    "socket timed out",
    "slurmdbd",
    "connection refused",
    "zero bytes were transmitted",
    "slurm_persist_conn_open",
    "unable to establish a connection",
    "communication connection failure",
    "slurm backup controller in standby mode",
    "resource temporarily unavailable",
)


def classify_error(stderr: str) -> str:
    """"unavailable" when a daemon did not answer (retry later, the job is not at fault),
    "refused" when Slurm understood the request and said no."""
    low = (stderr or "").lower()
    return "unavailable" if any(p in low for p in _UNAVAILABLE_PATTERNS) else "refused"


# --------------------------------------------------------------------------------------------
# host lists and array index lists


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(depth - 1, 0)
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in (p.strip() for p in parts) if p]


def _expand_range(body: str) -> list[str]:
    out: list[str] = []
    for item in body.split(","):
        item = item.strip()
        if not item:
            continue
        if "-" in item:
            lo, _, hi = item.partition("-")
            width = len(lo) if lo.startswith("0") else 0
            out += [f"{n:0{width}d}" for n in range(int(lo), int(hi) + 1)]
        else:
            out.append(item)
    return out


def expand_hostlist(text: str | None) -> list[str]:
    """"c[1-3],g[1-2],x01" -> ["c1", "c2", "c3", "g1", "g2", "x01"], zero padding kept."""
    if text is None or _opt(text) is None:
        return []
    names: list[str] = []
    for part in _split_top_level(text):
        prefixes = [""]
        rest = part
        while rest:
            open_at = rest.find("[")
            if open_at < 0:
                prefixes = [p + rest for p in prefixes]
                break
            close_at = rest.find("]", open_at)
            if close_at < 0:
                raise SlurmexpError(f"bad host list {text!r}: '[' without ']'")
            head, body = rest[:open_at], rest[open_at + 1:close_at]
            prefixes = [p + head + s for p in prefixes for s in _expand_range(body)]
            rest = rest[close_at + 1:]
        names += prefixes
    return names


def expand_array_indices(text: str) -> list[int]:
    """"5-10%4" / "1,3,5-7" / "0-9:2" -> sorted task indices. A trailing part cut off by a column
    limit ("1,3,5-") is expanded as far as it is readable instead of failing the whole row."""
    body = text.strip().strip("[]")
    body = body.split("%", 1)[0]
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
                out.add(int(lo))
        elif item.isdigit():
            out.add(int(item))
    return sorted(out)


# --------------------------------------------------------------------------------------------
# scontrol


# A key is a CamelCase-ish word right after whitespace: "RealMemory=", "MCS_label=", "OS=".
# Values of Reason= and OS= contain spaces (and Reason may contain lower-case "x=y"), so only
# this shape of token starts a new pair.
_KEY_RE = re.compile(r"(?:^|(?<=\s))([A-Z][A-Za-z0-9_]*)=")


def parse_scontrol_line(line: str) -> dict[str, str]:
    record: dict[str, str] = {}
    matches = list(_KEY_RE.finditer(line))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
        key = match.group(1)
        value = line[match.end():end].strip()
        record.setdefault(key, value)
    return record


def parse_scontrol_records(text: str) -> list[dict[str, str]]:
    """One dict per line of `scontrol -o show partition|node|reservation`.

    Lines that do not start with a Key= pair ("No reservations in the system") are skipped.
    """
    records = []
    for line in (text or "").splitlines():
        if not line.strip() or not _KEY_RE.match(line.strip()):
            continue
        records.append(parse_scontrol_line(line.strip()))
    return records


def parse_scontrol_config(text: str) -> dict[str, str]:
    """`scontrol show config` ("Key = Value" lines); the first value of a key wins, because the
    plugin sections printed after the main block reuse a few names for other things."""
    config: dict[str, str] = {}
    for line in (text or "").splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key = key.strip()
        if not key or " " in key:
            continue
        config.setdefault(key, value.strip())
    return config


def _int(value: str | None) -> int | None:
    value = _opt(value)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def parse_gres(text: str | None) -> dict[str, int]:
    """GPU type -> count from a Gres string ("gpu:a100:2(S:0-1),gpu:2" -> {"a100": 2, "": 2}).

    Non-GPU gres (mps, shard, ...) are left out: routing only places GPUs.
    """
    gpus: dict[str, int] = {}
    if _opt(text) is None:
        return gpus
    for item in _split_top_level(re.sub(r"\([^)]*\)", "", text or "")):
        parts = item.split(":")
        if parts[0] != "gpu":
            continue
        count_text = parts[-1] if len(parts) > 1 else "1"
        # "gpu:a100" (no count) means one; flags such as no_consume sit between type and count.
        kind = parts[1] if len(parts) > 2 else ""
        if len(parts) == 2 and not count_text.isdigit():
            kind, count_text = count_text, "1"
        count = _count(count_text)
        if count is None:
            continue
        gpus[kind] = gpus.get(kind, 0) + count
    return gpus


def _count(text: str) -> int | None:
    match = re.fullmatch(r"(\d+)([KMG]?)", text.strip())
    if not match:
        return None
    return int(match.group(1)) * {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}[match.group(2)]


def parse_tres(text: str | None) -> dict[str, int]:
    """"gres/gpu=2,cpu=8,mem=16G" -> {"gres/gpu": 2, "cpu": 8, "mem": 16384} (mem in MiB).

    Entries whose value is not a number (billing weights, say) are left out."""
    out: dict[str, int] = {}
    if _opt(text) is None:
        return out
    for item in (text or "").split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            continue
        key, value = key.strip(), value.strip()
        try:
            out[key] = units.parse_mem(value) if key == "mem" else int(value)
        except ValueError:
            number = _count(value)
            if number is not None:
                out[key] = number
    return out


def _tres_strings(text: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in (_opt(text) or "").split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            out[key.strip()] = value.strip()
    return out


def _gres_from_tres(tres: dict[str, str]) -> dict[str, int]:
    typed = {k.split(":", 1)[1]: int(v) for k, v in tres.items()
             if k.startswith("gres/gpu:") and v.isdigit()}
    if typed:
        return typed
    total = tres.get("gres/gpu", "")
    return {"": int(total)} if total.isdigit() and int(total) else {}


def _list(value: str | None) -> list[str]:
    value = _opt(value)
    return [v for v in (value or "").split(",") if v] if value else []


def nodes_from(records: Iterable[dict[str, str]]) -> dict[str, NodeFacts]:
    nodes: dict[str, NodeFacts] = {}
    for rec in records:
        name = rec.get("NodeName")
        if not name:
            continue
        tres = _tres_strings(rec.get("CfgTRES"))
        gres = parse_gres(rec.get("Gres"))
        if not gres:
            # Some sites configure GPUs only as TRES; the configured TRES still say how many.
            gres = _gres_from_tres(tres)
        mem = _int(rec.get("RealMemory"))
        if mem is None and "mem" in tres:
            try:
                mem = units.parse_mem(tres["mem"])
            except ValueError:
                mem = None
        features = _list(rec.get("AvailableFeatures") or rec.get("Features"))
        nodes[name] = NodeFacts(
            name=name,
            state=(rec.get("State") or "unknown").lower(),
            cpus=_int(rec.get("CPUTot")) or _int(rec.get("CPUEfctv")) or _int(tres.get("cpu")) or 0,
            mem_mb=mem or 0,
            gres=gres,
            partitions=_list(rec.get("Partitions")),
            features=features,
            tres=tres,
            reason=_opt(rec.get("Reason")),
        )
    return nodes


def _minutes(value: str | None) -> int | None:
    value = _opt(value)
    if value is None:
        return None
    try:
        return units.parse_time(value)
    except ValueError:
        return None


def partitions_from(records: Iterable[dict[str, str]]) -> dict[str, PartitionFacts]:
    parts: dict[str, PartitionFacts] = {}
    for rec in records:
        name = rec.get("PartitionName")
        if not name:
            continue
        allow = rec.get("AllowQos", "ALL")
        parts[name] = PartitionFacts(
            name=name,
            state=(rec.get("State") or "UP").upper(),
            max_time_min=_minutes(rec.get("MaxTime")),
            nodes=expand_hostlist(rec.get("Nodes")),
            default=rec.get("Default", "NO").upper() == "YES",
            allow_qos=None if allow.upper() == "ALL" else _list(allow),
            default_time_min=_minutes(rec.get("DefaultTime")),
            qos=_opt(rec.get("QoS")),
        )
    return parts


def _datetime(value: str | None) -> datetime | None:
    value = _opt(value)
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def reservations_from(records: Iterable[dict[str, str]]) -> dict[str, ReservationFacts]:
    out: dict[str, ReservationFacts] = {}
    for rec in records:
        name = rec.get("ReservationName")
        if not name:
            continue
        out[name] = ReservationFacts(
            name=name,
            state=(rec.get("State") or "").upper(),
            nodes=expand_hostlist(rec.get("Nodes")),
            users=_list(rec.get("Users")),
            accounts=_list(rec.get("Accounts")),
            start=_datetime(rec.get("StartTime")),
            end=_datetime(rec.get("EndTime")),
            partition=_opt(rec.get("PartitionName")),
            flags=_list(rec.get("Flags")),
        )
    return out


# --------------------------------------------------------------------------------------------
# sacctmgr


def _pipe_rows(text: str, fields: Sequence[str]) -> list[dict[str, str]]:
    rows = []
    for line in (text or "").splitlines():
        if not line.strip():
            continue
        values = line.split("|")
        rows.append({f: (values[i] if i < len(values) else "") for i, f in enumerate(fields)})
    return rows


def parse_sacctmgr_qos(text: str, fields: Sequence[str] = QOS_FIELDS) -> dict[str, QosFacts]:
    """`sacctmgr -n -P show qos format=<fields>` (sacctmgr's own "|" delimiter: QOS names and
    TRES strings cannot contain it)."""
    out: dict[str, QosFacts] = {}
    for row in _pipe_rows(text, fields):
        name = row.get("Name", "").strip()
        if not name:
            continue
        out[name] = QosFacts(
            name=name,
            max_wall_min=_minutes(row.get("MaxWall")),
            max_tres_pu=parse_tres(row.get("MaxTRESPU")),
            max_tres_pj=parse_tres(row.get("MaxTRES")),
            max_submit_pu=_int(row.get("MaxSubmitPU")),
            preempt=_list(row.get("Preempt")),
            flags=_list(row.get("Flags")),
        )
    return out


def parse_sacctmgr_assoc(text: str, fields: Sequence[str] = ASSOC_FIELDS,
                         cluster: str | None = None) -> list[Association]:
    """`sacctmgr -n -P show user U withassoc format=<fields>` or `show assoc where user=U
    format=<fields>`. One slurmdbd can serve several clusters: pass `cluster` to keep only its
    associations."""
    out: list[Association] = []
    for row in _pipe_rows(text, fields):
        account = row.get("Account", "").strip()
        if not account:
            continue
        row_cluster = _opt(row.get("Cluster"))
        if cluster and row_cluster and row_cluster != cluster:
            continue
        default_account = _opt(row.get("DefaultAccount"))
        out.append(Association(
            account=account,
            user=row.get("User", "").strip(),
            qos=_list(row.get("QOS")),
            default_qos=_opt(row.get("DefaultQOS")),
            partition=_opt(row.get("Partition")),
            cluster=row_cluster,
            is_default_account=default_account == account,
        ))
    return out


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
    """MaxRSS-style sizes ("1234K", "5M", "1.5G", "0") -> MiB as a float."""
    text = _opt(text)
    if text is None:
        return None
    match = re.fullmatch(r"([\d.]+)\s*([KMGTP]?)(?:i?B)?", text, re.IGNORECASE)
    if not match:
        return None
    scale = {"": 1 / 1024 / 1024, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 ** 2, "P": 1024 ** 3}
    # A bare number from sacct is bytes (sacct appends K/M/G whenever it scales).
    return float(match.group(1)) * scale[match.group(2).upper()]


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


_ARRAY_RE = re.compile(r"^(\d+)_(\d+)$")
_ARRAY_PENDING_RE = re.compile(r"^(\d+)_\[(.*?)\]?$")


def split_job_id(job_id: str) -> tuple[str | None, int | None, list[int] | None]:
    """(array job id, task index, pending task indices) for a JobID as sacct/squeue print it."""
    match = _ARRAY_RE.match(job_id)
    if match:
        return match.group(1), int(match.group(2)), None
    match = _ARRAY_PENDING_RE.match(job_id)
    if match:
        return match.group(1), None, expand_array_indices(match.group(2))
    return None, None, None


def parse_sacct(text: str, delimiter: str = DELIMITER, fields: Sequence[str] = SACCT_FIELDS,
                array_ids: Iterable[str] = ()) -> list[SacctRow]:
    """Allocation rows of `sacct -n -P --delimiter=D -D -o <fields>` (no -X), steps folded in.

    Steps ("123.batch", "123_4.0", "123.extern") follow their allocation row in sacct's output;
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
            rss = parse_mem_mb(get(values, "maxrss"))
            if rss is not None:
                step_rss[key] = max(step_rss.get(key, 0.0), rss)
            cpu = parse_cpu_seconds(get(values, "totalcpu"))
            if cpu is not None:
                step_cpu[key] = step_cpu.get(key, 0.0) + cpu
            continue
        state_raw = (get(values, "state") or "").strip()
        state = state_raw.split()[0] if state_raw else "UNKNOWN"
        array_job_id, task, pending = split_job_id(job_id)
        raw = (get(values, "jobidraw") or "").strip() or job_id
        if array_job_id is None and job_id in known_arrays:
            array_job_id = job_id
        exit_code, signal = _exit_code(get(values, "exitcode"))
        if state in _UNFINISHED:
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
            known_state=state in KNOWN_STATES,
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
                pending = expand_array_indices(task_text)
        state = row["state"].split()[0] if row["state"] else "UNKNOWN"
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
            known_state=state in KNOWN_STATES,
        ))
    return out


# --------------------------------------------------------------------------------------------
# all of it


def cluster_facts_from(*, user: str, cluster: str | None = None, config: str | None = None,
                       partitions: str | None = None, nodes: str | None = None,
                       reservations: str | None = None, qos: str | None = None,
                       associations: str | None = None,
                       skipped: Sequence[str] = ()) -> ClusterFacts:
    """ClusterFacts from the raw text of each query; a part given as None stays None (the
    caller names it in `skipped`), so captured output and live output go through one path."""
    facts = ClusterFacts(cluster=cluster or "", user=user, skipped=list(skipped))
    if config is not None:
        conf = parse_scontrol_config(config)
        facts.cluster = conf.get("ClusterName") or facts.cluster
        facts.max_array_size = _int(conf.get("MaxArraySize"))
        facts.max_job_count = _int(conf.get("MaxJobCount"))
        facts.slurm_version = _opt(conf.get("SLURM_VERSION"))
    if partitions is not None:
        facts.partitions = partitions_from(parse_scontrol_records(partitions))
    if nodes is not None:
        facts.nodes = nodes_from(parse_scontrol_records(nodes))
    if reservations is not None:
        facts.reservations = reservations_from(parse_scontrol_records(reservations))
    if qos is not None:
        facts.qos = parse_sacctmgr_qos(qos)
    if associations is not None:
        facts.associations = parse_sacctmgr_assoc(associations, cluster=facts.cluster or None)
    return facts
