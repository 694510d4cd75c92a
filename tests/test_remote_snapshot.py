"""A reconcile pass's reads over SSH in one round trip, against the real sshd in the Slurm 24.11
root: sacct + squeue for a 500-task array and 500 result files, counted on the server's side."""
from __future__ import annotations

import os
import tempfile
import time
import uuid

import pytest
from remotelib import since

from slurmexp.backends.slurm.backend import SlurmBackend
from slurmexp.errors import SlurmUnavailable
from slurmexp.transport.snapshot import snapshot
from slurmexp.transport.ssh import Op

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("no_local_slurm")]


@pytest.fixture
def remote(remote_node):
    t = remote_node.transport(control_dir=tempfile.mkdtemp(prefix="sxcm", dir="/tmp"),
                              root=f"{remote_node.remote_root}/snap-{uuid.uuid4().hex}")
    t.makedirs(t.root)
    yield t
    t.close()


def test_500_task_pass_is_one_round_trip(remote, remote_node):
    backend = SlurmBackend(cluster=remote_node.cluster, transport=remote)
    backend.assume_local_cluster(remote_node.cluster, user="root")   # as a [remote] site does
    remote.write_text("job.sh", "#!/bin/bash\n#SBATCH --job-name=sx-test-snapshot\n#SBATCH --hold\n"
                                "#SBATCH --array=0-499\n#SBATCH --output=/dev/null\n#SBATCH --partition=cpu\ntrue\n")
    t0 = time.monotonic()
    sub = backend.submit("job.sh", cwd=remote.root)
    try:
        # slurmdbd learns of a new job a moment after sbatch; wait for its record so the pass
        # below has one to read (and never an older job that had the same id: see since()).
        deadline = t0 + 60
        while not [r for r in backend.accounting([sub.job_id], since=since(t0))
                   if r.job_name == "sx-test-snapshot"] and time.monotonic() < deadline:
            time.sleep(1)
        made = remote.batch([op for i in range(500) for op in (
            Op("mkdirs", path=f"r/{i}"), Op("write", path=f"r/{i}/exit_code", data=f"{i % 3}\n".encode()))])
        assert [r.returncode for r in made] == [0] * 1000
        files = [f"r/{i}/exit_code" for i in range(500)] + ["r/none/stderr"]
        # A file last changed 100 s ago (by the node's clock), and one with a space in its name.
        old = remote_node.fs_root / str(remote.root).lstrip("/") / "r/7/exit_code"
        os.utime(old, (time.time() - 100, time.time() - 100))
        remote.write_text("r/8/my out", "x\n")
        ages = ["r/7/exit_code", "r/8/my out", "r/none/stdout"]
        trips, served = remote.round_trips, remote_node.commands_run()
        snap = snapshot(backend, [sub.job_id], since=since(t0), files=files, ages=ages)
        assert remote.round_trips == trips + 1 and remote_node.commands_run() == served + 1
        assert len({r.job_id for r in snap.queue}) == 500
        assert {r.state for r in snap.queue} == {"PENDING"}
        ours = [r for r in snap.accounting if r.job_name == "sx-test-snapshot"]
        assert ours and all(r.state == "PENDING" for r in ours), snap.accounting
        assert [snap.files[f"r/{i}/exit_code"] for i in range(500)] == [f"{i % 3}\n" for i in range(500)]
        assert snap.files["r/none/stderr"] is None
        assert set(snap.ages) == {"r/7/exit_code", "r/8/my out"}           # the absent one: no age
        assert 98 <= snap.ages["r/7/exit_code"] <= 110 and snap.ages["r/8/my out"] < 30
    finally:
        backend.cancel([sub.job_id])


def test_unreachable_pass_is_slurm_unavailable(remote, remote_node):
    backend = SlurmBackend(cluster=remote_node.cluster, user="root", transport=remote)
    remote_node.down()
    try:
        with pytest.raises(SlurmUnavailable) as exc:
            snapshot(backend, ["1"], since="now-1hours", files=["x"])
        assert exc.value.exit_code == 3 and "unreachable since" in str(exc.value)
    finally:
        remote_node.restart()
