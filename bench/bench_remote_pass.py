"""The reads of a 500-task reconcile pass over SSH (one round trip: sacct + squeue + 500 result
files, `transport.snapshot`) against the same reads on the login node itself, on the sshd in the
Slurm 24.11 root (docker/slurm-cluster/remote-sshd.sh). Run as root:

    PYTHONPATH=$PWD flock /tmp/cluster.lock python3 bench/bench_remote_pass.py
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from remotelib import RemoteNode  # noqa: E402

from slurmexp.backends.slurm.backend import SlurmBackend  # noqa: E402
from slurmexp.transport.snapshot import snapshot  # noqa: E402
from slurmexp.transport.ssh import Op  # noqa: E402


def main(tasks: int = 500, repeats: int = 5) -> None:
    node = RemoteNode.up()
    t = node.transport(control_dir=tempfile.mkdtemp(prefix="sxcm", dir="/tmp"),
                       root=f"{node.remote_root}/bench-{uuid.uuid4().hex}")
    t.makedirs(t.root)
    b = SlurmBackend(cluster=node.cluster, transport=t)
    b.assume_local_cluster(node.cluster, user="root")
    t.write_text("job.sh", f"#!/bin/bash\n#SBATCH --hold\n#SBATCH --job-name=sx-test-bench\n"
                           f"#SBATCH --array=0-{tasks - 1}\n#SBATCH --output=/dev/null\n"
                           f"#SBATCH --partition=cpu\ntrue\n")
    sub = b.submit("job.sh", cwd=t.root)
    try:
        t.batch([op for i in range(tasks) for op in (
            Op("mkdirs", path=f"r/{i}"), Op("write", path=f"r/{i}/exit_code", data=b"0\n"))])
        files = [f"r/{i}/exit_code" for i in range(tasks)]
        over_ssh, on_node = [], []
        for _ in range(repeats):
            s = time.monotonic()
            snapshot(b, [sub.job_id], since="now-1hours", files=files)
            over_ssh.append(time.monotonic() - s)
            s = time.monotonic()
            subprocess.run(["chroot", str(node.fs_root), "sh", "-c",
                            f"sacct -n -P -D -a -S now-1hours -j {sub.job_id} >/dev/null; "
                            f"squeue -h -r -t all -j {sub.job_id} >/dev/null; "
                            f"cd {t.root} && tar -cf - r >/dev/null"], check=True)
            on_node.append(time.monotonic() - s)
        print(f"{tasks} tasks, over ssh (one round trip), s:", [round(x, 3) for x in over_ssh])
        print(f"{tasks} tasks, on the node itself, s:      ", [round(x, 3) for x in on_node])
    finally:
        b.cancel([sub.job_id])
        t.close()


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
