"""`slurmexp show RUN` and `slurmexp logs RUN`: one run's story and where its output went.

A run is named the way people copy it from a report: its id, a unique prefix of it, or
`EXP:RUN` when the same parameters (hence the same run id) appear in several experiments.
Everything here reads the ledger and the run's folder; nothing asks the cluster, so a run can
be inspected on a login node after the cluster has forgotten its job.

Where an attempt's output is: the task script writes the command's stdout/stderr to
`<run_dir>/attempts/<job>_<task>[.r<restart>]/`; when a task died before that folder existed
(bad module load, missing manifest) only Slurm's own log `<exp_dir>/logs/<job>_<task>.out|.err`
has the story, so log_path() falls back to it. Both paths come from `slurmexp.layout`.
"""
from __future__ import annotations

import codecs
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slurmexp import layout, states
from slurmexp.errors import Problem, SlurmexpError
from slurmexp.report.refs import resolve_experiment

if TYPE_CHECKING:  # pragma: no cover
    from slurmexp.ledger import Ledger

_LIST_LIMIT = 8


def resolve_run(ledger: Ledger, ref: str) -> dict:
    """The run row (with `params`) that `ref` names: `RUN` or `EXP:RUN`, either part a prefix.

    An exact id beats prefixes, so `r12` still names run r12 when r123 exists too.
    """
    exp_ref, _, run_ref = ref.strip().rpartition(":")
    if not run_ref:
        raise SlurmexpError(f"no run named in {ref!r}", [Problem(
            "", "RUN", "expected a run id, a prefix of one, or EXP:RUN",
            fix="copy a run id from `slurmexp report`")])
    if exp_ref:
        try:    # an experiment's full id or its name (its newest experiment)
            exp_ref = resolve_experiment(ledger, exp_ref)
        except SlurmexpError:
            pass     # a prefix of several: the run part may still pick one
    rows = ledger.find_runs(run_ref, exp_ref or None)
    if exp_ref:
        exact_exp = [r for r in rows if r["exp_id"] == exp_ref]
        rows = exact_exp or rows
    exact = [r for r in rows if r["run_id"] == run_ref]
    rows = exact or rows
    if not rows:
        where = f" in experiments starting with {exp_ref!r}" if exp_ref else ""
        raise SlurmexpError(f"no run {run_ref!r}{where} in ledger {ledger.path}", [Problem(
            str(ledger.path), "runs", f"no run id starts with {run_ref!r}{where}",
            fix="list the runs with `slurmexp report EXPERIMENT`")])
    if len(rows) > 1:
        names = [f"{r['exp_id']}:{r['run_id']}" for r in rows]
        more = f" (and {len(names) - _LIST_LIMIT} more)" if len(names) > _LIST_LIMIT else ""
        raise SlurmexpError(f"run {ref!r} is ambiguous: {len(rows)} runs match", [Problem(
            str(ledger.path), "runs", f"{ref!r} matches {', '.join(names[:_LIST_LIMIT])}{more}",
            fix="give more of the run id, or qualify it as EXP:RUN")])
    return rows[0]


def _read_small(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _attempt_info(att: dict, run: dict, exp: dict, sub: dict | None, restart: int) -> dict:
    key = att.get("job_key")
    folder = layout.attempt_dir(run.get("run_dir"), key, restart)
    paths = layout.ExperimentPaths(exp["exp_dir"]) if exp.get("exp_dir") else None
    files = {}
    if folder is not None and folder.is_dir():
        files = {name: _read_small(folder / name) for name in layout.ATTEMPT_RECORD_FILES
                 if (folder / name).exists()}
    keep = ("attempt_id", "attempt_no", "job_id", "task_index", "job_key", "cluster", "state",
            "reason", "failure_class", "node", "partition", "qos", "account", "submit_time",
            "start_time", "end_time", "elapsed_s", "exit_code", "alloc_tres", "req_mem",
            "max_rss", "total_cpu_s", "sub_id")
    info = {k: att.get(k) for k in keep}
    info.update(
        script_path=sub.get("script_path") if sub else None,
        array_spec=sub.get("array_spec") if sub else None,
        attempt_dir=str(folder) if folder else None,
        stdout=str(folder / layout.STDOUT) if folder else None,
        stderr=str(folder / layout.STDERR) if folder else None,
        slurm_stdout=str(paths.log(key, "out")) if paths and key else None,
        slurm_stderr=str(paths.log(key, "err")) if paths and key else None,
        files=files)
    return info


def show_run(ledger: Ledger, ref: str, *, events: bool = True) -> dict:
    """Everything known about one run: experiment provenance, parameters, every attempt with
    its accounting, script and log paths, the files the task wrote, metrics and events."""
    from slurmexp.metrics import read_metrics
    run = resolve_run(ledger, ref)
    exp = ledger.get_experiment(run["exp_id"], required=True)
    subs = {s["sub_id"]: s for s in ledger.submissions(run["exp_id"])}
    attempts = ledger.attempts(run["exp_id"], run["run_id"])
    attempts.sort(key=lambda a: (a["attempt_no"], a["attempt_id"]))
    run_dir = layout.RunPaths(run["run_dir"]) if run.get("run_dir") else None
    info = {
        "ref": f"{run['exp_id']}:{run['run_id']}",
        "exp_id": run["exp_id"], "run_id": run["run_id"], "idx": run["idx"],
        "state": run["state"], "reason": run["reason"], "params": run["params"],
        "sample_seed": run["seed"] if run["source"] == "sample" else None,
        "source": run["source"], "n_attempts": run["n_attempts"],
        "chunk": run["chunk"], "task_index": run["task_index"],
        "run_dir": str(run_dir.run_dir) if run_dir else None,
        "command_path": str(run_dir.command) if run_dir else None,
        "params_path": str(run_dir.params) if run_dir else None,
        "metrics": read_metrics(run_dir.run_dir) if run_dir else None,
        "experiment": {k: exp.get(k) for k in (
            "exp_id", "name", "backend", "cluster", "state", "created", "exp_dir", "sweep_path",
            "sweep_copy_path", "site_path", "site_hash", "template_hash", "provenance")},
        "attempts": [],
    }
    restarts = layout.restart_numbers(attempts)      # a requeued task: same job key again
    for a in attempts:
        info["attempts"].append(_attempt_info(a, run, exp, subs.get(a["sub_id"]),
                                               restarts[a["attempt_id"]]))
    if events:
        info["events"] = [{k: e[k] for k in ("ts", "kind", "from_state", "to_state", "reason")}
                          for e in ledger.events(run["exp_id"], run["run_id"])]
    return info


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict):
        out = []
        for k, v in value.items():
            out += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(value, list):
        if len(value) > 3 or any(isinstance(v, (dict, list)) for v in value):
            return [(prefix, f"[{len(value)} items]")]
        value = ", ".join(map(str, value))
    return [(prefix, "-" if value is None else str(value))]


def _number(text: Any) -> Any:
    try:
        return float(text)
    except (TypeError, ValueError):
        return text


def format_run(info: dict) -> str:
    """show_run()'s dict as text for a terminal."""
    from slurmexp.report.text import fmt_duration, fmt_value
    from slurmexp.timeutil import display_time, local_zone
    def block(title: str, pairs: list[tuple[str, Any]], indent: str = "  ") -> list[str]:
        width = max((len(k) for k, _ in pairs), default=0)
        return [title] + [f"{indent}{k:<{width}}  {'-' if v is None else v}" for k, v in pairs]

    exp = info["experiment"]
    lines = [f"run {info['ref']}  {info['state']}" + (f" ({info['reason']})"
                                                      if info["reason"] else ""),
             f"times  local, {local_zone()}"]
    lines += block("parameters", list(info["params"].items()) or [("(none)", "")])
    unwritten = (" (written when the run's task first starts)"
                 if info["state"] in (states.PLANNED, states.SUBMITTED, states.PENDING)
                 and info["command_path"] and not os.path.exists(info["command_path"]) else "")
    lines += block("files", [("run dir", info["run_dir"]),
                             ("command", info["command_path"] and info["command_path"] + unwritten),
                             ("params", info["params_path"] and info["params_path"] + unwritten)])
    if info["metrics"]:
        lines += block("metrics", list(info["metrics"].items()))
    lines += block("experiment", [
        ("id", exp["exp_id"]), ("name", exp["name"]), ("backend", exp["backend"]),
        ("cluster", exp["cluster"]), ("created", display_time(exp["created"])),
        ("exp dir", exp["exp_dir"]),
        ("sweep", exp["sweep_path"]), ("sweep copy", exp["sweep_copy_path"]),
        ("site", exp["site_path"]), ("template hash", exp["template_hash"])])
    lines += block("provenance", _flatten(exp.get("provenance") or {}) or [("(none)", "")])
    for a in info["attempts"]:
        head = f"attempt {a['attempt_no']}  job {a['job_key'] or a['job_id']}  {a['state']}"
        if a["reason"]:
            head += f" ({a['reason']})"
        shown = {**a, "elapsed_s": fmt_duration(a["elapsed_s"]) or None,
                 **{k: display_time(a[k]) or None for k in ("submit_time", "start_time",
                                                            "end_time")},
                 "total_cpu_s": fmt_duration(a["total_cpu_s"]) or None,
                 "max_rss": f"{fmt_value(_number(a['max_rss']))} MiB" if a["max_rss"] else None}
        pairs = [(k.removesuffix("_s"), shown[k]) for k in (
            "failure_class", "node", "partition", "qos", "account", "submit_time", "start_time",
            "end_time", "elapsed_s", "exit_code", "alloc_tres", "req_mem", "max_rss",
            "total_cpu_s", "script_path", "array_spec", "attempt_dir", "stdout", "stderr",
            "slurm_stdout", "slurm_stderr") if shown[k] is not None]
        pairs += [(f"file {k}", v) for k, v in a["files"].items()]
        lines += block(head, pairs)
    if not info["attempts"]:
        lines.append("attempts  none yet")
    if info.get("events"):
        events = info["events"]
        kind_w = max(len(e["kind"]) for e in events)
        from_w = max(len(e["from_state"] or "") for e in events)
        to_w = max(len(e["to_state"] or "") for e in events)
        lines.append("events")
        for e in events:
            moved = f"{e['from_state'] or '':<{from_w}} -> {e['to_state'] or '':<{to_w}}"
            reason = " ".join((e["reason"] or "").split())     # one line per event
            lines.append(f"  {display_time(e['ts'])}  {e['kind']:<{kind_w}}  {moved}"
                         f"  {reason}".rstrip())
    return "\n".join(lines) + "\n"


def log_path(ledger: Ledger, ref: str, stderr: bool = False,
             attempt: int | None = None, *, must_exist: bool = True) -> Path:
    """The output file of the run's newest attempt (or attempt number `attempt`).

    The command's own stdout/stderr in the attempt folder when it exists, else Slurm's log of
    the task script. Raises SlurmexpError naming the paths tried when neither exists, unless
    `must_exist=False` (for --follow on a pending run): then the attempt-folder path, where
    the output will appear.
    """
    info = show_run(ledger, ref, events=False)
    attempts = info["attempts"]
    if attempt is not None:
        attempts = [a for a in attempts if a["attempt_no"] == attempt]
    if not attempts:
        which = f"attempt {attempt}" if attempt is not None else "attempts"
        raise SlurmexpError(f"run {info['ref']} has no {which} yet, so no logs", [Problem(
            "", "RUN", f"state {info['state']}, {info['n_attempts']} attempt(s)",
            fix="submit it first (or see `slurmexp show` for its attempts)")])
    last = attempts[-1]
    stream = "stderr" if stderr else "stdout"
    candidates = [last[stream], last[f"slurm_{stream}"]]
    for path in candidates:
        if path and Path(path).exists():
            return Path(path)
    if not must_exist and last[stream]:
        return Path(last[stream])
    running = last["state"] in ("SUBMITTED", "PENDING")
    fix = ("it has not started yet; use --follow to wait for it" if running
           else "the files were removed, or the run directory is not visible from this host")
    tried = ", ".join(p for p in candidates if p) or "(no run directory recorded)"
    raise SlurmexpError(f"no {stream} for {info['ref']} attempt {last['attempt_no']}",
                        [Problem("", "RUN", f"none of these exist: {tried}", fix=fix)])


def ended_marker(path: str | os.PathLike, idle_s: float = 30.0) -> Callable[[], bool]:
    """A `stop` for follow(). For a file in an attempt folder: true once the folder has its
    `ended` file, which the task script writes however the task ends (a dead node aside).
    For Slurm's own log (the task died before its attempt folder existed, or is still in its
    setup) nothing marks the end, so: true once the file has not grown for `idle_s`."""
    path = Path(path)
    if path.name in layout.ATTEMPT_OUTPUT_FILES:
        return (path.parent / layout.ENDED).exists
    last = [-1, time.monotonic()]

    def idle() -> bool:
        try:
            size = path.stat().st_size
        except OSError:
            size = -1
        now = time.monotonic()
        if size != last[0]:
            last[:] = [size, now]
        return now - last[1] >= idle_s
    return idle


def follow(path: str | os.PathLike, *, poll_s: float = 0.5,
           stop: Callable[[], bool] | None = None, from_start: bool = True) -> Iterator[str]:
    """Text appended to `path`, as `tail -f` shows it: waits for the file to appear, reopens it
    when it is replaced or truncated, and ends (after a last read) once `stop()` is true.

    Polling rather than inotify: the log is usually on a network file system written by
    another host, where inotify sees nothing.
    """
    path = Path(path)
    fh = None
    ident = None
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    try:
        while True:
            try:
                st = os.stat(path)
            except FileNotFoundError:
                st = None
            if st is not None and (fh is None or (st.st_dev, st.st_ino) != ident
                                   or st.st_size < fh.tell()):
                if fh is not None:
                    fh.close()
                    from_start = True          # a new or truncated file: all of it is new
                fh = open(path, "rb")
                ident = (st.st_dev, st.st_ino)
                if not from_start:
                    fh.seek(0, os.SEEK_END)
                decoder.reset()
            done = stop() if stop is not None else False   # asked before the read: no loss
            if fh is not None:
                while chunk := fh.read(65536):
                    text = decoder.decode(chunk)
                    if text:
                        yield text
            if done:
                tail = decoder.decode(b"", final=True)
                if tail:
                    yield tail
                return
            time.sleep(poll_s)
    finally:
        if fh is not None:
            fh.close()
