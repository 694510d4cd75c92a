"""Shell completion of EXPERIMENT and RUN arguments from the ledger (click's `shell_complete`).

Completion runs on every TAB press, often before anything was launched, so it opens the ledger
in "read" mode (never creates or changes a file) and says nothing when it cannot: any error,
a missing or damaged ledger included, completes to nothing. The ledger is the one the command
line names (`--ledger`, $SLURMEXP_LEDGER, $SLURMEXP_HOME), as the command itself would use.
Enable it with `eval "$(_SLURMEXP_COMPLETE=bash_source slurmexp)"` (README).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from click.shell_completion import CompletionItem

MAX_ITEMS = 200          # runs offered at once: a shell shows no more, a big ledger has millions


def _with_ledger(ctx: click.Context, use: Callable[[Any], list[CompletionItem]]) -> list[CompletionItem]:
    try:
        from slurmexp.ledger import Ledger

        root = ctx.find_root()
        path = (root.params or {}).get("ledger_path") or (root.obj or {}).get("ledger_path")
        ledger = Ledger(path, mode="read")
        try:
            return use(ledger)
        finally:
            ledger.close()
    except Exception:  # noqa: BLE001 - completion must never print a traceback into a shell
        return []


def experiment_items(ledger: Any, incomplete: str) -> list[CompletionItem]:
    """Experiment ids and sweep names starting with `incomplete`, newest first."""
    exps = list(reversed(ledger.experiments()))
    items = [CompletionItem(e["exp_id"], help=f"{e['name']}, {e['state']}".lower())
             for e in exps if e["exp_id"].startswith(incomplete)]
    names: list[str] = []
    for e in exps:
        if e["name"].startswith(incomplete) and e["name"] not in names \
                and e["name"] not in (i.value for i in items):
            names.append(e["name"])
    return items + [CompletionItem(n, help="its newest experiment") for n in names]


def run_items(ledger: Any, incomplete: str) -> list[CompletionItem]:
    """Run ids starting with `incomplete`, or, for `EXPERIMENT:PREFIX`, that experiment's runs
    as `EXPERIMENT:RUN` (EXPERIMENT as `show` reads it: an id, a unique prefix or a name)."""
    if ":" in incomplete:
        exp_ref, _, prefix = incomplete.partition(":")
        from slurmexp.report.refs import resolve_experiment

        exp_id = resolve_experiment(ledger, exp_ref)
        return [CompletionItem(f"{exp_ref}:{run_id}")
                for _, run_id in ledger.run_ids_starting(prefix, exp_id, MAX_ITEMS)]
    seen: dict[str, list[str]] = {}
    for exp_id, run_id in ledger.run_ids_starting(incomplete, None, MAX_ITEMS):
        seen.setdefault(run_id, []).append(exp_id)
    return [CompletionItem(run_id, help=", ".join(exps)) for run_id, exps in seen.items()]


def complete_experiment(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """`shell_complete` of an EXPERIMENT argument."""
    return _with_ledger(ctx, lambda ledger: experiment_items(ledger, incomplete))


def complete_run(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """`shell_complete` of a RUN argument."""
    return _with_ledger(ctx, lambda ledger: run_items(ledger, incomplete))
