"""Liveness without a cluster: the task wrapper's heartbeat loop (the rendered script run by bash,
as the local backend runs it), what `reconcile.liveness` makes of an attempt's files, and whole
passes against the fake backend of test_reconcile: STALLED shown, left, and with
stall_action = "requeue" cancelled and retried as an infrastructure failure."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from test_reconcile import EXP, FakeBackend, make_exp, qrow, row, snapshot, states, submit

from slurmexp import layout
from slurmexp.errors import SlurmUnavailable
from slurmexp.launch.experiment_files import write_manifest, write_script
from slurmexp.launch.render import ScriptContext, render_script
from slurmexp.ledger import Ledger
from slurmexp.reconcile import liveness
from slurmexp.reconcile import one_pass as rc
from slurmexp.settings import (
    ExperimentSettings,
    GroupSettings,
    LivenessSettings,
    RetrySettings,
)
from slurmexp.sweep.plan import ArrayChunk, Resources, Run
from slurmexp.sweep.spec import CheckpointSpec, parse_sweep
from slurmexp.timeutil import parse_ts
from slurmexp.units import format_interval, parse_interval_s

RUN = "r0000000001"


# --- the wrapper ---------------------------------------------------------------------------

def wrapper(tmp_path: Path, command: str, checkpoint: bool = False) -> Path:
    exp, work = tmp_path / "exp", tmp_path / "work"
    work.mkdir()
    runs = [Run(run_id=RUN, index=0, params={})]
    chunk = ArrayChunk(chunk=0, group=0, resources=Resources("cpu", 10, cpus=1), runs=runs, offset=0)
    ctx = ScriptContext(experiment_id="lv-1", chunk=chunk, exp_dir=exp, workdir=work,
                        manifest_path=write_manifest(exp, chunk, {runs[0].run_id: command}), runs_dir=exp / "runs",
                        job_name="sx.lv-1.000", comment="slurmexp:lv-1", cluster="x", heartbeat_s=1,
                        checkpoint=CheckpointSpec() if checkpoint else None)
    return write_script(exp, 0, render_script(ctx))


def start(script: Path) -> subprocess.Popen:
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_JOB_ID": "77"}
    # Its own session: every process the script starts can be found by session id afterwards.
    return subprocess.Popen(["bash", str(script)], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def in_session(sid: int) -> dict[int, str]:
    found = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[3]) == sid and stat[0] != "Z":
                found[int(d)] = Path(f"/proc/{d}/cmdline").read_text().replace("\0", " ").strip()
        except (OSError, IndexError, ValueError):
            continue
    return found


def beats(folder: Path, seconds: float) -> set[str]:
    seen, deadline = set(), time.monotonic() + seconds
    while time.monotonic() < deadline:
        text = layout.time_written(folder, layout.HEARTBEAT)
        if text:
            seen.add(text)
        time.sleep(0.2)
    return seen


def attempt_folder(script: Path) -> Path:
    return script.parent.parent / "runs" / RUN / "attempts" / "77_0"


@pytest.mark.parametrize("checkpoint", [False, True], ids=["plain", "checkpoint"])
def test_heartbeat_while_the_command_runs_and_no_process_left(tmp_path, checkpoint):
    script = wrapper(tmp_path, "sleep 4; echo done", checkpoint)
    proc = start(script)
    seen = beats(attempt_folder(script), 3.5)
    assert proc.wait(timeout=20) == 0
    assert len(seen) >= 3, seen                        # one a second, replaced each time
    assert not in_session(proc.pid), in_session(proc.pid)
    folder = attempt_folder(script)
    assert (folder / "stdout").read_text() == "done\n"
    assert not (folder / f"{layout.HEARTBEAT}.tmp").exists()
    last = parse_ts(layout.time_written(folder, layout.HEARTBEAT))
    assert abs((datetime.now(timezone.utc) - last).total_seconds()) < 5


def test_a_lost_term_to_the_heartbeat_loop_never_hangs_the_script(tmp_path):
    """The loop can miss the TERM that stops it (sent in the instant after it forked, before
    its trap is set): the script must still end, not wait for ever on a loop that waits for
    it. Simulated: a `kill` that drops the first plain TERM it is asked to send."""
    script = wrapper(tmp_path, "sleep 1.5; echo done")
    shim = tmp_path / "lose-first-term.sh"
    shim.write_text(
        'kill() {\n'
        '    if [[ $# -eq 1 && ! -e "$SX_LOST" ]]; then : > "$SX_LOST"; return 0; fi\n'
        '    builtin kill "$@"\n'
        '}\n')
    lost = tmp_path / "lost"
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_JOB_ID": "77", "BASH_ENV": str(shim),
           "SX_LOST": str(lost)}
    proc = subprocess.Popen(["bash", str(script)], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert proc.wait(timeout=20) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert lost.exists()                                       # the first TERM was dropped
    assert (attempt_folder(script) / "stdout").read_text() == "done\n"
    assert not in_session(proc.pid), in_session(proc.pid)


def test_heartbeat_ends_with_the_wrapper_killed_alone(tmp_path):
    """SIGKILL to the script alone (no trap runs): the loop sees it gone and ends within a beat;
    what is left is the command, which Slurm's end of the job takes."""
    script = wrapper(tmp_path, "sleep 30")
    proc = start(script)
    folder = attempt_folder(script)
    assert beats(folder, 2.0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    time.sleep(2.5)
    left = in_session(proc.pid)
    try:
        assert sorted(left.values()) == sorted([f"bash {folder.parent.parent / 'command.sh'}", "sleep 30"]), left
        before = layout.time_written(folder, layout.HEARTBEAT)
        time.sleep(1.5)
        assert layout.time_written(folder, layout.HEARTBEAT) == before
    finally:
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_term_to_the_job_ends_the_heartbeat_too(tmp_path):
    """As Slurm's scancel (and the local backend's cancel) do: SIGTERM to every process."""
    script = wrapper(tmp_path, "sleep 30")
    proc = start(script)
    assert beats(attempt_folder(script), 2.0)
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=10) == 143
    time.sleep(0.5)
    assert not in_session(proc.pid), in_session(proc.pid)
    assert (attempt_folder(script) / layout.ENDED).exists()


# --- judging an attempt's files ------------------------------------------------------------

def iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


T0 = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)


def test_judge():
    beat = LivenessSettings(heartbeat_s=30)
    fresh = liveness.Signs(started=iso(T0), heartbeat=iso(T0 + timedelta(minutes=59)))
    assert liveness.judge(beat, fresh, T0 + timedelta(hours=1)) is None
    stale = liveness.Signs(started=iso(T0), heartbeat=iso(T0))
    assert liveness.judge(beat, stale, T0 + timedelta(seconds=300)) is None     # 10 beats
    got = liveness.judge(beat, stale, T0 + timedelta(seconds=301))
    assert got.reason == ("no heartbeat since 2026-12-02T12:00:00Z: the job may be hung or its "
                          "node lost") and not got.requeue
    # Not judged: no settings (launched before liveness), ended, not started, no heartbeat file.
    assert liveness.judge(None, stale, T0 + timedelta(hours=1)) is None
    ended = liveness.Signs(started=iso(T0), heartbeat=iso(T0), ended=iso(T0))
    assert liveness.judge(beat, ended, T0 + timedelta(hours=1)) is None
    assert liveness.judge(beat, liveness.Signs(heartbeat=iso(T0)), T0 + timedelta(hours=1)) is None
    assert liveness.judge(beat, liveness.Signs(started=iso(T0)), T0 + timedelta(hours=1)) is None
    # stall_after: the newest of started and the output files' changes.
    quiet = LivenessSettings(heartbeat_s=30, stall_after_s=1800, stall_action="requeue")
    alive = iso(T0 + timedelta(minutes=40))
    signs = liveness.Signs(started=iso(T0), heartbeat=alive)
    assert liveness.judge(quiet, signs, T0 + timedelta(minutes=29)) is None
    got = liveness.judge(quiet, signs, T0 + timedelta(minutes=40))
    assert got.requeue and got.reason.startswith("no output since 2026-12-02T12:00:00Z: stdout, "
                                                 "stderr and metrics unchanged for 30m")
    printed = liveness.Signs(started=iso(T0), heartbeat=alive,
                             last_output=(T0 + timedelta(minutes=20)).timestamp())
    assert liveness.judge(quiet, printed, T0 + timedelta(minutes=40)) is None
    later = liveness.Signs(started=iso(T0), heartbeat=iso(T0 + timedelta(minutes=50)),
                           last_output=(T0 + timedelta(minutes=20)).timestamp())
    assert "no output since 2026-12-02T12:20:00Z" in liveness.judge(quiet, later, T0 + timedelta(minutes=50)).reason


def test_signs_read_the_attempt_and_run_files(tmp_path):
    run_dir = tmp_path / "runs" / RUN
    folder = run_dir / "attempts" / "5_0"
    folder.mkdir(parents=True)
    assert liveness.Signs.read(folder, run_dir) == liveness.Signs()
    (folder / "started").write_text(iso(T0) + "\n")
    (folder / "heartbeat").write_text(iso(T0) + "\n")
    for name, when in (("stdout", 100), ("stderr", 200)):
        (folder / name).write_text("x")
        os.utime(folder / name, (when, when))
    assert liveness.Signs.read(folder, run_dir) == liveness.Signs(iso(T0), None, iso(T0), 200)
    (run_dir / "metrics.jsonl").write_text("{}\n")
    os.utime(run_dir / "metrics.jsonl", (300, 300))
    assert liveness.Signs.read(folder, run_dir).last_output == 300
    assert liveness.Signs.read(None, None) == liveness.Signs()


# --- the sweep table and the settings -------------------------------------------------------

def test_liveness_table(tmp_path):
    base = 'name = "x"\ncommand = "true"\n'
    plain = parse_sweep(base, tmp_path / "sweep.toml")
    assert plain.liveness is None and "liveness" not in plain.canonical()   # identity kept
    assert plain.live.heartbeat_s == 30 and plain.live.stall_after_s is None
    s = parse_sweep(base + '[liveness]\nheartbeat = "10s"\nstall_after = "30m"\nstall_action = "requeue"\n',
                    tmp_path / "sweep.toml")
    assert (s.live.heartbeat_s, s.live.stall_after_s, s.live.stall_action) == (10, 1800, "requeue")
    with pytest.raises(Exception) as err:
        parse_sweep(base + '[liveness]\nstall_after = "30"\nstall_action = "kill"\nstal = 1\n',
                    tmp_path / "sweep.toml")
    text = err.value.format()
    assert "[liveness.stall_after] bad interval '30'" in text and 'stall_after = "30s"' in text
    assert "[liveness.stall_action] 'kill' is not a stall action; one of flag, requeue" in text
    assert "unknown key 'stal'" in text
    assert [parse_interval_s(v) for v in ("20s", "30m", "30min", "2h")] == [20, 1800, 1800, 7200]
    assert [format_interval(v) for v in (20, 1800, 5400, 7200)] == ["20s", "30m", "1h30m", "2h"]
    for bad in ("0s", "30", "1d", 30):
        with pytest.raises(ValueError):
            parse_interval_s(bad)


def test_explain_says_the_table(tmp_path):
    from slurmexp.sweep.plan import describe_tables
    base = 'name = "x"\ncommand = "true"\n'
    assert describe_tables(parse_sweep(base, tmp_path / "sweep.toml")) == []
    (text,) = describe_tables(parse_sweep(base + '[liveness]\nheartbeat = "1m"\nstall_after = "2h"\n'
                                          'stall_action = "requeue"\n[retry]\nmax_attempts = 4\n',
                                          tmp_path / "sweep.toml"))
    assert text.splitlines() == [
        "liveness: the task script writes a heartbeat every 1m; a RUNNING run whose heartbeat is "
        "10m old is STALLED",
        "  stall_after: also STALLED when its stdout, stderr and metrics have not changed for 2h",
        '  stall_action = "requeue": a STALLED job is cancelled and retried (infrastructure), up to '
        "4 attempts"]


def test_settings_keep_liveness():
    s = ExperimentSettings(liveness=LivenessSettings(5, 20, "requeue"))
    assert ExperimentSettings.from_json(s.to_json()) == s
    assert ExperimentSettings.from_json('{"version": 2, "groups": []}').liveness is None


def test_rendered_script_beats_at_the_sweeps_interval(tmp_path):
    script = wrapper(tmp_path, "true").read_text()
    assert "sleep 1 & slurmexp_sleep=$!" in script and f'/{layout.HEARTBEAT}"' in script


# --- passes ----------------------------------------------------------------------------------

@pytest.fixture
def ledger(tmp_path):
    led = Ledger(tmp_path / "home" / "ledger.db")
    yield led
    led.close()


def settings(stall_after_s=None, action="flag", max_attempts=3, live=True, remote=None):
    return ExperimentSettings(
        RetrySettings(max_attempts=max_attempts, backoff_s=0),
        (GroupSettings(chunks=(0,), partition="cpu", time_min=10, mem_mb=500, throttle=2),),
        remote=remote, liveness=LivenessSettings(30, stall_after_s, action) if live else None)


def running(ledger, tmp_path, t0, **kw):
    """One run, RUNNING since t0 (a first pass saw it), its task started at t0."""
    scripts = make_exp(ledger, tmp_path, n=1, settings=settings(**kw))
    submit(ledger, scripts, "100", submit_time=t0, spec="0")
    fake = FakeBackend()
    fake.rows = [row("100_0", "RUNNING", t0)]
    fake.queued = [qrow("100_0", "RUNNING", t0)]
    folder = tmp_path / EXP / "runs" / "r000" / "attempts" / "100_0"
    folder.mkdir(parents=True)
    (folder / "started").write_text(iso(t0) + "\n")
    (folder / "heartbeat").write_text(iso(t0) + "\n")
    assert rc.reconcile_pass(ledger, fake, now=t0 + timedelta(hours=2), grace_s=60).ok
    assert states(ledger) == {"r000": "RUNNING"}     # first seen RUNNING: never judged
    return fake, folder


@pytest.fixture
def t0():
    return datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=3)


def test_stale_heartbeat_is_stalled_then_running_again(ledger, tmp_path, t0):
    fake, folder = running(ledger, tmp_path, t0)
    (folder / "heartbeat").write_text(iso(t0 + timedelta(minutes=10)) + "\n")
    s = rc.reconcile_pass(ledger, fake, now=t0 + timedelta(minutes=15, seconds=1), grace_s=60)
    assert s.ok and states(ledger) == {"r000": "STALLED"} and s.moved == {"STALLED": 1}
    (a,) = ledger.attempts(EXP)
    assert a["state"] == "STALLED" and a["reason"] == (
        f"no heartbeat since {iso(t0 + timedelta(minutes=10))}: the job may be hung or its node lost")
    assert ledger.runs(EXP)[0]["reason"] == a["reason"]
    assert any("STALLED" in f for f in s.flagged) and fake.cancelled == []
    # The same again: nothing changes (no event per pass).
    events = len(ledger.events(EXP))
    rc.reconcile_pass(ledger, fake, now=t0 + timedelta(minutes=16), grace_s=60)
    assert len(ledger.events(EXP)) == events
    # A beat again: RUNNING.
    (folder / "heartbeat").write_text(iso(t0 + timedelta(minutes=17)) + "\n")
    rc.reconcile_pass(ledger, fake, now=t0 + timedelta(minutes=17), grace_s=60)
    assert states(ledger) == {"r000": "RUNNING"} and ledger.attempts(EXP)[0]["reason"] is None
    # A final record ends a STALLED attempt as any other.
    (folder / "heartbeat").write_text(iso(t0) + "\n")
    rc.reconcile_pass(ledger, fake, now=t0 + timedelta(minutes=30), grace_s=60)
    assert states(ledger) == {"r000": "STALLED"}
    fake.rows, fake.queued = [row("100_0", "COMPLETED", t0, end=t0 + timedelta(minutes=31))], []
    rc.reconcile_pass(ledger, fake, now=t0 + timedelta(minutes=32), grace_s=60)
    assert states(ledger) == {"r000": "COMPLETED"}


def test_healthy_quiet_and_old_experiments_are_not_flagged(ledger, tmp_path, t0):
    fake, folder = running(ledger, tmp_path, t0, stall_after_s=1800)
    # Beating and printing: never STALLED, however long it runs.
    for minutes in (20, 40, 60, 100):
        now = t0 + timedelta(minutes=minutes)
        (folder / "heartbeat").write_text(iso(now) + "\n")
        (folder / "stdout").write_text(f"step {minutes}\n")
        os.utime(folder / "stdout", (now.timestamp(), now.timestamp()))
        assert rc.reconcile_pass(ledger, fake, now=now + timedelta(minutes=1), grace_s=60).ok
        assert states(ledger) == {"r000": "RUNNING"}
    # Beating but silent for stall_after: STALLED (flag: not cancelled).
    now = t0 + timedelta(minutes=131)
    (folder / "heartbeat").write_text(iso(now) + "\n")
    s = rc.reconcile_pass(ledger, fake, now=now, grace_s=60)
    assert states(ledger) == {"r000": "STALLED"} and fake.cancelled == []
    assert ledger.attempts(EXP)[0]["reason"].startswith(f"no output since {iso(t0 + timedelta(minutes=100))}")
    assert s.ok


def test_launched_before_liveness_is_never_judged(ledger, tmp_path, t0):
    fake, folder = running(ledger, tmp_path, t0, live=False)
    rc.reconcile_pass(ledger, fake, now=t0 + timedelta(hours=2), grace_s=60)
    assert states(ledger) == {"r000": "RUNNING"}


def test_over_ssh_the_clusters_output_time_is_judged(ledger, tmp_path, t0):
    """The mirror of a remote attempt has no stdout of its own: `output_changed`, which the
    pass writes from the ages the cluster measured, says when the output last changed."""
    from slurmexp.settings import RemoteSettings
    fake, folder = running(ledger, tmp_path, t0, stall_after_s=600, action="requeue",
                           remote=RemoteSettings(host="login", root="/r"))
    now = t0 + timedelta(hours=2)
    (folder / "heartbeat").write_text(iso(now) + "\n")
    (folder / layout.OUTPUT_CHANGED).write_text(f"{(now - timedelta(minutes=5)).timestamp():.0f}\n")
    rc.reconcile_pass(ledger, fake, now=now, grace_s=60)
    assert states(ledger) == {"r000": "RUNNING"} and fake.cancelled == []
    (folder / "heartbeat").write_text(iso(now + timedelta(minutes=6)) + "\n")    # still beating
    rc.reconcile_pass(ledger, fake, now=now + timedelta(minutes=6), grace_s=60)
    assert fake.cancelled == [["100_0"]]
    assert ledger.attempts(EXP)[0]["reason"].startswith("STALLED: no output since ")


def test_suspended_is_not_judged_nor_the_first_pass_after(ledger, tmp_path, t0):
    fake, folder = running(ledger, tmp_path, t0)
    fake.rows = [row("100_0", "SUSPENDED", t0)]
    rc.reconcile_pass(ledger, fake, now=t0 + timedelta(hours=2), grace_s=60)
    assert states(ledger) == {"r000": "SUSPENDED"}
    fake.rows = [row("100_0", "RUNNING", t0)]
    rc.reconcile_pass(ledger, fake, now=t0 + timedelta(hours=2, seconds=5), grace_s=60)
    assert states(ledger) == {"r000": "RUNNING"}


def test_requeue_cancels_and_retries_within_max_attempts(ledger, tmp_path, t0):
    fake, folder = running(ledger, tmp_path, t0, stall_after_s=600, action="requeue", max_attempts=2)
    (folder / "heartbeat").write_text(iso(t0 + timedelta(hours=2)) + "\n")    # alive, but silent
    # dry run: says so, changes nothing, cancels nothing
    before = snapshot(ledger)
    s = rc.reconcile_pass(ledger, fake, now=t0 + timedelta(hours=2), grace_s=60, dry_run=True)
    assert snapshot(ledger) == before and fake.cancelled == []
    assert any("would cancel it and retry" in x for x in s.actions), s.actions
    # scancel does not answer: STALLED, tried again next pass
    fake.unavailable = {"scancel"}
    s = rc.reconcile_pass(ledger, fake, now=t0 + timedelta(hours=2), grace_s=60)
    assert states(ledger) == {"r000": "STALLED"} and "could not cancel it" in ledger.attempts(EXP)[0]["reason"]
    fake.unavailable = set()
    s = rc.reconcile_pass(ledger, fake, now=t0 + timedelta(hours=2, seconds=5), grace_s=60)
    assert fake.cancelled == [["100_0"]]
    first = ledger.attempts(EXP)[0]
    assert first["state"] == "CANCELLED" and first["failure_class"] == "infrastructure"
    assert first["reason"].startswith("STALLED: no output since ") and "stall_action" in first["reason"]
    # retried (backoff 0, counted from when the attempt was recorded): a new job
    assert s.retries_scheduled == 1 and states(ledger) == {"r000": "PLANNED"}
    later = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=2)
    s = rc.reconcile_pass(ledger, fake, now=later, grace_s=60)
    assert s.retries_submitted == 1 and len(fake.submitted) == 1
    assert states(ledger) == {"r000": "SUBMITTED"}
    # The retry stalls too: cancelled, and no retries left.
    job = fake.submitted[0]["job"]
    fake.rows = [row(f"{job}_0", "RUNNING", fake.submitted[0]["submit"])]
    fake.queued = [qrow(f"{job}_0", "RUNNING", fake.submitted[0]["submit"])]
    folder2 = folder.parent / f"{job}_0"
    folder2.mkdir()
    (folder2 / "started").write_text(iso(later) + "\n")
    (folder2 / "heartbeat").write_text(iso(later + timedelta(minutes=11)) + "\n")
    rc.reconcile_pass(ledger, fake, now=later, grace_s=60)
    assert states(ledger) == {"r000": "RUNNING"}
    rc.reconcile_pass(ledger, fake, now=later + timedelta(minutes=11), grace_s=60)
    assert fake.cancelled[-1] == [f"{job}_0"]
    second = ledger.attempts(EXP)[-1]
    assert second["state"] == "CANCELLED" and "no retries left (2 of 2 attempts)" in second["reason"]
    assert states(ledger) == {"r000": "CANCELLED"} and len(fake.submitted) == 1
    # The CANCELLED record sacct then has fills in the columns; class and reason stay.
    fake.rows = [row(f"{job}_0", "CANCELLED by 0", fake.submitted[0]["submit"], end=later + timedelta(minutes=11))]
    fake.queued = []
    rc.reconcile_pass(ledger, fake, now=later + timedelta(minutes=12), grace_s=60)
    second = ledger.attempts(EXP)[-1]
    assert second["end_time"] and second["failure_class"] == "infrastructure"
    assert ledger.get_experiment(EXP)["state"] == "FINISHED_WITH_FAILURES"


def test_scancel_error_is_reported_not_raised(ledger, tmp_path, t0):
    fake, folder = running(ledger, tmp_path, t0, stall_after_s=600, action="requeue")

    def refuse(job_ids, timeout=60):
        raise SlurmUnavailable("scancel: Unable to contact slurm controller")
    fake.cancel = refuse
    s = rc.reconcile_pass(ledger, fake, now=t0 + timedelta(hours=2), grace_s=60)
    assert s.ok and states(ledger) == {"r000": "STALLED"}
    assert any("scancel failed" in f for f in s.flagged)


if __name__ == "__main__":      # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
