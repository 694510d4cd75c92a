"""`[notify] command`: run once, by the reconcile pass, when an experiment has finished.

Any finished state counts (FINISHED, FINISHED_WITH_FAILURES, FAILED, CANCELLED). The command
runs through `/bin/sh -c` in the sweep's workdir, with the experiment's summary in SLURMEXP_*
variables (`notify_env`), its process group killed past `[notify] timeout`. The ledger holds
whether it is due: the pass claims it (pending -> claimed) before running it, so it never runs
twice, not even when two passes race or the pass is killed while it runs; what it did (exit
status, seconds, the end of its stderr) is recorded after. A command that fails or times out is
a warning in the pass summary, never a failed pass.
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from slurmexp.settings import ExperimentSettings, NotifySettings
from slurmexp.states import FINISHED_EXPERIMENT_STATES, STOPPED_EXPERIMENT_STATES

if TYPE_CHECKING:  # pragma: no cover
    from slurmexp.ledger import Ledger
    from slurmexp.reconcile.context import PassSummary

NOTIFY_STATES = FINISHED_EXPERIMENT_STATES | STOPPED_EXPERIMENT_STATES
_TAIL = 400          # characters of the command's stderr kept in the ledger and the warning


def notify_env(ledger: Ledger, exp: dict) -> dict[str, str]:
    """The variables the command sees: the experiment, its state, its runs by state and the
    command that shows its report."""
    exp_id = exp["exp_id"]
    counts = ledger.counts_by_state(exp_id)
    ledger_opt = f" --ledger {shlex.quote(str(ledger.path))}" if getattr(ledger, "path", None) else ""
    env = {"SLURMEXP_EXPERIMENT": exp_id, "SLURMEXP_NAME": str(exp.get("name") or ""),
           "SLURMEXP_STATE": str(exp["state"]), "SLURMEXP_REASON": str(exp.get("reason") or ""),
           "SLURMEXP_EXP_DIR": str(exp.get("exp_dir") or ""),
           "SLURMEXP_RUNS": str(sum(counts.values())),
           "SLURMEXP_COMPLETED": str(counts.get("COMPLETED", 0)),
           "SLURMEXP_NOT_COMPLETED": str(sum(n for s, n in counts.items() if s != "COMPLETED")),
           "SLURMEXP_COUNTS": " ".join(f"{s}={n}" for s, n in sorted(counts.items())),
           "SLURMEXP_REPORT": f"slurmexp{ledger_opt} report {shlex.quote(exp_id)}"}
    for state, n in counts.items():
        env[f"SLURMEXP_COUNT_{state}"] = str(n)
    return env


def run_notify(notify: NotifySettings, env: dict[str, str], fallback_dir: str | None) -> dict:
    """Run the command; its outcome as the ledger keeps it (`ok`, `summary`, ...)."""
    from slurmexp.transport.base import CommandTimeout, TransportError
    from slurmexp.transport.local import LocalTransport

    cwd = next((d for d in (notify.workdir, fallback_dir) if d and Path(d).is_dir()), None)
    try:
        result = LocalTransport().run(["/bin/sh", "-c", notify.command], timeout=notify.timeout_s,
                                      cwd=cwd, env=env)
    except CommandTimeout:
        return {"ok": False, "summary": f"timed out after {notify.timeout_s}s (killed)"}
    except TransportError as exc:
        return {"ok": False, "summary": f"could not run: {exc}"}
    tail = result.stderr.strip()[-_TAIL:]
    out = {"ok": result.returncode == 0, "exit_code": result.returncode,
           "seconds": round(result.seconds, 3), "stderr_tail": tail}
    out["summary"] = "exit 0" if out["ok"] else f"exit {result.returncode}" + (f": {tail}" if tail else "")
    return out


def notify_finished(ledger: Ledger, summary: PassSummary) -> None:
    """Every finished experiment whose [notify] command is still due: claim it, run it, record
    what it did. Never raises for the command."""
    for exp in ledger.notifications_due(sorted(NOTIFY_STATES)):
        exp_id = exp["exp_id"]
        notify = ExperimentSettings.from_json(exp.get("settings_json")).notify
        if not ledger.claim_notification(exp_id):
            continue                 # another pass got there first
        if notify is None or not notify.command.strip():
            ledger.record_notification(exp_id, {"ok": False, "summary": "no [notify] command stored"})
            continue
        outcome = run_notify(notify, notify_env(ledger, exp), exp.get("exp_dir"))
        ledger.record_notification(exp_id, outcome)
        if outcome["ok"]:
            summary.act(f"{exp_id}: [notify] command ran ({exp['state']})")
        else:
            summary.warnings.append(f"{exp_id}: [notify] command {outcome['summary']}; "
                                    f"it is not run again")
