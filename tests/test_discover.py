"""`site discover` writes a site.toml that slurmexp's own site parser accepts and that says what
the cluster says: from the live test cluster, and from captured output without one."""
from __future__ import annotations

import tomllib
from datetime import datetime
from pathlib import Path

import pytest

from slurmexp.backends.slurm import parse as sp
from slurmexp.backends.slurm.backend import SlurmBackend
from slurmexp.errors import SlurmexpError
from slurmexp.sites.discover import discover_site, toml_value
from slurmexp.sites.model import load_site, parse_site

CAPTURED = Path(__file__).parent / "data" / "captured" / "22.05"  # exact values below are 22.05's


def captured_facts(**override):
    def read(name):
        return (CAPTURED / name).read_text()

    texts = dict(
        config=read("scontrol_config.txt"), partitions=read("scontrol_partition.txt"),
        nodes=read("scontrol_node.txt"), reservations=read("scontrol_reservation.txt"),
        qos=read("sacctmgr_qos.txt"), associations=read("sacctmgr_assoc.txt"),
    )
    texts.update(override)
    return sp.cluster_facts_from(user="root", **texts)


def check_minicluster(site, c1_cpus: int, name: str = "minicluster"):
    assert site.cluster == name
    assert site.default_partition == "cpu"
    assert site.max_array_size == 1001 and site.max_job_count == 10000
    assert sorted(site.partitions) == ["cpu", "debug", "gpu"]
    assert site.partitions["cpu"].nodes == ["c1", "c2", "c3"]
    assert site.partitions["debug"].max_time_min == 5
    assert site.partitions["gpu"].max_time_min == 2880
    assert site.gpu_types("gpu") == {"a100": 2, "v100": 2}
    assert site.gpu_types("cpu") == {}
    assert site.nodes["g1"].gpus == {"a100": 2} and site.nodes["g1"].mem_mb == 7900
    assert site.nodes["c1"].cpus == c1_cpus
    assert site.qos["high"].max_tres_pu == {"gres/gpu": 2}
    assert site.qos["high"].preempt == ["low"] and site.qos["high"].max_wall_min == 240
    assert site.reservations["resv1"].nodes == ["c3"]
    assert site.routing.cpu == ["cpu", "debug"] and site.routing.gpu == ["gpu"]


def test_discover_from_captured_output(tmp_path):
    text = discover_site(captured_facts(), now=datetime(2026, 11, 21, 15, 0, 0))
    site = parse_site(text, tmp_path / "site.toml")
    check_minicluster(site, c1_cpus=4)  # captured before the CPU nodes grew to 16 CPUs
    assert site.account == "research"
    assert site.reservations["resv1"].start == datetime(2026, 11, 21, 14, 35, 41)
    assert text.startswith("# site.toml for Slurm cluster minicluster")
    assert "on 2026-11-21T15:00:00 as user root (Slurm 22.05.8)" in text
    assert '"gres/gpu" = 2' in text


def test_discover_says_what_it_skipped(tmp_path):
    facts = captured_facts(qos=None, associations=None)
    facts.skipped = ["qos: sacctmgr could not reach a Slurm daemon", "associations: same"]
    text = discover_site(facts)
    site = parse_site(text, tmp_path / "site.toml")
    assert site.qos == {} and site.account is None
    assert "# Not read (those parts are missing below):" in text
    assert "#   - qos: sacctmgr could not reach a Slurm daemon" in text


def test_discover_without_nodes_refuses():
    facts = captured_facts(nodes=None)
    facts.skipped = ["nodes: scontrol failed"]
    with pytest.raises(SlurmexpError, match="could not read nodes") as info:
        discover_site(facts)
    assert info.value.problems[0].message == "nodes: scontrol failed"


def test_toml_writer_quotes_what_needs_it():
    data = {"a b": 1, "gres/gpu": 2, "": 3, "ok_key-1": 4}
    assert tomllib.loads(f"x = {toml_value(data)}")["x"] == data
    tricky = 'quote " backslash \\ tab \t newline \n bell \x07 é'
    assert tomllib.loads(f"x = {toml_value(tricky)}")["x"] == tricky
    assert toml_value([True, 1, "s", []]) == '[true, 1, "s", []]'


@pytest.mark.cluster
def test_discover_from_live_cluster(cluster, tmp_path):
    facts = SlurmBackend().cluster_facts()
    assert facts.skipped == []
    text = discover_site(facts)
    site = parse_site(text, tmp_path / "site.toml")
    check_minicluster(site, c1_cpus=16, name=cluster.name)
    assert facts.def_mem_per_cpu_mb == 250 and site.defaults.mem_per_cpu == "250M"  # slurm.conf.in
    assert site.account == cluster.account
    # What discover finds agrees with the repository's hand-written site.toml.
    written = load_site(cluster.site_toml)
    for name, node in written.nodes.items():
        found = site.nodes[name]
        assert (found.cpus, found.mem_mb, found.gpus) == (node.cpus, node.mem_mb, node.gpus), name
