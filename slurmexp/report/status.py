"""What `slurmexp status` shows: the ledger's view, read in a few SQL queries.

Status never calls Slurm: it is what the last reconcile pass (or launch) recorded, so it
stays fast and is safe to run in a loop. To bring it up to date, run
`slurmexp reconcile` first.
"""
from __future__ import annotations

from dataclasses import replace

from slurmexp.ledger import Ledger
from slurmexp.report.filters import ExperimentFilter


def experiment_summaries(ledger: Ledger, keep: ExperimentFilter | None = None) -> list[dict]:
    """Every experiment (those `keep` keeps) with its runs counted by state, tags and note."""
    keep = keep if keep is not None else ExperimentFilter()
    counts = ledger.run_counts_by_experiment()
    return [{"exp_id": e["exp_id"], "name": e["name"], "created": e["created"], "backend": e["backend"],
             "cluster": e["cluster"], "state": e["state"], "n_runs": e["n_runs"],
             "runs_by_state": counts.get(e["exp_id"], {}), "tags": e["tags"], "note": e.get("note"),
             "archived": e.get("archived")}
            for e in ledger.experiments() if keep.keeps(e)]


def experiments_text(ledger: Ledger, keep: ExperimentFilter | None = None) -> str:
    """`status` as text; with filters that keep nothing, a line that says which."""
    keep = keep if keep is not None else ExperimentFilter()
    # One read of the ledger, archived experiments included, to also count those hidden.
    every = experiment_summaries(ledger, replace(keep, archived=True))
    data = every if keep.archived else [e for e in every if not e["archived"]]
    text = f"no experiment matches: {keep.describe()}\n" if keep and not data else format_experiments(data)
    if not keep.archived:
        hidden = len(every) - len(data)
        if hidden:
            text += f"({hidden} archived experiment(s) not listed; --archived lists them)\n"
    return text


# How many runs `status EXPERIMENT` lists before it summarises the rest: a table of 100,000
# runs is read by nobody and took a minute to draw; `--all` lists every run, JSON always does.
STATUS_ROWS = 200


def run_statuses(ledger: Ledger, exp_id: str, limit: int | None = None) -> list[dict]:
    """One row per run with its newest attempt's job, node and times (see `RunStatus`), the
    first `limit` runs by index when given."""
    ledger.get_experiment(exp_id, required=True)
    return [row.to_dict() for row in ledger.run_statuses(exp_id, limit=limit)]


def runs_text(ledger: Ledger, exp_id: str, all_runs: bool = False, width: int | None = None) -> str:
    """`status EXPERIMENT` as text: every run with `all_runs`, else the first STATUS_ROWS and
    the count of every run by state (read by SQL, not by drawing them)."""
    if all_runs:
        return format_runs(exp_id, run_statuses(ledger, exp_id), width)
    rows = run_statuses(ledger, exp_id, limit=STATUS_ROWS)
    return format_runs(exp_id, rows, width, by_state=ledger.counts_by_state(exp_id))


# --- as text: fitted to the terminal, never cutting an id or a state ---------------------

def _counts(by_state: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(by_state.items(), key=lambda kv: (-kv[1], kv[0])))


def format_experiments(data: list[dict], width: int | None = None) -> str:
    """The experiments table: id and state whole; `created` (local time, to the minute) is
    the first column left out, then the tags (a column only when some experiment has one),
    the cluster (`local` for the local backend); the run counts ("3: COMPLETED=2 FAILED=1",
    total first) are cut last."""
    from slurmexp.report.fit import Column, render
    from slurmexp.timeutil import display_time
    where = [e["cluster"] or "" if e["backend"] == "slurm" else e["backend"] for e in data]
    return render([
        Column("experiment", [e["exp_id"] for e in data], keep=True),
        Column("state", [e["state"] for e in data], keep=True),
        Column("runs", [f"{e['n_runs']}: {_counts(e['runs_by_state'])}".rstrip(": ")
                        for e in data], shrink_to=8, priority=3),
        Column("cluster", where, priority=2),
        *([Column("tags", [",".join(e.get("tags") or []) for e in data], shrink_to=8, priority=1)]
          if any(e.get("tags") for e in data) else []),
        Column("created", [display_time(e["created"], seconds=False) for e in data]),
        *([Column("archived", [display_time(e["archived"], seconds=False) if e.get("archived") else ""
                               for e in data], priority=1)] if any(e.get("archived") for e in data) else []),
    ], width, left_out_hint="see --format json")


def format_runs(exp_id: str, data: list[dict], width: int | None = None,
                by_state: dict[str, int] | None = None) -> str:
    """One experiment's runs: run ids and states whole; parameters and reasons cut to fit
    (one line each; `slurmexp show RUN` has them whole). With `by_state` (every run's state
    counted) and fewer rows than runs, the counts come first and a line says what is left out."""
    from slurmexp.report.fit import Column, render_fitted
    reasons = [(r["reason"] or "").splitlines()[0] if r["reason"] else "" for r in data]
    cols = [
        Column("run", [r["run_id"] for r in data], keep=True),
        Column("params", [" ".join(f"{k}={v}" for k, v in r["params"].items()) for r in data],
               shrink_to=12, priority=4),
        Column("state", [r["state"] for r in data], keep=True),
        Column("att", [str(r["attempts"]) for r in data], priority=2),
        Column("job", [r["job"] or "" for r in data], priority=3),
        Column("node", [r["node"] or "" for r in data], priority=1),
        Column("reason", reasons, shrink_to=10, priority=0),
    ]
    text, cut = render_fitted(cols, width, left_out_hint="see --format json")
    cut = "reason" in cut or any(r["reason"] and "\n" in r["reason"] for r in data)
    note = "reasons cut to fit; `slurmexp show RUN` has them whole\n" if cut else ""
    head = f"experiment {exp_id}\n"
    total = sum(by_state.values()) if by_state else len(data)
    if total > len(data):
        import textwrap

        from slurmexp.report.fit import terminal_width
        w = width or terminal_width()
        head += textwrap.fill(f"{total:,} runs: {_counts(by_state)}", w, subsequent_indent="  ") + "\n"
        note += textwrap.fill(f"the first {len(data):,} of {total:,} runs, by index; `slurmexp status "
                              f"{exp_id} --all` lists every run, `--format json` gives them to "
                              f"programs", w, break_on_hyphens=False) + "\n"
    return f"{head}{text}{note}"
