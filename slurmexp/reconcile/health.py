"""`slurmexp health`: reads the heartbeat each reconcile pass writes and says whether the pass is
alive and succeeding (exit 1 when not), for an outside monitor.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone

from slurmexp.ledger import Ledger
from slurmexp.reconcile.one_pass import HEARTBEAT_KIND
from slurmexp.timeutil import parse_ts


def health(ledger: Ledger, max_age_minutes: float = 30, *,
           now: datetime | None = None) -> tuple[bool, str]:
    """(ok, message): not ok when the last pass failed or the last good one is too old."""
    now = now or datetime.now(timezone.utc)
    last = ledger.last_heartbeat(HEARTBEAT_KIND)
    if last is None:
        return False, ("no reconcile pass has run on this ledger yet; install the cron job "
                       "(`slurmexp cron --install`) or run `slurmexp reconcile`")
    good = ledger.last_heartbeat(HEARTBEAT_KIND, ok_only=True)

    def age_text(ts: str) -> str:
        t = parse_ts(ts)
        if t is None:
            return "at an unknown time"
        minutes = (now - t).total_seconds() / 60
        return f"{minutes:.0f} min ago ({ts})"

    if not last["ok"]:
        try:
            error = json.loads(last["summary_json"] or "{}").get("error") or "unknown error"
        except ValueError:
            error = "unknown error"
        error = " | ".join(line.strip() for line in error.splitlines() if line.strip())
        error = error if len(error) <= 300 else error[:297] + "..."
        since = f"; last good pass {age_text(good['ts'])}" if good else "; no pass has succeeded"
        return False, f"last reconcile pass {age_text(last['ts'])} failed: {error}{since}"
    t = parse_ts(good["ts"]) if good else None
    if t is None or (now - t).total_seconds() > max_age_minutes * 60:
        return False, (f"last successful reconcile pass was {age_text(good['ts'])}, older than "
                       f"{max_age_minutes:g} min; is the cron job installed (`crontab -l`)?")
    try:
        summary = json.loads(good["summary_json"] or "{}")
    except ValueError:
        summary = {}
    moved = sum((summary.get("moved") or {}).values())
    return True, (f"ok: last reconcile pass {age_text(good['ts'])}: {summary.get('active', 0)} "
                  f"active attempt(s), {moved} moved, {summary.get('retries_submitted', 0)} "
                  f"resubmitted")
