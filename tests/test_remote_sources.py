"""Source synchronisation to the real sshd in the Slurm 24.11 root (tests/remotelib.py): the
files git would keep arrive under root/src/<hash>/ on the node (not bound from the host), once."""
from __future__ import annotations

import subprocess
import tempfile
import uuid

import pytest

from slurmexp.transport.sources import COMPLETE, MANIFEST, source_files, sync_sources

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("no_local_slurm")]


def git(cwd, *args):
    subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True)


@pytest.fixture
def workdir(tmp_path):
    w = tmp_path / "proj"
    (w / "pkg").mkdir(parents=True)
    (w / "train.sh").write_text("#!/bin/bash\necho trained $1\n")
    (w / "train.sh").chmod(0o755)
    (w / "pkg" / "mod.py").write_text("X = 1\n")
    (w / ".gitignore").write_text("data/\n*.ckpt\n")
    (w / "data").mkdir()
    (w / "data" / "big.bin").write_bytes(b"0" * 1000)
    (w / "model.ckpt").write_text("weights")
    (w / "experiments").mkdir()
    (w / "experiments" / "old.txt").write_text("an earlier run's files")
    git(w, "init", "-q")
    git(w, "add", "train.sh", ".gitignore")
    git(w, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init")
    (w / "notes.md").write_text("untracked, not ignored\n")
    return w


def test_git_aware_file_list(workdir):
    assert source_files(workdir, exclude=[workdir / "experiments"]) == [
        ".gitignore", "notes.md", "pkg/mod.py", "train.sh"]


def test_sync_sends_once_and_runs_there(remote_node, workdir):
    cm = tempfile.mkdtemp(prefix="sxcm", dir="/tmp")
    t = remote_node.transport(control_dir=cm, root=f"{remote_node.remote_root}/sync-{uuid.uuid4().hex}")
    try:
        first = sync_sources(t, workdir, exclude=[workdir / "experiments"])
        assert first.sent and first.files == 4 and first.round_trips == 2
        on_node = remote_node.fs_root / str(first.remote_dir).lstrip("/")
        assert first.files_sent == 4
        assert sorted(p.relative_to(on_node).as_posix() for p in on_node.rglob("*") if p.is_file()) == [
            COMPLETE, ".gitignore", MANIFEST, "notes.md", "pkg/mod.py", "train.sh"]
        assert not workdir.is_relative_to(remote_node.fs_root)
        r = t.run(["./train.sh", "x"], timeout=30, cwd=first.remote_dir)
        assert r.stdout == "trained x\n"
        again = sync_sources(t, workdir, exclude=[workdir / "experiments"])
        assert (again.sent, again.hash, again.round_trips) == (False, first.hash, 1)
        (workdir / "pkg" / "mod.py").write_text("X = 2\n")
        changed = sync_sources(t, workdir, exclude=[workdir / "experiments"])
        assert changed.sent and changed.hash != first.hash
        # Incremental: only the changed file travelled; the others came from the first copy.
        assert (changed.files_sent, changed.round_trips) == (1, 2)
        assert t.read_text(changed.remote_dir / "pkg/mod.py") == "X = 2\n"
        assert t.read_text(first.remote_dir / "pkg/mod.py") == "X = 1\n"
        for rel in (".gitignore", "notes.md", "train.sh"):
            assert t.read_text(changed.remote_dir / rel) == (workdir / rel).read_text()
        assert t.run(["./train.sh", "y"], timeout=30, cwd=changed.remote_dir).stdout == "trained y\n"
        # A base copy that lost files meanwhile is not trusted: everything is sent again.
        for copy in (first, changed):
            (remote_node.fs_root / str(copy.remote_dir).lstrip("/") / "notes.md").unlink()
        (workdir / "train.sh").write_text("#!/bin/bash\necho trained again $1\n")
        third = sync_sources(t, workdir, exclude=[workdir / "experiments"])
        assert third.sent and third.files_sent == 4 and third.round_trips == 3
        assert t.read_text(third.remote_dir / "notes.md") == "untracked, not ignored\n"
        assert t.run(["./train.sh", "z"], timeout=30, cwd=third.remote_dir).stdout == "trained again z\n"
    finally:
        t.close()
