"""`slurmexp archive` and `slurmexp rm`: keeping the experiment list short.

Archiving keeps everything and only hides the experiment from `status` (`status --archived`
shows it, `archive --undo` brings it back). Removing deletes the experiment's rows from the
ledger in one transaction, and with `files` its folder; it refuses an experiment that still
has work in Slurm or in the ledger (runs not final, a submission whose job is not recorded),
because reconcile could no longer follow it. A folder is removed only when it is the
experiment's own (named after its id and holding its manifests), never a folder the ledger
merely points at.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from slurmexp import layout
from slurmexp.errors import Problem, SlurmexpError
from slurmexp.ledger import Ledger
from slurmexp.states import TERMINAL_STATES


def archive_experiment(ledger: Ledger, exp_id: str, undo: bool = False) -> str:
    ledger.set_experiment_archived(exp_id, not undo)
    return (f"{exp_id}: shown by `slurmexp status` again" if undo else
            f"{exp_id}: archived (hidden from `slurmexp status`; `status --archived` lists it)")


def removal_problems(ledger: Ledger, exp_id: str) -> list[Problem]:
    """Why `exp_id` cannot be removed now (empty: it can)."""
    counts = ledger.counts_by_state(exp_id)
    active = {s: n for s, n in counts.items() if s not in TERMINAL_STATES}
    intents = ledger.intents(exp_id)
    out = []
    if active:
        what = ", ".join(f"{n} {s}" for s, n in sorted(active.items()))
        out.append(Problem(str(ledger.path), "runs", f"{exp_id} still has runs that are not final: {what}",
                           f"`slurmexp cancel {exp_id}` first (or wait until it finishes)"))
    if intents:
        out.append(Problem(str(ledger.path), "submissions",
                           f"{len(intents)} submission(s) of {exp_id} wait for reconcile to find their job",
                           f"`slurmexp reconcile` first, then `slurmexp cancel {exp_id}`"))
    return out


def _own_folder(exp: dict) -> Path | None:
    folder = Path(exp["exp_dir"]) if exp.get("exp_dir") else None
    if folder is None or not folder.is_dir():
        return None
    paths = layout.ExperimentPaths(folder)
    if folder.name != exp["exp_id"] or not paths.manifests_dir.is_dir():
        raise SlurmexpError(f"rm: {folder} does not look like {exp['exp_id']}'s own folder; left alone",
                            [Problem(str(folder), "exp_dir", "not named after the experiment, or no "
                                     "manifests/ in it", "remove it yourself if it is really this "
                                     "experiment's; or run rm without --files")])
    return folder


def remove_experiment(ledger: Ledger, exp_id: str, files: bool = False) -> str:
    """Delete `exp_id` from the ledger (and its folder with `files`); refuses active ones."""
    exp = ledger.get_experiment(exp_id, required=True)
    problems = removal_problems(ledger, exp_id)
    if problems:
        raise SlurmexpError(f"rm: {exp_id} is still active; nothing removed", problems)
    folder = _own_folder(exp) if files else None
    n = ledger.delete_experiment(exp_id)
    text = f"{exp_id}: removed from the ledger ({n} run(s))"
    if folder is not None:
        shutil.rmtree(folder)
        text += f" and its folder {folder}"
    elif exp.get("exp_dir"):
        text += f"; its folder {exp['exp_dir']} is kept (--files removes it)"
    return text
