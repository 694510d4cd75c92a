"""`slurmexp show` / `slurmexp logs`: naming a run, its story, where its logs are, following."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from test_report import EXP, build_ledger

from slurmexp.errors import SlurmexpError
from slurmexp.layout import attempt_dir
from slurmexp.report.show import (
    ended_marker,
    follow,
    format_run,
    log_path,
    resolve_run,
    show_run,
)


@pytest.fixture
def ledger(tmp_path):
    led = build_ledger(tmp_path)
    yield led
    led.close()


def run_dir(tmp_path: Path, rid: str) -> Path:
    return tmp_path / "exp" / "runs" / rid


def add_twin_experiment(led, tmp_path) -> str:
    """A second experiment with the same parameters, hence the same run ids."""
    led.create_experiment(
        exp_id="other-12345678", name="other", fingerprint="fp2", cluster="mini",
        backend="local", exp_dir=tmp_path / "other", sweep_path=None, sweep_copy_path=None,
        site_path=None, site_hash=None, template_hash=None, provenance=None,
        runs=[dict(run_id="rA0", idx=0, params={"lr": 0.1, "seed": 0},
                   run_dir=tmp_path / "other" / "runs" / "rA0")])
    return "other-12345678"


# --- naming a run -------------------------------------------------------------------------

def test_run_by_id_prefix_and_qualified(ledger):
    assert resolve_run(ledger, "rA1")["run_id"] == "rA1"
    assert resolve_run(ledger, "rB1")["params"] == {"lr": 0.01, "seed": 1}
    assert resolve_run(ledger, f"{EXP}:rA0")["run_id"] == "rA0"
    assert resolve_run(ledger, "demo:rB0")["exp_id"] == EXP       # experiment prefix


def test_ambiguous_and_unknown_runs_say_what_to_type(ledger, tmp_path):
    with pytest.raises(SlurmexpError, match="ambiguous") as e:
        resolve_run(ledger, "rB")
    assert f"{EXP}:rB0" in e.value.format() and f"{EXP}:rB1" in e.value.format()
    with pytest.raises(SlurmexpError, match="no run 'zz'"):
        resolve_run(ledger, "zz")
    with pytest.raises(SlurmexpError):
        resolve_run(ledger, "nope:rA0")
    other = add_twin_experiment(ledger, tmp_path)
    with pytest.raises(SlurmexpError, match="ambiguous") as e:
        resolve_run(ledger, "rA0")
    assert f"{other}:rA0" in e.value.format()
    assert resolve_run(ledger, f"{other}:rA0")["exp_id"] == other
    assert resolve_run(ledger, "other:rA")["exp_id"] == other


# --- show ---------------------------------------------------------------------------------

def test_show_lists_attempts_scripts_and_logs(ledger, tmp_path):
    folder = run_dir(tmp_path, "rB0") / "attempts" / "1002_0"
    folder.mkdir(parents=True)
    (folder / "host").write_text("gpu01\n")
    (folder / "exit_code").write_text("0\n")
    info = show_run(ledger, "rB0")
    assert info["ref"] == f"{EXP}:rB0" and info["state"] == "COMPLETED"
    assert info["params"] == {"lr": 0.01, "seed": 0}
    assert info["metrics"] == {"acc": 0.9, "loss": 0.3}
    assert info["command_path"] == str(run_dir(tmp_path, "rB0") / "command.sh")
    first, second = info["attempts"]
    assert (first["attempt_no"], first["job_key"], first["state"]) == (1, "1001_2", "NODE_FAIL")
    assert first["reason"] == "node gpu03 failed" and first["failure_class"] == "node_fail"
    assert first["script_path"].endswith("chunk-000.sbatch")
    assert second["script_path"].endswith("chunk-001.sbatch")
    assert second["stdout"] == str(folder / "stdout")
    assert second["slurm_stderr"] == str(tmp_path / "exp" / "logs" / "1002_0.err")
    assert second["files"] == {"host": "gpu01", "exit_code": "0"}
    assert second["elapsed_s"] == 3600 and second["alloc_tres"].startswith("billing=2")
    assert info["experiment"]["provenance"]["git"]["commit"] == "abc123"
    assert [e["to_state"] for e in info["events"]][-1] == "COMPLETED"

    text = format_run(info)
    for needle in ("run demo-abcdef12:rB0  COMPLETED", "lr", "0.01", "git.commit", "abc123",
                   "attempt 1  job 1001_2  NODE_FAIL (node gpu03 failed)",
                   "attempt 2  job 1002_0  COMPLETED", "chunk-001.sbatch", "file host",
                   str(folder / "stderr")):
        assert needle in text, needle


def test_show_a_run_never_submitted(ledger, tmp_path):
    add_twin_experiment(ledger, tmp_path)
    info = show_run(ledger, "other:rA0")
    assert info["attempts"] == [] and info["state"] == "PLANNED"
    assert "attempts  none yet" in format_run(info)
    # Its task writes command.sh when it starts: until then show says so, and not once it exists.
    assert f"{info['command_path']} (written when the run's task first starts)" in format_run(info)
    Path(info["command_path"]).parent.mkdir(parents=True, exist_ok=True)
    Path(info["command_path"]).write_text("#!/bin/bash\ntrue\n")
    assert "written when" not in format_run(show_run(ledger, "other:rA0")).split("params")[0]


# --- logs ---------------------------------------------------------------------------------

def test_log_path_prefers_the_attempt_folder(ledger, tmp_path):
    folder = run_dir(tmp_path, "rA1") / "attempts" / "1001_1"
    folder.mkdir(parents=True)
    (folder / "stdout").write_text("epoch 1\n")
    (folder / "stderr").write_text("Traceback\n")
    assert log_path(ledger, "rA1") == folder / "stdout"
    assert log_path(ledger, "rA1", stderr=True) == folder / "stderr"


def test_log_path_falls_back_to_slurms_log_and_picks_attempts(ledger, tmp_path):
    logs = tmp_path / "exp" / "logs"
    logs.mkdir(parents=True)
    (logs / "1001_2.err").write_text("module: command not found\n")
    with pytest.raises(SlurmexpError, match="no stderr") as e:
        log_path(ledger, "rB0", stderr=True)             # the newest attempt has nothing
    assert "1002_0.err" in e.value.format()
    assert log_path(ledger, "rB0", stderr=True, attempt=1) == logs / "1001_2.err"
    assert log_path(ledger, "rB0", must_exist=False) == (
        run_dir(tmp_path, "rB0") / "attempts" / "1002_0" / "stdout")   # where it will be
    with pytest.raises(SlurmexpError, match="no attempt 3"):
        log_path(ledger, "rB0", attempt=3)


def test_a_requeued_task_uses_its_newest_folder(tmp_path):
    base = tmp_path / "attempts"
    for name in ("77_3", "77_3.r1", "77_3.r2", "77_30"):
        (base / name).mkdir(parents=True)
    assert attempt_dir(tmp_path, "77_3") == base / "77_3.r2"
    assert attempt_dir(tmp_path, "77_3", restart=0) == base / "77_3"
    assert attempt_dir(tmp_path, "77_3", restart=1) == base / "77_3.r1"
    assert attempt_dir(tmp_path, "77_3", restart=5) == base / "77_3.r5"     # not there yet: where it will be
    assert attempt_dir(tmp_path, "77_30") == base / "77_30"
    assert attempt_dir(tmp_path, "99_0") == base / "99_0"      # not there yet: where it will be
    assert attempt_dir(None, "1") is None


def test_logs_of_an_unsubmitted_run(ledger, tmp_path):
    add_twin_experiment(ledger, tmp_path)
    with pytest.raises(SlurmexpError, match="has no attempts yet"):
        log_path(ledger, "other:rA0")


# --- follow -------------------------------------------------------------------------------

def test_follow_waits_for_the_file_and_stops_when_the_attempt_ends(tmp_path):
    log = tmp_path / "attempt" / "stdout"

    def task():
        time.sleep(0.1)
        log.parent.mkdir()
        with open(log, "w") as fh:
            for i in range(3):
                fh.write(f"step {i}\n")
                fh.flush()
                time.sleep(0.05)
            fh.write("héllo")      # no newline: still shown
        (log.parent / "ended").write_text("now\n")

    t = threading.Thread(target=task)
    t.start()
    text = "".join(follow(log, poll_s=0.02, stop=ended_marker(log)))
    t.join()
    assert text == "step 0\nstep 1\nstep 2\nhéllo"


def test_follow_rereads_a_truncated_or_replaced_file(tmp_path):
    log = tmp_path / "out"
    log.write_text("old line\n")
    stop = threading.Event()
    got: list[str] = []

    def reader():
        got.extend(follow(log, poll_s=0.02, stop=stop.is_set))

    t = threading.Thread(target=reader)
    t.start()
    time.sleep(0.15)
    log.write_text("new\n")                       # truncated and rewritten in place
    time.sleep(0.15)
    replacement = tmp_path / "out.tmp"
    replacement.write_text("replaced\n")
    os.replace(replacement, log)                  # a new file under the same name
    time.sleep(0.15)
    stop.set()
    t.join(5)
    assert "".join(got) == "old line\nnew\nreplaced\n"


def test_follow_from_the_end(tmp_path):
    log = tmp_path / "out"
    log.write_text("before\n")
    calls = iter([False, False, True])

    def stop():
        if next(calls, True) is True:
            return True
        with open(log, "a") as fh:
            fh.write("after\n")
        return False

    assert "".join(follow(log, poll_s=0.01, stop=stop, from_start=False)) == "after\nafter\n"


def test_following_slurms_own_log_ends_when_it_stops_growing(tmp_path):
    log = tmp_path / "logs" / "1001_2.err"
    log.parent.mkdir()
    log.write_text("module: command not found\n")
    started = time.monotonic()
    text = "".join(follow(log, poll_s=0.01, stop=ended_marker(log, idle_s=0.2)))
    assert text == "module: command not found\n"
    assert 0.2 <= time.monotonic() - started < 3


def test_prefixes_are_case_sensitive_and_literal(ledger):
    with pytest.raises(SlurmexpError):
        resolve_run(ledger, "RA0")
    with pytest.raises(SlurmexpError):
        resolve_run(ledger, "r_0")


def test_show_times_share_one_stated_convention_and_events_align(ledger, monkeypatch):
    # Ledger times are UTC with an offset and milliseconds, Slurm's are local and naive:
    # show prints both as this host's local time to the second, and says so once.
    import re
    monkeypatch.setenv("TZ", "Asia/Kolkata")          # UTC+05:30: a mix-up would show
    time.tzset()
    try:
        text = format_run(show_run(ledger, "rB0"))
        from slurmexp.timeutil import display_time
        assert display_time("2026-11-21T09:00:00.123+00:00") == "2026-11-21 14:30:00"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    lines = text.splitlines()
    assert lines[1] == "times  local, UTC+05:30 (IST)"
    assert "start_time    2026-11-21 14:44:00" in text        # Slurm's local time as it is
    assert len(re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", text)) == 12
    body = "\n".join(lines[2:])     # created, 2 x (submit, start, end), 5 events: no other form
    assert not re.search(r"\d{4}-\d\d-\d\dT|:\d\d\.\d{3}|[+-]\d\d:\d\d\b", body)
    events = lines[lines.index("events") + 1:]
    assert len(events) == 5
    arrows = {line.index("->") for line in events}
    assert len(arrows) == 1                                   # one column for every event
    assert {line.index("->") + 3 + len("SUBMITTED") + 2 for line in events if "job" in line} \
        == {line.index("job") for line in events if "job" in line}
