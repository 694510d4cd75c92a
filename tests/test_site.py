import hashlib
import textwrap
from datetime import datetime
from pathlib import Path

import pytest

from slurmexp.errors import SpecError
from slurmexp.sites.model import Site, load_site

ROOT_SITE = Path(__file__).resolve().parents[1] / "site.toml"

SMALL = """
cluster = "c"
default_partition = "cpu"
[nodes.n1]
cpus = 2
mem = "1G"
[nodes.g1]
cpus = 4
mem = "4G"
gpus = { a100 = 1 }
[partitions.cpu]
nodes = ["n1"]
[partitions.gpu]
nodes = ["g1"]
max_time = "1-00:00:00"
[partitions.mixed]
nodes = ["n1", "g1"]
"""


def write(tmp_path, text, name="site.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems(tmp_path, text):
    with pytest.raises(SpecError) as info:
        load_site(write(tmp_path, text))
    return info.value.problems


def by_key(probs, key):
    found = [p for p in probs if p.key == key]
    assert found, f"no problem for {key!r}; got {[(p.key, p.message) for p in probs]}"
    return found[0]


def test_root_site_describes_the_test_cluster():
    site = load_site(ROOT_SITE)
    assert isinstance(site, Site)
    assert site.cluster == "minicluster"
    assert site.account == "research"
    assert site.default_partition == "cpu"
    assert site.template == ROOT_SITE.parent / "templates" / "site-minicluster.sh.j2"
    assert site.max_array_size == 1001 and site.max_job_count == 10000
    assert site.max_submit_jobs == 0
    assert sorted(site.nodes) == ["c1", "c2", "c3", "g1", "g2"]
    assert [n.name for n in site.partition_nodes("cpu")] == ["c1", "c2", "c3"]
    assert [n.name for n in site.partition_nodes("debug")] == ["c1", "c2"]
    assert site.nodes["c1"].cpus == 16 and site.nodes["c1"].mem_mb == 8000 and site.nodes["c1"].gpus == {}
    assert site.nodes["g1"].gpus == {"a100": 2} and site.nodes["g2"].gpus == {"v100": 2}
    assert site.nodes["g2"].mem_mb == 7900
    assert site.gpu_types("gpu") == {"a100": 2, "v100": 2}
    assert site.gpu_types("cpu") == {}
    assert site.partitions["cpu"].max_time_min == 1440
    assert site.partitions["gpu"].max_time_min == 2880
    assert site.partitions["debug"].max_time_min == 5
    assert site.qos["normal"].max_wall_min == 1440
    assert site.qos["high"].max_wall_min == 240 and site.qos["high"].preempt == ["low"]
    assert site.qos["high"].max_tres_pu == {"gres/gpu": 2}
    assert site.qos["low"].max_tres_pu == {"gres/gpu": 4}
    assert site.reservations["resv1"].nodes == ["c3"] and site.reservations["resv1"].users == ["root"]
    assert site.routing.cpu == ["cpu"] and site.routing.gpu == ["gpu"]
    assert site.defaults.cpus == 1 and site.defaults.mem_mb == 500
    assert site.defaults.time_min == 10 and site.defaults.qos == "normal"
    assert site.hash() == hashlib.sha256(ROOT_SITE.read_bytes()).hexdigest()


def test_routing_defaults(tmp_path):
    site = load_site(write(tmp_path, SMALL))
    assert site.routing.cpu == ["cpu"]
    assert site.routing.gpu == ["gpu", "mixed"]
    assert site.partitions["cpu"].max_time_min is None  # default UNLIMITED
    assert site.max_array_size == 1001
    assert site.defaults.time_min == 60


def test_hash_changes_with_text(tmp_path):
    a = load_site(write(tmp_path, SMALL, "a.toml"))
    b = load_site(write(tmp_path, SMALL + "\n# comment\n", "b.toml"))
    assert a.hash() != b.hash()


def test_undefined_names_are_reported_together(tmp_path):
    probs = problems(tmp_path, SMALL.replace('default_partition = "cpu"', 'default_partition = "cpux"')
                     .replace('nodes = ["n1"]', 'nodes = ["n1", "n9"]') + """
        [qos.normal]
        preempt = ["low"]
        [reservations.r]
        nodes = ["zz"]
        [routing]
        gpu = ["gpuu"]
        """)
    assert "'cpux'" in by_key(probs, "default_partition").message
    assert "'n9'" in by_key(probs, "partitions.cpu.nodes").message
    assert "'low'" in by_key(probs, "qos.normal.preempt").message
    assert "'zz'" in by_key(probs, "reservations.r.nodes").message
    p = by_key(probs, "routing.gpu")
    assert "'gpuu'" in p.message and "cpu, gpu, mixed" in p.message


def test_unknown_keys_suggest(tmp_path):
    probs = problems(tmp_path, SMALL.replace("gpus = { a100 = 1 }", "gpu = { a100 = 1 }")
                     .replace('cluster = "c"', 'cluster = "c"\nmax_arraysize = 5'))
    assert "'gpus'" in by_key(probs, "nodes.g1.gpu").fix
    assert "'max_array_size'" in by_key(probs, "max_arraysize").fix


def test_one_bad_partition_hides_no_other_problem(tmp_path):
    probs = problems(tmp_path, SMALL.replace('max_time = "1-00:00:00"', 'max_time = "forever"')
                     .replace('nodes = ["n1"]', 'nodes = ["n7"]'))
    assert "'forever'" in by_key(probs, "partitions.gpu.max_time").message
    by_key(probs, "partitions.cpu.nodes")
    assert not [p for p in probs if p.key == "default_partition"]


def test_types_and_bounds(tmp_path):
    head = 'max_array_size = 0\nmax_job_count = "5"\n'
    probs = problems(tmp_path, head + SMALL.replace('cpus = 2\n', 'cpus = "2"\n') + """
        [defaults]
        time = "UNLIMITED"
        mem = "lots"
        """)
    by_key(probs, "nodes.n1.cpus")
    by_key(probs, "max_array_size")
    assert by_key(probs, "max_job_count").check == "type"
    by_key(probs, "defaults.time")
    by_key(probs, "defaults.mem")


def test_missing_required(tmp_path):
    probs = problems(tmp_path, 'cluster = "c"\n')
    by_key(probs, "default_partition")
    by_key(probs, "partitions")


def test_allow_qos_and_default_qos_must_exist(tmp_path):
    probs = problems(tmp_path, SMALL.replace('[partitions.gpu]', '[partitions.gpu]\nallow_qos = ["fast"]') + """
        [defaults]
        qos = "slow"
        [qos.normal]
        """)
    by_key(probs, "partitions.gpu.allow_qos")
    by_key(probs, "defaults.qos")


def test_reservation_times(tmp_path):
    site = load_site(write(tmp_path, SMALL + """
        [reservations.a]
        nodes = ["n1"]
        start = 2026-01-01T00:00:00
        end = "2027-01-01T00:00:00"
        """))
    assert site.reservations["a"].start == datetime(2026, 1, 1)
    assert site.reservations["a"].end == datetime(2027, 1, 1)
    probs = problems(tmp_path, SMALL + """
        [reservations.a]
        start = "2027-01-01T00:00:00"
        end = "2026-01-01T00:00:00"
        [reservations.b]
        start = "next tuesday"
        """)
    by_key(probs, "reservations.a.end")
    by_key(probs, "reservations.b.start")


def test_syntax_error_names_line(tmp_path):
    with pytest.raises(SpecError) as info:
        load_site(write(tmp_path, 'cluster = "c"\ndefault_partition = cpu\n'))
    assert "line 2" in info.value.problems[0].message


def test_names_sbatch_would_split_are_refused_at_their_key(tmp_path):
    # They reach #SBATCH lines through routing and defaults; refused here, the problem names
    # the site key instead of a template line.
    text = SMALL.replace('default_partition = "cpu"', 'default_partition = "cpu "\naccount = "my lab"')
    text = text.replace("[partitions.mixed]", '[partitions."mixed,all"]') + '[defaults]\nqos = "a b"\n'
    probs = problems(tmp_path, text)
    assert by_key(probs, "default_partition").fix.startswith('default_partition = "cpu" (')
    assert by_key(probs, "account").fix.startswith('account = "my" (')
    assert by_key(probs, "defaults.qos").fix.startswith('qos = "a" (')
    mixed = by_key(probs, "partitions.mixed,all")
    assert "comma" in mixed.message and mixed.fix.startswith("rename the table to [partitions.mixed]")


def test_remote_table(tmp_path):
    site = load_site(write(tmp_path, SMALL + """
        [remote]
        host = "login.example"
        user = "alice"
        port = 2222
        identity_file = "~/.ssh/id_ed25519"
        ssh_options = ["ProxyJump=bastion"]
        root = "/scratch/alice/slurmexp"
        """))
    assert site.remote is not None and site.remote.host == "login.example" and site.remote.port == 2222
    assert site.remote.ssh_options == ["ProxyJump=bastion"]
    assert load_site(write(tmp_path, SMALL, "plain.toml")).remote is None
    probs = problems(tmp_path, SMALL + """
        [remote]
        host = "login.example"
        port = 0
        identityfile = "k"
        ssh_options = ["-v"]
        root = "relative/dir"
        """)
    by_key(probs, "remote.port")
    assert "'identity_file'" in by_key(probs, "remote.identityfile").fix
    assert not [p for p in probs if p.key == "remote.host"]
    probs = problems(tmp_path, SMALL + '[remote]\nhost = "h"\nroot = "relative"\n')
    assert "absolute" in by_key(probs, "remote").message
    by_key(problems(tmp_path, SMALL + '[remote]\nroot = "/x"\n'), "remote.host")
