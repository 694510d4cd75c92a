"""The facts cache (backends.slurm.facts_cache): sacctmgr's QOS and associations reused for a
few minutes, never a refusal made on them, `--fresh` to skip it. The fake transport answers
with output captured from the bundled Slurm 22.05 cluster, so the parsers see real text."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from slurmexp.backends.slurm.backend import SlurmBackend
from slurmexp.launch.launcher import check, prepare
from slurmexp.transport.base import CommandResult

REPO = Path(__file__).resolve().parent.parent
CAPTURED = REPO / "tests" / "data" / "captured" / "22.05"
SITE = REPO / "site.toml"
FILES = {"config": "scontrol_config.txt", "partition": "scontrol_partition.txt",
         "node": "scontrol_node.txt", "reservation": "scontrol_reservation.txt"}


class CapturedTransport:
    """Answers each Slurm command with captured output; `qos` can be changed between calls."""

    name = "fake"

    def __init__(self):
        self.calls: list[list[str]] = []
        self.qos = (CAPTURED / "sacctmgr_qos.txt").read_text()
        self.sacctmgr_fails = False
        self.lock = threading.Lock()

    def run(self, argv, *, timeout, stdin=None, cwd=None, env=None) -> CommandResult:
        with self.lock:
            self.calls.append(list(argv))
        if argv[0] == "sacctmgr":
            if self.sacctmgr_fails:
                return CommandResult(tuple(argv), 1, "", "sacctmgr: error: Problem talking to the database")
            text = self.qos if "qos" in argv else (CAPTURED / "sacctmgr_assoc.txt").read_text()
            return CommandResult(tuple(argv), 0, text, "")
        if argv[0] == "sbatch":
            return CommandResult(tuple(argv), 0, "", (CAPTURED / "sbatch_test_only_ok.txt").read_text())
        if argv[0] == "squeue":                      # the user's queue by QOS: empty
            return CommandResult(tuple(argv), 0, "", "")
        what = next(w for w in FILES if w in argv)
        return CommandResult(tuple(argv), 0, (CAPTURED / FILES[what]).read_text(), "")

    def read_text(self, path):
        raise FileNotFoundError(path)

    def commands(self) -> list[str]:
        out = [c[0] for c in self.calls]
        self.calls.clear()
        return out


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURMEXP_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_qos_and_associations_are_reused_within_their_age_only(home):
    t = CapturedTransport()
    b = SlurmBackend(cluster="minicluster", user="root", transport=t)
    first = b.cluster_facts(max_age_s=300)
    assert sorted(t.commands()) == ["sacctmgr"] * 2 + ["scontrol"] * 4 + ["squeue"]
    assert first.cached_age_s is None and set(first.qos) == {"normal", "low", "high"}
    assert len(list((home / "cache").glob("facts-*.json"))) == 1

    again = b.cluster_facts(max_age_s=300)
    assert sorted(t.commands()) == ["scontrol"] * 4 + ["squeue"]   # no slurmdbd round trip
    assert again.cached_age_s is not None and again.cached_age_s >= 0
    assert again.qos == first.qos and again.associations == first.associations
    assert again.partitions == first.partitions                # scontrol is always asked

    # The default (site discover, tests) and max_age_s=0 (--fresh) always ask sacctmgr.
    assert b.cluster_facts().cached_age_s is None
    assert sorted(t.commands()) == ["sacctmgr"] * 2 + ["scontrol"] * 4 + ["squeue"]
    assert b.cluster_facts(max_age_s=0).cached_age_s is None
    assert t.commands().count("sacctmgr") == 2

    # Older than its age: asked again.
    [path] = (home / "cache").glob("facts-*.json")
    data = json.loads(path.read_text())
    data["written"] -= 301
    path.write_text(json.dumps(data))
    assert b.cluster_facts(max_age_s=300).cached_age_s is None
    assert t.commands().count("sacctmgr") == 2

    # Another user's associations are another entry.
    other = SlurmBackend(cluster="minicluster", user="ann", transport=t)
    assert other.cluster_facts(max_age_s=300).cached_age_s is None


def test_a_failed_sacctmgr_is_skipped_and_never_cached(home):
    t = CapturedTransport()
    t.sacctmgr_fails = True
    b = SlurmBackend(cluster="minicluster", user="root", transport=t)
    facts = b.cluster_facts(max_age_s=300)
    assert facts.qos is None and facts.associations is None and facts.partitions
    assert [s.split(":")[0] for s in facts.skipped] == ["qos", "associations"]
    assert not list(home.glob("cache/facts-*.json"))
    t.sacctmgr_fails = False
    t.commands()
    assert b.cluster_facts(max_age_s=300).cached_age_s is None
    assert t.commands().count("sacctmgr") == 2


def _sweep(tmp_path: Path) -> Path:
    (tmp_path / "train.py").write_text("print('hi')\n")
    path = tmp_path / "sweep.toml"
    path.write_text('name = "t"\ncommand = "python3 train.py --lr {lr}"\n[params]\nlr = [0.1, 0.01]\n'
                    '[resources]\nqos = "high"\ntime = "01:00:00"\n')
    return path


def test_a_refusal_is_never_made_on_cached_facts(home, tmp_path):
    t = CapturedTransport()
    b = SlurmBackend(cluster="minicluster", user="root", transport=t)
    prep = prepare(_sweep(tmp_path), SITE)
    # The cache was filled while QOS "high" did not exist yet; then an admin added it.
    without_high = "".join(line for line in t.qos.splitlines(True) if not line.startswith("high|"))
    t.qos, full = without_high, t.qos
    assert b.cluster_facts(max_age_s=300).qos.keys() == {"normal", "low"}
    t.qos = full
    t.commands()

    report = check(prep, b)
    assert report.ok, report.format()
    assert t.commands().count("sacctmgr") == 2                # the cached refusal was checked again
    assert "live cluster" in report.checked and "sbatch --test-only" in report.checked

    # Now the cache holds the fresh facts: the next check uses them and says how old they are.
    report = check(prep, b)
    assert report.ok and t.commands().count("sacctmgr") == 0
    assert any("s ago; --fresh asks again" in c for c in report.checked), report.checked

    # fresh=True (--fresh) asks again although the cache is young.
    report = check(prep, b, fresh=True)
    assert report.ok and t.commands().count("sacctmgr") == 2 and "live cluster" in report.checked


def test_a_refusal_on_fresh_facts_stands(home, tmp_path):
    t = CapturedTransport()
    t.qos = "".join(line for line in t.qos.splitlines(True) if not line.startswith("high|"))
    b = SlurmBackend(cluster="minicluster", user="root", transport=t)
    prep = prepare(_sweep(tmp_path), SITE)
    b.cluster_facts(max_age_s=300)
    t.commands()
    report = check(prep, b)
    assert not report.ok and "QOS 'high' does not exist" in report.format()
    assert t.commands().count("sacctmgr") == 2                # refused on facts read just now
