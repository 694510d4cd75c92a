"""log_metrics: history in metrics.jsonl, latest values in metrics.json, safe to call concurrently."""
from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest

from slurmexp import metrics
from slurmexp.metrics import log_metrics


def read_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_lines_are_appended_and_latest_values_kept(tmp_path):
    log_metrics(step=1, run_dir=tmp_path, loss=1.5, acc=0.1)
    log_metrics(step=2, run_dir=tmp_path, loss=0.5)
    record = log_metrics(run_dir=tmp_path, test_acc=0.9)

    lines = read_lines(tmp_path / "metrics.jsonl")
    assert [{k: v for k, v in ln.items() if k != "time"} for ln in lines] == [
        {"step": 1, "loss": 1.5, "acc": 0.1},
        {"step": 2, "loss": 0.5},
        {"test_acc": 0.9},
    ]
    assert all(isinstance(ln["time"], float) for ln in lines)
    assert lines[0]["time"] <= lines[1]["time"] <= lines[2]["time"]
    assert record["test_acc"] == 0.9
    assert json.loads((tmp_path / "metrics.json").read_text()) == {
        "loss": 0.5, "acc": 0.1, "test_acc": 0.9}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".metrics")]


def test_run_dir_comes_from_the_task_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURMEXP_RUN_DIR", str(tmp_path / "run"))
    log_metrics(loss=2.0)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == {"loss": 2.0}


def test_outside_slurmexp_it_warns_once_and_records_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURMEXP_RUN_DIR", raising=False)
    monkeypatch.setattr(metrics, "_warned_no_run_dir", False)
    monkeypatch.chdir(tmp_path)
    with pytest.warns(RuntimeWarning, match="SLURMEXP_RUN_DIR"):
        assert log_metrics(loss=1.0) is None
    assert log_metrics(loss=1.0) is None
    assert list(tmp_path.iterdir()) == []


def test_reserved_names_and_empty_calls_are_refused(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        log_metrics(run_dir=tmp_path, time=3)
    with pytest.raises(ValueError):
        log_metrics(run_dir=tmp_path)


class FakeScalar:
    """Stands in for a numpy or torch scalar, which json cannot write by itself."""

    def __init__(self, value):
        self.value = value

    def item(self):
        return self.value


def test_scalars_and_non_finite_values_become_json(tmp_path):
    log_metrics(step=FakeScalar(7), run_dir=tmp_path, loss=FakeScalar(0.25),
                bad=float("nan"), big=float("inf"), hist=[1, FakeScalar(2)])
    [line] = read_lines(tmp_path / "metrics.jsonl")
    assert line["step"] == 7 and line["loss"] == 0.25 and line["hist"] == [1, 2]
    assert line["bad"] is None and line["big"] is None
    # Strict JSON: no NaN/Infinity tokens a non-Python reader would choke on.
    assert "NaN" not in (tmp_path / "metrics.jsonl").read_text()


def _log_many(run_dir: str, worker: int) -> None:
    for i in range(50):
        log_metrics(step=i, run_dir=run_dir, **{f"w{worker}": i, "shared": worker})


def test_concurrent_writers_lose_nothing(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_log_many, args=(str(tmp_path), w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = read_lines(tmp_path / "metrics.jsonl")
    assert len(lines) == 200
    latest = json.loads((tmp_path / "metrics.json").read_text())
    assert {latest[f"w{w}"] for w in range(4)} == {49}
    assert latest["shared"] in range(4)


def test_works_from_a_task_subprocess(tmp_path):
    # What a research program does inside a slurmexp task.
    env = dict(os.environ, SLURMEXP_RUN_DIR=str(tmp_path),
               PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                       os.environ.get("PYTHONPATH")])))
    code = "from slurmexp.metrics import log_metrics\nlog_metrics(step=0, loss=1.0)\n"
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"loss": 1.0}
