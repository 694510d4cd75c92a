"""What the user typed for an experiment, as an experiment id: the same rule in every command.

An exact id wins; then an experiment's `name`, meaning its newest experiment (people remember
"zip-sample", not "zip-sample-13da2f0c-2"); then a unique prefix of an id. Ambiguity is an
error listing the candidates, never a guess. No pandas here: `status` and `retry` use it.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from slurmexp.errors import Problem, SlurmexpError

if TYPE_CHECKING:  # pragma: no cover
    from slurmexp.ledger import Ledger


def resolve_experiment(ledger: Ledger, ref: str, experiments: list[dict] | None = None) -> str:
    """The experiment id `ref` names (id, name or unique id prefix); raises when none or many."""
    exps = ledger.experiments() if experiments is None else experiments
    ids = [e["exp_id"] for e in exps]
    if ref in ids:
        return ref
    named = [e for e in exps if e["name"] == ref]
    if named:
        return max(named, key=lambda e: (e["created"] or "", e["exp_id"]))["exp_id"]
    hits = [k for k in ids if k.startswith(ref)] if ref else []
    if not hits:
        ledger.get_experiment(ref, required=True)   # raises, with suggestions
    if len(hits) > 1:
        raise SlurmexpError(f"experiment {ref!r} is ambiguous", [Problem(
            str(ledger.path), "experiments", f"{len(hits)} experiments start with {ref!r}",
            fix=f"type more of the id: {', '.join(hits[:8])}")])
    return hits[0]


def resolve_experiments(ledger: Ledger, refs: Iterable[str] | str | None) -> list[str]:
    """Experiment ids for what the user typed (see resolve_experiment); none = all, in the
    order the ledger lists them; each id once."""
    exps = ledger.experiments()
    if isinstance(refs, str):
        refs = [refs]
    refs = [r for r in (refs or []) if r]
    if not refs:
        return ledger.experiment_ids()
    out: list[str] = []
    for ref in refs:
        exp_id = resolve_experiment(ledger, ref, exps)
        if exp_id not in out:
            out.append(exp_id)
    return out
