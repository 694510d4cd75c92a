"""mkroot.sh's binds stay true to the host's folders on a machine that keeps its roots.

A CI run deletes its clone and the next one clones again at the same path: the root's bind of
the old folder is still mounted (so `mountpoint` says yes) but shows the deleted folder, and every
Slurm command of the root run from there fails with "getcwd failed". `mkroot.sh mount` must see
that and bind the new folder. Runs against the remote node's root (the 24.11 Debian root).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster

MKROOT = Path(__file__).resolve().parents[1] / "docker" / "slurm-cluster" / "mkroot.sh"


def mount(root: Path, bind: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(MKROOT), "mount", str(root)], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, SX_ROOT_BINDS=str(bind)))


def pwd_in_root(root: Path, folder: Path) -> subprocess.CompletedProcess:
    # `mkroot.sh run` goes to the caller's folder inside the root, as the command wrappers do.
    return subprocess.run(["bash", str(MKROOT), "run", str(root), "/bin/sh", "-c", "/bin/pwd && cat mark"],
                          cwd=folder, capture_output=True, text=True, timeout=30)


def test_a_bind_of_a_folder_made_again_is_bound_again(remote_node):
    root = remote_node.fs_root
    folder = Path(f"/var/tmp/sx-mkroot-test-{os.getpid()}")   # outside /tmp (bound already)
    inside = root / str(folder).lstrip("/")
    try:
        folder.mkdir()
        (folder / "mark").write_text("first\n")
        assert mount(root, folder).returncode == 0
        assert pwd_in_root(root, folder).stdout.split() == [str(folder), "first"]

        shutil.rmtree(folder)                    # the clone deleted and made again
        folder.mkdir()
        (folder / "mark").write_text("second\n")
        stale = pwd_in_root(root, folder)
        assert stale.returncode != 0             # the deleted folder: pwd fails, no mark

        again = mount(root, folder)
        assert again.returncode == 0, again.stderr
        assert "binding" in again.stderr and str(folder) in again.stderr
        assert pwd_in_root(root, folder).stdout.split() == [str(folder), "second"]
        quiet = mount(root, folder)              # a true bind is left alone
        assert quiet.returncode == 0 and "binding" not in quiet.stderr
    finally:
        subprocess.run(["umount", "-l", str(inside)], capture_output=True, check=False)
        shutil.rmtree(folder, ignore_errors=True)
        if inside.is_dir():
            inside.rmdir()
