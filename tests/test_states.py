"""The state vocabulary: one owner (slurmexp.states), the words Slurm prints, and the sets."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from slurmexp import states
from slurmexp.states import classify, is_known, ledger_state, state_word

PACKAGE = Path(__file__).resolve().parents[1] / "slurmexp"


def test_slurm_words_are_pinned():
    # Deliberately spelled out: a word added to or dropped from Slurm's list is a decision.
    assert states.SLURM_STATES == {
        "PENDING", "RUNNING", "SUSPENDED", "COMPLETING", "CONFIGURING", "COMPLETED", "CANCELLED",
        "FAILED", "TIMEOUT", "PREEMPTED", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY",
        "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "REVOKED", "SPECIAL_EXIT",
        "STOPPED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD", "LAUNCH_FAILED", "POWER_UP_NODE",
        "RECONFIG_FAIL", "UPDATE_DB"}
    assert states.TERMINAL_STATES == {
        "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
        "PREEMPTED", "BOOT_FAIL", "DEADLINE", "LOST", "DEPENDENCY_FAILED"}
    assert states.ACTIVE_STATES == {"PLANNED", "SUBMITTED", "PENDING", "RUNNING", "REQUEUED",
                                    "SUSPENDED", "STALLED"}


def test_the_sets_fit_together():
    # Slurm's words are active, final or neither, never two of these.
    assert not states.SLURM_ACTIVE_STATES & states.SLURM_FINAL_STATES
    assert not states.SLURM_OTHER_STATES & (states.SLURM_ACTIVE_STATES | states.SLURM_FINAL_STATES)
    # The ledger writes only its own words for what is still going.
    assert set(states.ACTIVE_ALIASES.values()) <= states.ACTIVE_STATES
    assert not states.ACTIVE_STATES & states.TERMINAL_STATES
    assert set(states.PROGRESS) == states.ACTIVE_STATES
    assert states.REQUEUE_WORDS <= states.SLURM_ACTIVE_STATES
    # Every final state but COMPLETED is in exactly one failure class.
    classes = (states.INFRASTRUCTURE_STATES, states.RESOURCE_STATES, states.USER_STATES,
               states.DEPENDENCY_STATES)
    assert sum(len(c) for c in classes) == len(states.FAILED_STATES)
    assert set().union(*classes) == states.FAILED_STATES == states.TERMINAL_STATES - {"COMPLETED"}
    assert states.FINISHED_EXPERIMENT_STATES | states.STOPPED_EXPERIMENT_STATES <= set(
        states.EXPERIMENT_STATES)
    assert states.RECORDED_SUBMISSION_STATES <= set(states.SUBMISSION_STATES)


@pytest.mark.parametrize("text,word", [
    ("CANCELLED by 123", "CANCELLED"), ("COMPLETED", "COMPLETED"), (" RUNNING ", "RUNNING"),
    ("", "UNKNOWN"), ("   ", "UNKNOWN"), (None, "UNKNOWN"), ("WEIRD_NEW extra", "WEIRD_NEW"),
])
def test_first_word_counts(text, word):
    assert state_word(text) == word


def test_unknown_words_are_kept_and_flagged():
    assert is_known("CANCELLED by 0") and is_known("REQUEUE_HOLD")
    assert not is_known("WEIRD_NEW_STATE extra") and not is_known("LOST")   # LOST is ours
    assert not is_known("STALLED") and states.STALLED not in states.SLURM_STATES       # so is STALLED
    assert ledger_state("WEIRD_NEW_STATE") == "WEIRD_NEW_STATE"
    assert ledger_state("CANCELLED by 123") == "CANCELLED"
    assert ledger_state("REQUEUE_HOLD") == "REQUEUED" and ledger_state("STOPPED") == "SUSPENDED"
    assert classify("WEIRD_NEW_STATE", 0) == "unknown" and classify("   ") == "unknown"
    assert classify("SPECIAL_EXIT", 0) == "unknown"      # known, but no meaning here


def test_classes_follow_the_sets():
    for state in states.SLURM_ACTIVE_STATES | states.ACTIVE_STATES | {"COMPLETED"}:
        assert classify(state) is None, state
    for state in states.INFRASTRUCTURE_STATES:
        assert classify(state) == states.INFRASTRUCTURE
    for state in states.RESOURCE_STATES:
        assert classify(state, 0) == states.RESOURCES
    for state in states.USER_STATES:
        assert classify(state + " by 7", 0) == states.USER


def test_states_imports_nothing_of_slurmexp():
    code = ("import sys, slurmexp.states; "
            "extra = sorted(m for m in sys.modules if m.startswith('slurmexp.') "
            "and m != 'slurmexp.states'); assert not extra, extra")
    subprocess.run([sys.executable, "-c", code], check=True)


def _state_literals(path: Path) -> list[tuple[int, list[str]]]:
    words = states.SLURM_STATES | states.ACTIVE_STATES | states.TERMINAL_STATES
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.Set, ast.Tuple, ast.List)):
            values = [e.value for e in node.elts if isinstance(e, ast.Constant)
                      and isinstance(e.value, str)]
            hits = [v for v in values if v in words]
            if len(hits) >= 4:
                found.append((node.lineno, hits))
    return found


def test_no_module_spells_a_state_set_of_its_own():
    copies = {str(p.relative_to(PACKAGE)): lits for p in sorted(PACKAGE.rglob("*.py"))
              if p.name != "states.py" and (lits := _state_literals(p))}
    assert not copies, f"state sets belong in slurmexp/states.py: {copies}"
