from __future__ import annotations

import multiprocessing
import os
import sqlite3
import stat

import pytest

from slurmexp.arrays import task_key, task_set
from slurmexp.errors import SlurmexpError
from slurmexp.ledger import Ledger
from slurmexp.ledger import schema as ledger_mod
from slurmexp.ledger.connection import (
    choose_journal_mode,
    default_ledger_path,
    fs_type_for_path,
    is_network_fs,
)

MOUNTS = """\
/dev/sda1 / ext4 rw,relatime 0 0
tmpfs /tmp tmpfs rw,nosuid,nodev 0 0
nfs01:/export/home /home nfs4 rw,relatime,vers=4.2 0 0
10.0.0.5@o2ib:/scratch /scratch lustre rw,flock 0 0
/dev/sdb1 /home/local\\040disk ext4 rw 0 0
/dev/sdc1 /homework xfs rw 0 0
"""


@pytest.fixture(autouse=True)
def _no_env_override(monkeypatch):
    monkeypatch.delenv("SLURMEXP_JOURNAL_MODE", raising=False)


@pytest.fixture
def ledger(tmp_path):
    led = Ledger(tmp_path / "home" / "ledger.db")
    yield led
    led.close()


def make_runs(n: int, chunk_size: int) -> list[dict]:
    return [dict(run_id=f"r{i:04d}", idx=i, params={"lr": 0.1 * i, "name": f"x{i}"}, seed=i,
                 source="grid", run_dir=f"/exp/runs/r{i:04d}", chunk=i // chunk_size,
                 task_index=i % chunk_size) for i in range(n)]


def make_exp(led: Ledger, exp_id: str = "demo-abcdef12", n: int = 10, chunk_size: int = 5,
             fingerprint: str = "fp1") -> dict:
    return led.create_experiment(
        exp_id=exp_id, name="demo", fingerprint=fingerprint, cluster="mini", backend="slurm",
        exp_dir="/exp", sweep_path="/src/sweep.toml", sweep_copy_path="/exp/sweep.toml",
        site_path="/src/site.toml", site_hash="sh", template_hash="th",
        provenance={"git": None}, runs=make_runs(n, chunk_size))


def submit_chunk(led: Ledger, exp_id: str, chunk: int, job_id: str, spec: str = "0-4",
                 submit_time: str | None = None) -> tuple[int, list[int]]:
    sub_id = led.record_intent(exp_id, chunk, spec, 5, "/exp/chunk.sh", "abc", "mini")
    return sub_id, led.record_submitted(sub_id, job_id, submit_time)


# --- file, location, journal mode ---------------------------------------------------------

def test_file_and_directory_are_private(tmp_path):
    led = Ledger(tmp_path / "new" / "ledger.db")
    assert stat.S_IMODE(os.stat(led.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(led.path.parent).st_mode) == 0o700
    led.close()


def test_existing_world_readable_file_is_narrowed(tmp_path):
    path = tmp_path / "ledger.db"
    Ledger(path).close()
    os.chmod(path, 0o644)
    Ledger(path).close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_default_path(monkeypatch, tmp_path):
    monkeypatch.setenv("SLURMEXP_HOME", str(tmp_path / "sx"))
    assert default_ledger_path() == tmp_path / "sx" / "ledger.db"
    monkeypatch.delenv("SLURMEXP_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_ledger_path() == tmp_path / ".slurmexp" / "ledger.db"


def test_wal_on_local_disk(ledger):
    if is_network_fs(ledger.fs_type):
        pytest.skip(f"tmp is on {ledger.fs_type}")
    assert ledger.journal_mode == "WAL"
    pragmas = {p: ledger.db.execute(f"PRAGMA {p}").fetchone()[0]
               for p in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")}
    assert pragmas == {"journal_mode": "wal", "synchronous": 1, "foreign_keys": 1,
                       "busy_timeout": 30000}


def test_env_override_delete(monkeypatch, tmp_path):
    monkeypatch.setenv("SLURMEXP_JOURNAL_MODE", "delete")
    led = Ledger(tmp_path / "ledger.db")
    assert led.journal_mode == "DELETE"
    assert led.db.execute("PRAGMA synchronous").fetchone()[0] == 2   # FULL
    led.close()


def test_bad_override_is_a_user_error():
    with pytest.raises(SlurmexpError, match="journal mode"):
        choose_journal_mode("ext4", "fast")


@pytest.mark.parametrize("path, fs, mode", [
    ("/home/alice/.slurmexp", "nfs4", "DELETE"),
    ("/home", "nfs4", "DELETE"),
    ("/scratch/alice/exp", "lustre", "DELETE"),
    ("/home/local disk/x", "ext4", "WAL"),      # escaped mount point, longer prefix wins
    ("/homework/x", "xfs", "WAL"),              # /home is not a prefix of /homework
    ("/tmp/pytest/x", "tmpfs", "WAL"),
    ("/opt/x", "ext4", "WAL"),
])
def test_fs_detection_from_mounts_text(path, fs, mode):
    assert fs_type_for_path(path, MOUNTS) == fs
    assert choose_journal_mode(fs) == mode


def test_later_mount_hides_earlier_one_at_same_point():
    text = MOUNTS + "server:/other /home nfs rw 0 0\n/dev/sdd /home ext4 rw 0 0\n"
    assert fs_type_for_path("/home/alice", text) == "ext4"


def test_override_beats_detection():
    assert choose_journal_mode("nfs", "WAL") == "WAL"
    assert is_network_fs("fuse.sshfs") and is_network_fs("gpfs") and not is_network_fs(None)


# --- schema migrations --------------------------------------------------------------------

def test_migrations_applied_once(monkeypatch, tmp_path):
    path = tmp_path / "ledger.db"
    Ledger(path).close()
    known = len(ledger_mod.MIGRATIONS)
    calls = []

    def v2(db):
        calls.append(1)
        db.execute("ALTER TABLE runs ADD COLUMN note TEXT")

    monkeypatch.setattr(ledger_mod, "MIGRATIONS", [*ledger_mod.MIGRATIONS, v2])
    for _ in range(2):
        led = Ledger(path)
        assert led.schema_version == known + 1
        led.close()
    assert calls == [1]
    with Ledger(path) as led:
        assert "note" in led.db.columns("runs")


def test_failed_migration_changes_nothing(monkeypatch, tmp_path):
    path = tmp_path / "ledger.db"
    Ledger(path).close()
    known = len(ledger_mod.MIGRATIONS)

    def broken_v2(db):
        db.execute("ALTER TABLE runs ADD COLUMN note TEXT")
        raise RuntimeError("bug in migration")

    monkeypatch.setattr(ledger_mod, "MIGRATIONS", [*ledger_mod.MIGRATIONS, broken_v2])
    with pytest.raises(RuntimeError):
        Ledger(path)
    monkeypatch.undo()
    with Ledger(path) as led:
        assert led.schema_version == known and "note" not in led.db.columns("runs")


def test_newer_schema_is_refused(ledger):
    ledger.db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(SlurmexpError, match="newer"):
        Ledger(ledger.path)


# --- experiments ----------------------------------------------------------------------------

def test_create_and_find_experiment(ledger):
    exp = make_exp(ledger)
    assert exp["state"] == "PLANNED" and exp["n_runs"] == 10 and exp["provenance"] == {"git": None}
    assert [e["exp_id"] for e in ledger.find_experiment_by_fingerprint("fp1")] == ["demo-abcdef12"]
    assert ledger.find_experiment_by_fingerprint("other") == []
    runs = ledger.runs("demo-abcdef12")
    assert len(runs) == 10 and runs[3]["params"] == {"lr": 0.30000000000000004, "name": "x3"}
    assert ledger.counts_by_state("demo-abcdef12") == {"PLANNED": 10}
    assert [e["kind"] for e in ledger.events("demo-abcdef12")] == ["created"]
    with pytest.raises(SlurmexpError, match="already exists"):
        make_exp(ledger)


def test_unknown_experiment_lists_known_ids(ledger):
    make_exp(ledger)
    assert ledger.get_experiment("nope") is None
    with pytest.raises(SlurmexpError) as err:
        ledger.get_experiment("nope", required=True)
    assert "demo-abcdef12" in err.value.format()
    with pytest.raises(SlurmexpError) as err:
        ledger.get_experiment("demo", required=True)
    assert "did you mean demo-abcdef12" in err.value.format()


def test_next_suffix(ledger):
    assert ledger.next_experiment_suffix("demo-abcdef12") == ""
    make_exp(ledger)
    assert ledger.next_experiment_suffix("demo-abcdef12") == "-2"
    make_exp(ledger, exp_id="demo-abcdef12-2")
    make_exp(ledger, exp_id="demo-abcdef12-7")
    assert ledger.next_experiment_suffix("demo-abcdef12") == "-8"


def test_experiment_state_logs_event(ledger):
    make_exp(ledger)
    ledger.set_experiment_state("demo-abcdef12", "SUBMITTING", "launch")
    ev = ledger.events("demo-abcdef12")[-1]
    assert (ev["kind"], ev["from_state"], ev["to_state"]) == (
        "experiment_state", "PLANNED", "SUBMITTING")
    assert ledger.get_experiment("demo-abcdef12")["state"] == "SUBMITTING"


# --- submissions and attempts -------------------------------------------------------------

def test_intent_then_submitted(ledger):
    make_exp(ledger)
    sub_id = ledger.record_intent("demo-abcdef12", 1, "0-4%2", 5, "/exp/c1.sh", "abc", "mini")
    assert ledger.submissions("demo-abcdef12", state="INTENT")[0]["sub_id"] == sub_id
    ids = ledger.record_submitted(sub_id, 123)
    assert len(ids) == 5
    atts = ledger.attempts("demo-abcdef12")
    assert [a["job_key"] for a in atts] == [f"123_{i}" for i in range(5)]
    assert {a["run_id"] for a in atts} == {f"r{i:04d}" for i in range(5, 10)}
    assert all(a["attempt_no"] == 1 and a["state"] == "SUBMITTED" and a["cluster"] == "mini"
               and a["job_id"] == "123" and a["submit_time"] is None for a in atts)
    assert ledger.counts_by_state("demo-abcdef12") == {"PLANNED": 5, "SUBMITTED": 5}
    assert ledger.submissions("demo-abcdef12")[0]["state"] == "SUBMITTED"
    ev = ledger.events("demo-abcdef12", "r0005")
    assert [(e["kind"], e["to_state"], e["attempt_id"]) for e in ev] == [
        ("submitted", "SUBMITTED", ids[0])]
    # repeating the same answer is harmless; a different job id is a bug
    assert ledger.record_submitted(sub_id, "123") == ids
    with pytest.raises(SlurmexpError):
        ledger.record_submitted(sub_id, "124")


def test_crash_inside_transaction_leaves_nothing(ledger):
    make_exp(ledger)
    sub_id = ledger.record_intent("demo-abcdef12", 0, "0-4", 5, "/exp/c0.sh", "abc", "mini")
    n_events = len(ledger.events("demo-abcdef12"))
    with pytest.raises(RuntimeError):
        with ledger.transaction():
            ledger.record_submitted(sub_id, "55")
            raise RuntimeError("killed after the ledger write, before commit")
    assert ledger.attempts("demo-abcdef12") == []
    assert ledger.submissions("demo-abcdef12")[0]["state"] == "INTENT"
    assert ledger.counts_by_state("demo-abcdef12") == {"PLANNED": 10}
    assert len(ledger.events("demo-abcdef12")) == n_events


def test_failure_midway_through_record_submitted_rolls_back(ledger):
    make_exp(ledger)
    sub_id = ledger.record_intent("demo-abcdef12", 0, "0-4", 5, "/exp/c0.sh", "abc", "mini")

    # The runs' update is its last statement: the attempts and their events are written by then.
    ledger.db.execute("CREATE TEMP TRIGGER boom BEFORE UPDATE ON runs "
                      "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END")
    with pytest.raises(sqlite3.DatabaseError, match="disk I/O error"):
        ledger.record_submitted(sub_id, "55")
    ledger.db.execute("DROP TRIGGER boom")
    assert ledger.attempts("demo-abcdef12") == []
    assert ledger.events("demo-abcdef12")[-1]["kind"] == "intent"
    assert ledger.counts_by_state("demo-abcdef12") == {"PLANNED": 10}
    assert ledger.record_submitted(sub_id, "55")   # and the retry works


def test_nested_transaction_is_a_savepoint(ledger):
    make_exp(ledger)
    with ledger.transaction():
        ledger.set_experiment_state("demo-abcdef12", "SUBMITTING", "outer")
        with pytest.raises(ValueError):
            with ledger.transaction():
                ledger.set_experiment_state("demo-abcdef12", "CANCELLED", "inner")
                raise ValueError
    assert ledger.get_experiment("demo-abcdef12")["state"] == "SUBMITTING"


def test_submit_failed_of_part_of_a_chunk_marks_only_its_tasks(ledger):
    """A refused resubmission of tasks "1,3" of chunk 0 gives only those runs the reason (the
    same rule, `_runs_where`, as recording its job would select them by)."""
    make_exp(ledger)
    sub_id = ledger.record_intent("demo-abcdef12", 0, "1,3", 2, "/exp/c0.sh", "abc", "mini")
    ledger.record_submit_failed(sub_id, "sbatch: error: QOSMaxSubmitJobPerUserLimit")
    reasons = {r["task_index"]: r["reason"] for r in ledger.runs("demo-abcdef12", state="PLANNED")
               if r["chunk"] == 0}
    assert reasons == {0: None, 1: "sbatch: error: QOSMaxSubmitJobPerUserLimit", 2: None,
                       3: "sbatch: error: QOSMaxSubmitJobPerUserLimit", 4: None}


def test_submit_failed_keeps_runs_planned_with_reason(ledger):
    make_exp(ledger)
    sub_id = ledger.record_intent("demo-abcdef12", 0, "0-4", 5, "/exp/c0.sh", "abc", "mini")
    ledger.record_submit_failed(sub_id, "sbatch: error: Invalid qos specification")
    sub = ledger.submissions("demo-abcdef12")[0]
    assert sub["state"] == "FAILED" and "qos" in sub["error"]
    runs = ledger.runs("demo-abcdef12", state="PLANNED")
    assert len(runs) == 10
    assert [r["reason"] for r in runs[:5]] == ["sbatch: error: Invalid qos specification"] * 5
    assert runs[5]["reason"] is None
    assert ledger.attempts("demo-abcdef12") == []


def test_partial_array_spec_creates_only_those_attempts(ledger):
    assert task_set("0-9%2") == set(range(10))
    assert task_set("1,3,6-10:2") == {1, 3, 6, 8, 10}
    make_exp(ledger)
    _, ids = submit_chunk(ledger, "demo-abcdef12", 0, "77", spec="1,3")
    assert [a["job_key"] for a in ledger.attempts("demo-abcdef12")] == ["77_1", "77_3"]


@pytest.mark.parametrize("spec, tasks", [
    ("0-4", [0, 1, 2, 3, 4]), ("0-4%2", [0, 1, 2, 3, 4]), ("2-3", [2, 3]), ("4,0,2", [0, 2, 4]),
    ("3", [3]), (None, [0, 1, 2, 3, 4])])
def test_recorded_job_rows_are_the_spec_tasks_runs_in_task_order(ledger, spec, tasks):
    """The attempts, events and run updates are made inside SQLite from the runs (not row by
    row in Python): each one as its definition says, for every shape of array spec."""
    make_exp(ledger)
    ledger.set_run_state("demo-abcdef12", ["r0007"], "FAILED", reason="an earlier attempt")
    ledger.db.execute("UPDATE runs SET n_attempts = 1 WHERE run_id = 'r0007'")
    submit_chunk(ledger, "demo-abcdef12", 0, "90")            # another chunk's job before it
    sub_id = ledger.record_intent("demo-abcdef12", 1, spec, len(tasks), "/exp/c1.sh", "abc", "mini")
    ids = ledger.record_submitted(sub_id, "91", "2024-05-01T00:00:00")
    atts = [a for a in ledger.attempts("demo-abcdef12") if a["sub_id"] == sub_id]
    assert [a["attempt_id"] for a in atts] == ids
    assert [a["task_index"] for a in atts] == tasks
    assert [a["run_id"] for a in atts] == [f"r{5 + t:04d}" for t in tasks]
    assert [a["job_key"] for a in atts] == [task_key("91", t) for t in tasks]
    assert {(a["job_id"], a["cluster"], a["state"], a["submit_time"]) for a in atts} == {
        ("91", "mini", "SUBMITTED", "2024-05-01T00:00:00")}
    assert [a["attempt_no"] for a in atts] == [2 if t == 2 else 1 for t in tasks]
    runs = {r["run_id"]: r for r in ledger.runs("demo-abcdef12")}
    for t in range(5):
        run = runs[f"r{5 + t:04d}"]
        if t in tasks:
            assert (run["state"], run["reason"], run["n_attempts"]) == ("SUBMITTED", None, 2 if t == 2 else 1)
        else:
            assert run["state"] == ("FAILED" if t == 2 else "PLANNED") and run["n_attempts"] == (t == 2)
    events = [e for e in ledger.events("demo-abcdef12") if e["attempt_id"] in ids]
    assert [(e["run_id"], e["kind"], e["from_state"], e["to_state"]) for e in events] == [
        (f"r{5 + t:04d}", "submitted", "FAILED" if t == 2 else "PLANNED", "SUBMITTED") for t in tasks]
    assert ledger.record_submitted(sub_id, "91") == ids     # repeated: the same, nothing new
    assert len(ledger.attempts("demo-abcdef12")) == 5 + len(tasks)


def test_job_id_reuse_is_a_separate_attempt(ledger):
    make_exp(ledger)
    submit_chunk(ledger, "demo-abcdef12", 0, "123", submit_time="2024-01-01T00:00:00")
    # the cluster was rebuilt and hands out job id 123 again
    submit_chunk(ledger, "demo-abcdef12", 1, "123", spec="0", submit_time="2024-06-01T00:00:00")
    atts = ledger.attempts(cluster="mini", job_id="123")
    assert [a["job_key"] for a in atts] == ["123_0", "123_1", "123_2", "123_3", "123_4", "123_0"]
    assert len({a["attempt_id"] for a in atts}) == 6
    with pytest.raises(sqlite3.IntegrityError):   # the same key at the same time is a duplicate
        ledger.db.insert("attempts", {
            "exp_id": "demo-abcdef12", "run_id": "r0001", "attempt_no": 9, "cluster": "mini",
            "job_id": "123", "job_key": "123_0", "submit_time": "2024-01-01T00:00:00",
            "state": "SUBMITTED"})


def test_requeue_is_a_new_attempt_of_the_same_run(ledger):
    make_exp(ledger)
    _, ids = submit_chunk(ledger, "demo-abcdef12", 0, "600", spec="0",
                          submit_time="2024-03-01T10:00:00")
    ledger.update_attempt(ids[0], state="PREEMPTED")
    new = ledger.record_requeue(ids[0], "2024-03-01T10:05:00")
    assert (new["job_key"], new["attempt_no"], new["state"], new["submit_time"]) == (
        "600_0", 2, "SUBMITTED", "2024-03-01T10:05:00")
    assert new["sub_id"] == ledger.attempts(run_id="r0000")[0]["sub_id"]
    assert ledger.record_requeue(ids[0], "2024-03-01T10:05:00") == new    # again: nothing new
    run = ledger.runs("demo-abcdef12")[0]
    assert (run["state"], run["n_attempts"]) == ("SUBMITTED", 2)
    assert run["reason"].startswith("requeued by Slurm: job 600_0 again")
    ev = [(e["attempt_id"], e["from_state"], e["to_state"])
          for e in ledger.events("demo-abcdef12", "r0000") if e["kind"] == "requeued"]
    assert ev == [(new["attempt_id"], "PREEMPTED", "SUBMITTED")]


def test_set_submit_times_fills_only_missing(ledger):
    make_exp(ledger)
    submit_chunk(ledger, "demo-abcdef12", 0, "200")
    assert ledger.set_submit_times("mini", "200", "2024-02-02T10:00:00") == 5
    assert ledger.set_submit_times("mini", "200", "2099-01-01T00:00:00") == 0
    assert {a["submit_time"] for a in ledger.attempts("demo-abcdef12")} == {"2024-02-02T10:00:00"}
    assert ledger.submissions("demo-abcdef12")[0]["submit_time"] == "2024-02-02T10:00:00"


def test_an_attempt_learning_its_submit_time_fills_its_submission(ledger):
    # A launch killed after recording the job and before stamping its submit time: reconcile
    # learns the time per attempt (update_attempt); the submission must get it too.
    make_exp(ledger)
    sub_id, ids = submit_chunk(ledger, "demo-abcdef12", 0, "210")
    _, other = submit_chunk(ledger, "demo-abcdef12", 1, "211")
    ledger.update_attempt(ids[0], submit_time="2024-02-02T10:00:00", state="PENDING")
    ledger.update_attempt(ids[1], submit_time="2024-02-02T10:00:05")
    subs = {s["sub_id"]: s for s in ledger.submissions("demo-abcdef12")}
    assert subs[sub_id]["submit_time"] == "2024-02-02T10:00:00"      # the first learned, kept
    assert [s["submit_time"] for k, s in subs.items() if k != sub_id] == [None]


def test_update_attempt_moves_run_and_logs_event(ledger):
    make_exp(ledger)
    _, ids = submit_chunk(ledger, "demo-abcdef12", 0, "300")
    a = ledger.update_attempt(ids[0], state="PENDING", reason="Priority")
    assert a["state"] == "PENDING" and a["reason"] == "Priority"
    ledger.update_attempt(ids[0], state="PENDING", reason="Priority")   # no change, no event
    ledger.update_attempt(ids[0], state="RUNNING", node="c1", sacct_json={"State": "RUNNING"})
    run = ledger.runs("demo-abcdef12", state="RUNNING")[0]
    assert run["run_id"] == "r0000" and run["reason"] is None
    att = ledger.attempts(run_id="r0000")[0]
    assert att["node"] == "c1" and att["reason"] is None
    assert att["sacct_json"] == '{"State":"RUNNING"}'
    ev = [(e["from_state"], e["to_state"], e["reason"])
          for e in ledger.events("demo-abcdef12", "r0000") if e["kind"] == "state"]
    assert ev == [("SUBMITTED", "PENDING", "Priority"), ("PENDING", "RUNNING", None)]
    with pytest.raises(TypeError):
        ledger.update_attempt(ids[0], run_id="r0009")
    with pytest.raises(TypeError):
        ledger.update_attempt(ids[0], colour="red")


def _ledger_tables(led: Ledger) -> dict:
    """attempts, runs and events without their timestamps (two ledgers written at two times)."""
    drop = {"updated", "ts", "event_id"}
    return {t: [{k: v for k, v in r.items() if k not in drop}
                for r in led.db.query(f"SELECT * FROM {t} ORDER BY 1, 2")]
            for t in ("attempts", "runs", "events")}


# (attempt index, fields) in order; reason=... is passed as update_attempt's reason argument.
_UPDATES = [
    (0, dict(state="PENDING", reason="Priority")),
    (1, dict(state="PENDING")),
    (2, dict(state="RUNNING", node="c1", sacct_json={"State": "RUNNING"})),
    (3, dict(reason="not in sacct yet")),                  # a reason alone: the run's too
    (4, dict(state="PENDING", reason="Priority", node=None)),
    (5, dict(state="COMPLETED", exit_code=0)),             # the older attempt of run r0000
]


def test_update_attempts_writes_what_update_attempt_writes(tmp_path):
    leds, ids = [Ledger(tmp_path / name / "ledger.db") for name in ("one", "many")], []
    for led in leds:
        make_exp(led)
        _, first = submit_chunk(led, "demo-abcdef12", 0, "300")
        led.update_attempt(first[0], state="NODE_FAIL")
        led.update_attempt(first[3], reason="Priority")
        _, second = submit_chunk(led, "demo-abcdef12", 0, "301", spec="0")   # r0000 again
        ids.append([second[0], *first[1:], first[0]])
    (one, many), (one_ids, many_ids) = leds, ids
    for i, fields in _UPDATES:
        one.update_attempt(one_ids[i], **fields)
    states = {a["attempt_id"]: a["state"] for a in many.attempts("demo-abcdef12")}
    todo = [(many_ids[i], states[many_ids[i]], f.get("reason"),
             {k: v for k, v in f.items() if k != "reason"}) for i, f in _UPDATES]
    assert many.update_attempts(todo) == [many_ids[i] for i, _ in _UPDATES]
    assert _ledger_tables(many) == _ledger_tables(one)
    runs = {r["run_id"]: (r["state"], r["reason"]) for r in many.runs("demo-abcdef12")}
    # The late COMPLETED of r0000's first attempt does not move the run its retry carries.
    assert runs["r0000"] == ("PENDING", "Priority")
    assert runs["r0003"] == ("SUBMITTED", "not in sacct yet")
    for led in leds:
        led.close()


def test_update_attempts_skips_an_attempt_another_writer_moved(ledger):
    make_exp(ledger)
    _, ids = submit_chunk(ledger, "demo-abcdef12", 0, "310")
    ledger.update_attempt(ids[1], state="CANCELLED", reason="slurmexp cancel")   # meanwhile
    before = ledger.events("demo-abcdef12")
    applied = ledger.update_attempts([(aid, "SUBMITTED", None, {"state": "PENDING"})
                                      for aid in ids[:3]])
    assert applied == [ids[0], ids[2]]
    got = {a["attempt_id"]: a["state"] for a in ledger.attempts("demo-abcdef12")}
    assert [got[a] for a in ids[:3]] == ["PENDING", "CANCELLED", "PENDING"]
    new = ledger.events("demo-abcdef12")[len(before):]
    assert [(e["attempt_id"], e["to_state"]) for e in new] == [(ids[0], "PENDING"),
                                                               (ids[2], "PENDING")]


def test_update_attempts_refuses_submit_time_and_unknown_columns(ledger):
    make_exp(ledger)
    _, ids = submit_chunk(ledger, "demo-abcdef12", 0, "320")
    with pytest.raises(TypeError, match="submit_time"):
        ledger.update_attempts([(ids[0], "SUBMITTED", None, {"submit_time": "2024-01-01T00:00:00"})])
    with pytest.raises(TypeError, match="colour"):
        ledger.update_attempts([(ids[0], "SUBMITTED", None, {"colour": "red"})])
    assert {a["state"] for a in ledger.attempts("demo-abcdef12")} == {"SUBMITTED"}


def test_late_news_about_old_attempt_does_not_move_run(ledger):
    make_exp(ledger)
    _, first = submit_chunk(ledger, "demo-abcdef12", 0, "400", spec="0")
    ledger.update_attempt(first[0], state="NODE_FAIL")
    _, second = submit_chunk(ledger, "demo-abcdef12", 0, "401", spec="0")
    assert ledger.attempts(run_id="r0000")[-1]["attempt_no"] == 2
    ledger.update_attempt(second[0], state="RUNNING")
    ledger.update_attempt(first[0], state="FAILED", reason="late sacct")
    assert ledger.runs("demo-abcdef12")[0]["state"] == "RUNNING"
    assert ledger.runs("demo-abcdef12")[0]["n_attempts"] == 2
    assert [a["attempt_id"] for a in ledger.attempts("demo-abcdef12", active_only=True)] == second


def test_retry_via_assign_chunk_and_set_run_state(ledger):
    make_exp(ledger)
    _, ids = submit_chunk(ledger, "demo-abcdef12", 0, "500")
    ledger.update_attempt(ids[1], state="TIMEOUT")
    ledger.update_attempt(ids[3], state="OUT_OF_MEMORY")
    assert ledger.set_run_state("demo-abcdef12", ["r0001", "r0003"], "PLANNED", "retry") == 2
    ledger.assign_chunk("demo-abcdef12", 2, ["r0001", "r0003"])
    _, new = submit_chunk(ledger, "demo-abcdef12", 2, "501", spec="0-1")
    atts = ledger.attempts(sub_id=ledger.submissions("demo-abcdef12")[-1]["sub_id"])
    assert [(a["run_id"], a["job_key"], a["attempt_no"]) for a in atts] == [
        ("r0001", "501_0", 2), ("r0003", "501_1", 2)]


def test_heartbeat(ledger):
    assert ledger.last_heartbeat() is None
    ledger.record_heartbeat("reconcile", True, {"updated": 3})
    ledger.record_heartbeat("reconcile", False, {"error": "sacct down"})
    hb = ledger.last_heartbeat("reconcile")
    assert hb["ok"] == 0 and "sacct down" in hb["summary_json"]


# --- concurrency and scale ----------------------------------------------------------------

def _worker(path: str, worker: int, attempt_ids: list[int]) -> None:
    led = Ledger(path)
    for aid in attempt_ids:
        led.update_attempt(aid, state="RUNNING", node=f"n{worker}")
        led.record_intent("demo-abcdef12", 100 + worker, "0", 1, "/x.sh", "h", "mini")
        led.update_attempt(aid, state="COMPLETED", exit_code="0:0")
        led.record_heartbeat("reconcile", True, {"worker": worker})
    led.close()


@pytest.mark.parametrize("mode", ["WAL", "DELETE"])
def test_four_processes_lose_nothing(tmp_path, monkeypatch, mode):
    monkeypatch.setenv("SLURMEXP_JOURNAL_MODE", mode)
    led = Ledger(tmp_path / "ledger.db")
    make_exp(led, n=100, chunk_size=100)
    _, ids = submit_chunk(led, "demo-abcdef12", 0, "900", spec="0-99")
    # spawn: a forked child would inherit SQLite's per-process lock bookkeeping.
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(str(led.path), w, ids[w::4])) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert led.counts_by_state("demo-abcdef12") == {"COMPLETED": 100}
    assert len(led.submissions("demo-abcdef12")) == 1 + 100
    assert len(led.db.execute("SELECT id FROM heartbeats").fetchall()) == 100
    kinds = [e["kind"] for e in led.events("demo-abcdef12")]
    assert kinds.count("state") == 200 and kinds.count("intent") == 101
    led.close()


def test_hundred_thousand_runs(ledger):
    runs = make_runs(100_000, 1000)
    ledger.create_experiment("big-00000000", "big", "fpbig", "mini", "slurm", "/exp", "/s", "/s2",
                             "/site", "sh", "th", {}, runs)
    assert ledger.counts_by_state("big-00000000") == {"PLANNED": 100_000}
    _, ids = submit_chunk(ledger, "big-00000000", 7, "42", spec="0-999")
    assert len(ids) == 1000
