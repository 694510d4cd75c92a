"""Schema migrations on ledgers written by older slurmexp versions: data, indexes and foreign
keys survive; the experiments table loses its backend CHECK; attempts gain unlisted_since."""
from __future__ import annotations

import sqlite3

import pytest

from slurmexp.errors import SlurmexpError
from slurmexp.ledger import Ledger, schema
from slurmexp.states import SLURM_REQUEUES_STATES, TERMINAL_STATES

TABLES = ("experiments", "runs", "submissions", "attempts", "events", "heartbeats")


def _old_ledger(monkeypatch, path, version: int) -> None:
    """A ledger file as the slurmexp with schema `version` left it, with some of everything."""
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:version])
    with Ledger(path) as led:
        assert led.schema_version == version
        runs = [dict(run_id=f"r{i}", idx=i, params={"i": i}, run_dir=f"/exp/runs/r{i}",
                     chunk=0, task_index=i) for i in range(3)]
        for exp_id, backend in (("a-00000001", "slurm"), ("b-00000002", "local")):
            led.create_experiment(exp_id, "demo", "fp-" + exp_id, "mini", backend, "/exp", None,
                                  None, None, None, None, {"git": None}, runs)
        led.set_experiment_settings("a-00000001", {"retry": {"max_attempts": 2}})
        sub = led.record_intent("a-00000001", 0, "0-2", 3, "/exp/chunk.sbatch", "sha", "mini")
        ids = led.record_submitted(sub, "77", "2024-01-01T10:00:00")
        led.update_attempt(ids[0], state="NODE_FAIL", reason="NODE_FAIL on c1")
        led.record_submit_failed(led.record_intent("a-00000001", 0, "1", 1, "/x", "s", "mini"),
                                 "sbatch: error")
        led.set_experiment_state("b-00000002", "FINISHED")
        led.record_heartbeat("reconcile", True, {"active": 3})
    monkeypatch.undo()


def _tables(led: Ledger) -> dict[str, list[dict]]:
    return {t: [dict(r) for r in led.db.query(f"SELECT * FROM {t} ORDER BY rowid")] for t in TABLES}


def _indexes(led: Ledger) -> dict[str, str]:
    return {name: sql for name, sql in led.db.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")}


def _foreign_keys(led: Ledger) -> dict[str, list[tuple]]:
    return {t: sorted(tuple(r[2:5]) for r in led.db.execute(f"PRAGMA foreign_key_list({t})"))
            for t in TABLES}


def test_migrating_a_version_2_ledger_keeps_data_indexes_and_foreign_keys(monkeypatch, tmp_path):
    path = tmp_path / "ledger.db"
    _old_ledger(monkeypatch, path, 2)
    raw = sqlite3.connect(path)
    before_sql = raw.execute("SELECT sql FROM sqlite_master WHERE name = 'experiments'").fetchone()[0]
    assert "CHECK (backend IN ('slurm', 'local'))" in before_sql     # really the old schema
    raw.close()
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:2])   # opens it, migrates nothing
    with Ledger(path) as led:
        before = _tables(led)
        indexes, fks = _indexes(led), _foreign_keys(led)
    monkeypatch.undo()

    with Ledger(path) as led:
        assert led.schema_version == len(schema.MIGRATIONS) >= 4
        after = _tables(led)
        assert {r.pop("unlisted_since") for r in after["attempts"]} == {None}
        assert {r.pop("metrics_json") for r in after["attempts"]} == {None}    # schema 7
        assert {(r.pop("reuse_key"), r.pop("reused_from"), r.pop("reused_attempt"))
                for r in after["runs"]} == {(None, None, None)}                  # schema 6
        assert {(r.pop("notify_state"), r.pop("notified_json")) for r in after["experiments"]} == {
            (None, None)}
        assert {(r.pop("tags_json"), r.pop("note"), r.pop("archived")) for r in after["experiments"]} == {
            (None, None, None)}
        assert after == before
        assert led.get_experiment("a-00000001")["tags"] == []          # schema 5, read as none
        new = _indexes(led)
        assert {k: v for k, v in new.items() if k not in _V8_INDEXES} == indexes | {   # schema 9's
            "runs_reusable": "CREATE INDEX runs_reusable ON runs (reuse_key) WHERE "
                             f"{schema.REUSABLE_RUN_SQL}"}
        assert set(new) - set(indexes) - {"runs_reusable"} == set(_V8_INDEXES)
        assert _foreign_keys(led) == fks
        assert ("experiments", "exp_id", "exp_id") in fks["runs"]
        assert led.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert led.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert led.db.execute("PRAGMA foreign_key_check").fetchall() == []
        sql = led.db.execute("SELECT sql FROM sqlite_master WHERE name = 'experiments'").fetchone()[0]
        assert "CHECK" not in sql and "experiments_v4" not in sql
        # The ledger stores any backend kind now; references to experiments still hold.
        led.create_experiment("c-00000003", "demo", "fp-c", None, "submitit", "/exp", None, None,
                              None, None, None, {}, [dict(run_id="r0", idx=0, params={})])
        assert led.get_experiment("c-00000003")["backend"] == "submitit"
        assert led.experiment_settings("a-00000001").retry.max_attempts == 2
        with pytest.raises(sqlite3.IntegrityError):
            led.db.insert("runs", {"exp_id": "nope", "run_id": "r0", "idx": 0,
                                   "params_json": "{}", "state": "PLANNED"})
        with pytest.raises(sqlite3.IntegrityError):
            led.db.execute("DELETE FROM experiments WHERE exp_id = 'a-00000001'")


_V8_INDEXES = ("attempts_active", "attempts_cancel_open", "runs_planned", "attempts_requeue_watch")


def test_the_active_attempts_index_lists_todays_final_states():
    """The partial index's list is frozen in migration 8; a new final state needs a new
    migration (and ACTIVE_ATTEMPT_SQL its list), or the pass scans every attempt again."""
    assert set(schema.TERMINAL_STATES_V8) == TERMINAL_STATES
    assert set(schema.REQUEUES_STATES_V8) == SLURM_REQUEUES_STATES


def test_a_passs_reads_use_the_partial_indexes_after_migrating_a_version_6_ledger(monkeypatch, tmp_path):
    """What a reconcile pass reads of attempts and runs goes through migration 8's partial
    indexes (no scan of every finished attempt and run of the ledger's history)."""
    path = tmp_path / "ledger.db"
    _old_ledger(monkeypatch, path, 6)
    with Ledger(path) as led:
        assert led.schema_version == len(schema.MIGRATIONS) >= 7
        # The statements as sent, with their parameters: SQLite matches a partial index against
        # the WHERE as written (a bound parameter never matches), so no expanded trace here.
        seen: list[tuple] = []
        execute = led.db.execute
        monkeypatch.setattr(led.db, "execute", lambda sql, params=None: seen.append((sql, params))
                            or execute(sql, params))
        assert [a.state for a in led.active_attempts(["slurm"])] == ["SUBMITTED", "SUBMITTED"]
        led.unconfirmed_cancels("2024-01-01T00:00:00", ["slurm"])
        led.resubmittable_runs(["slurm"])
        led.requeue_watch(["slurm"])
        monkeypatch.undo()
        plans = [" / ".join(r[3] for r in led.db.execute(f"EXPLAIN QUERY PLAN {sql}", params))
                 for sql, params in seen]
    assert len(plans) == 4
    for plan, index in zip(plans, _V8_INDEXES):
        assert f"USING INDEX {index}" in plan and "SCAN a /" not in plan and "SCAN r /" not in plan, plan


def test_reuse_reads_completed_runs_through_schema_9s_index_and_holds_no_other(monkeypatch, tmp_path):
    """Migrating a version-8 ledger replaces the (reuse_key, state) index of every run by one of
    the completed runs that ran: `--skip-completed`'s lookup goes through it, and a launch's
    PLANNED and SUBMITTED runs (random reuse-key hashes) are not written into it."""
    path = tmp_path / "ledger.db"
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:8])
    runs = [dict(run_id=f"r{i}", idx=i, params={"i": i}, run_dir=f"/exp/runs/r{i}", chunk=0,
                 task_index=i, reuse_key=f"key{i}") for i in range(3)]
    with Ledger(path) as led:
        led.create_experiment("a-00000001", "demo", "fp-a", "mini", "slurm", "/exp", None, None,
                              None, None, None, {}, runs)
        ids = led.record_submitted(led.record_intent("a-00000001", 0, "0-2", 3, "/x", "s", "mini"), "77")
        led.update_attempt(ids[0], state="COMPLETED")
        led.update_attempt(ids[1], state="FAILED")
        assert "runs_reuse" in _indexes(led)
    monkeypatch.undo()
    with Ledger(path) as led:
        assert led.schema_version == 9 and "runs_reuse" not in _indexes(led)
        led.create_experiment("b-00000002", "demo", "fp-b", "mini", "slurm", "/exp", None, None,
                              None, None, None, {}, runs)
        indexed = led.db.execute("SELECT run_id FROM runs INDEXED BY runs_reusable "
                                 "WHERE state = 'COMPLETED' AND reused_from IS NULL").fetchall()
        assert [r[0] for r in indexed] == ["r0"]
        seen: list[tuple] = []
        query = led.db.query
        monkeypatch.setattr(led.db, "query", lambda sql, params=None: seen.append((sql, params))
                            or query(sql, params))
        found = led.completed_by_reuse_key(["key0", "key1", "key2"], exclude_exp="b-00000002")
        monkeypatch.undo()
        assert [(k, v["exp_id"], v["attempt_id"]) for k, v in found.items()] == [
            (("r0", "key0"), "a-00000001", ids[0])]
        plans = [" / ".join(r[3] for r in led.db.execute(f"EXPLAIN QUERY PLAN {sql}", params))
                 for sql, params in seen]
        assert len(plans) == 1 and "SEARCH r USING INDEX runs_reusable" in plans[0], plans


def test_migrating_a_version_1_ledger(monkeypatch, tmp_path):
    path = tmp_path / "ledger.db"
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:1])
    with Ledger(path) as led:
        led.create_experiment("a-00000001", "demo", "fp", "mini", "slurm", "/exp", None, None,
                              None, None, None, {}, [dict(run_id="r0", idx=0, params={})])
    monkeypatch.undo()
    with Ledger(path) as led:
        assert led.schema_version == len(schema.MIGRATIONS)
        exp = led.get_experiment("a-00000001")
        assert exp["settings_json"] is None and exp["backend"] == "slurm"
        assert "unlisted_since" in led.db.columns("attempts")


def test_a_rebuild_that_would_break_references_changes_nothing(monkeypatch, tmp_path):
    path = tmp_path / "ledger.db"
    _old_ledger(monkeypatch, path, len(schema.MIGRATIONS))
    with Ledger(path) as led:
        before = _tables(led)

    @schema._rebuilds_tables
    def careless(db):       # a rebuild that loses rows on the way
        db.execute("DELETE FROM experiments WHERE exp_id = 'a-00000001'")

    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, careless])
    with pytest.raises(SlurmexpError, match="would break"):
        Ledger(path)
    monkeypatch.undo()
    with Ledger(path) as led:
        assert led.schema_version == len(schema.MIGRATIONS)
        assert _tables(led) == before
        assert led.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_typed_rows_match_their_tables(tmp_path):
    """A column added by a migration must be added to its row type too (and the reverse)."""
    from slurmexp.ledger.rows import ActiveAttempt, Attempt, PlannedRun, Submission

    with Ledger(tmp_path / "ledger.db") as led:
        cols = {t: led.db.columns(t) for t in ("attempts", "submissions", "runs")}
    assert sorted(Attempt.fields()) == sorted(cols["attempts"])
    assert sorted(Submission.fields()) == sorted(cols["submissions"])
    assert sorted(set(PlannedRun.fields()) - set(PlannedRun._sql)) == sorted(cols["runs"])
    assert set(ActiveAttempt.fields()) - set(ActiveAttempt._sql) == set(cols["attempts"])
