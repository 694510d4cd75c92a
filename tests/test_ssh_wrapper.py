"""The command ssh runs on the cluster (transport.ssh.REMOTE_WRAPPER), run here with bash: the
batch script runs only when it arrived whole, and the start line comes first on stderr."""
from __future__ import annotations

import subprocess

from slurmexp.transport.ssh import REMOTE_WRAPPER


def wrapper(body: bytes, declared: int) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", REMOTE_WRAPPER, "sx", str(declared), "M-started"], input=body,
                          capture_output=True, timeout=30)


def test_a_whole_script_runs_after_the_start_line(tmp_path):
    body = f"echo ran; echo oops >&2; touch {tmp_path}/x; exit 5".encode()
    proc = wrapper(body, len(body))
    assert proc.returncode == 5 and proc.stdout == b"ran\n"
    assert proc.stderr == b"M-started\noops\n"
    assert (tmp_path / "x").exists()


def test_a_script_cut_short_in_transfer_never_runs(tmp_path):
    # The connection dropped after part of the script: what arrived would run `touch` (and,
    # in a real batch, maybe half of an sbatch line). Nothing runs; exit 96.
    body = f"touch {tmp_path}/x\n".encode()
    proc = wrapper(body, len(body) + 40)
    assert proc.returncode == 96, proc
    assert not (tmp_path / "x").exists()
    assert proc.stderr == b"M-started\n"


def test_ages_are_measured_by_the_clusters_clock():
    from slurmexp.transport.snapshot import ages_result

    text = "1000\n900 a/stdout\n990 b c/metrics.json\n1005 d\nnot-a-time e\n"
    assert ages_result(text, ["a/stdout", "b c/metrics.json", "d", "e", "f"]) == {
        "a/stdout": 100.0, "b c/metrics.json": 10.0, "d": 0.0}
    assert ages_result("", ["a"]) == {} and ages_result("garbled\n1 a\n", ["a"]) == {}
