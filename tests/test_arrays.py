"""Array specs: one parser, one formatter, one throttle rule (slurmexp.arrays), and every place
that writes or reads a spec going through them."""
from __future__ import annotations

import pytest

from slurmexp import arrays
from slurmexp.arrays import format_spec, indices, split_job_id, task_key, task_set, throttle
from slurmexp.backends.slurm import parse as sp
from slurmexp.sweep.plan import ArrayChunk, Resources, Run


@pytest.mark.parametrize("spec,want", [
    ("0-9%2", list(range(10))),
    ("1,3,5-7", [1, 3, 5, 6, 7]),
    ("0-10:2", [0, 2, 4, 6, 8, 10]),
    ("0-8:4", [0, 4, 8]),
    ("5-10%4", [5, 6, 7, 8, 9, 10]),
    ("[5-10%4]", [5, 6, 7, 8, 9, 10]),        # the bracket part of a pending row
    ("7", [7]),
    ("3,1,3", [1, 3]),
    ("1,3,5-", [1, 3, 5]),                    # cut off by a column limit: what is readable
    ("", []), (None, []),
])
def test_indices(spec, want):
    assert indices(spec) == want


def test_task_set_is_none_without_a_spec():
    assert task_set("0-9%2") == set(range(10))
    assert task_set("1,3,6-10:2") == {1, 3, 6, 8, 10}
    assert task_set("") is None and task_set(None) is None and task_set("%4") is None


@pytest.mark.parametrize("spec,want", [
    ("0-9%2", 2), ("1,3%16", 16), ("[0-9%2]", 2), ("0-9 % 3", 3), ("0-9", None), ("", None),
    (None, None), ("0-9%0", None), ("0-9%x", None),
])
def test_throttle(spec, want):
    assert throttle(spec) == want


def test_format_spec():
    assert format_spec([7, 0, 1, 2, 5, 8]) == "0-2,5,7-8"
    assert format_spec([3]) == "3"
    assert format_spec(range(10), 2) == "0-9%2"
    assert format_spec([1, 3, 5, 6, 7], 4) == "1,3,5-7%4"
    assert format_spec([0, 0, 1]) == "0-1"
    assert format_spec([], None) == "" and format_spec([2], 0) == "2"


@pytest.mark.parametrize("tasks,thr", [([0, 2, 3, 9], None), (list(range(1001)), 8),
                                       ([5], 1), ([1, 3, 5, 6, 7, 100], 2)])
def test_format_and_parse_round_trip(tasks, thr):
    spec = format_spec(tasks, thr)
    assert indices(spec) == sorted(tasks) and throttle(spec) == thr


@pytest.mark.parametrize("job_id,want", [
    ("5_3", ("5", 3, None)),
    ("5_[0-9%2]", ("5", None, list(range(10)))),          # pending tasks, as sacct/squeue print
    ("485_[1,3,5-7]", ("485", None, [1, 3, 5, 6, 7])),
    ("12_[0-10:2]", ("12", None, [0, 2, 4, 6, 8, 10])),
    ("9_[1,3,5-", ("9", None, [1, 3, 5])),               # cut at 64 bytes, "]" lost
    ("42", (None, None, None)),
    ("42.batch", (None, None, None)),
])
def test_split_job_id(job_id, want):
    assert split_job_id(job_id) == want


def test_task_key():
    assert task_key("77", 3) == "77_3" and task_key(77, 0) == "77_0" and task_key("77", None) == "77"


def test_a_chunk_writes_its_spec_with_the_formatter():
    runs = [Run(run_id=f"r{i}", index=i, params={}) for i in range(4)]
    chunk = ArrayChunk(chunk=0, group=0, resources=Resources(partition="cpu", time_min=1),
                       runs=runs, offset=0, throttle=2)
    assert chunk.array_spec == "0-3%2" == format_spec(range(4), 2)
    assert ArrayChunk(chunk=0, group=0, resources=chunk.resources, runs=runs[:1],
                      offset=0).array_spec == "0"


def test_the_parsers_read_pending_rows_with_it():
    sep = sp.DELIMITER
    line = sep.join(["5_[0-9%2]", "5", "N/A", "PENDING", "JobArrayTaskLimit",
                     "2026-01-01T00:00:00", "", "job", "(null)"])
    (row,) = sp.parse_squeue(line + "\n")
    assert (row.array_job_id, row.array_task, row.pending_tasks) == ("5", None, list(range(10)))
    # %K (the task column) holds the spec when %i is the bare id
    line = sep.join(["5", "5", "0-10:2", "PENDING", "Priority", "2026-01-01T00:00:00", "",
                     "job", "(null)"])
    (row,) = sp.parse_squeue(line + "\n")
    assert row.pending_tasks == [0, 2, 4, 6, 8, 10]


def test_arrays_imports_nothing_of_slurmexp():
    import subprocess
    import sys
    code = ("import sys, slurmexp.arrays; "
            "extra = sorted(m for m in sys.modules if m.startswith('slurmexp.') "
            "and m != 'slurmexp.arrays'); assert not extra, extra")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert arrays.__doc__
