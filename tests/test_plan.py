import hashlib
import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from slurmexp.errors import SpecError, ValidationError
from slurmexp.sites.model import load_site
from slurmexp.sweep.plan import (
    MAX_RUNS,
    Placement,
    Resources,
    Run,
    assemble_plan,
    command_for,
    count_runs,
    describe,
    expand,
    make_chunks,
    make_plan,
    requested_resources,
    resolve_resources,
    route_problems,
    run_id_for,
    value_text,
)
from slurmexp.sweep.spec import load_sweep

ROOT_SITE = Path(__file__).resolve().parents[1] / "site.toml"


@pytest.fixture(scope="module")
def site():
    return load_site(ROOT_SITE)


def sweep_from(tmp_path, text, name="sweep.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return load_sweep(path)


def grid(tmp_path, resources="", name="sweep.toml"):
    return sweep_from(tmp_path, f"""
        name = "s"
        command = "python train.py --lr {{lr}}"
        [params]
        lr = [0.1, 0.01]
        [resources]
        {resources}
        """, name)


# ---------------------------------------------------------------- expansion


def test_grid_order_last_parameter_fastest(tmp_path):
    sweep = sweep_from(tmp_path, """
        name = "s"
        command = "x {a} {b} {c}"
        [params]
        a = [1, 2]
        b = ["x", "y", "z"]
        c = true
        """)
    runs = expand(sweep)
    assert [(r.params["a"], r.params["b"]) for r in runs] == [
        (1, "x"), (1, "y"), (1, "z"), (2, "x"), (2, "y"), (2, "z")]
    assert [r.index for r in runs] == list(range(6))
    assert all(r.source == "grid" and r.seed is None and r.params["c"] is True for r in runs)
    assert list(runs[0].params) == ["a", "b", "c"]


def test_run_id_is_sha_of_sorted_params():
    params = {"lr": 0.1, "model": "vit"}
    text = json.dumps(params, sort_keys=True, separators=(",", ":"))
    assert run_id_for(params) == "r" + hashlib.sha256(text.encode()).hexdigest()[:10]
    assert run_id_for({"model": "vit", "lr": 0.1}) == run_id_for(params)
    assert run_id_for({"lr": 1}) != run_id_for({"lr": 1.0}) != run_id_for({"lr": True})


def test_expanded_runs_keep_the_params_text_the_ledger_and_reuse_keys_store(tmp_path):
    """expand() keeps each run's canonical JSON; what reads it (`params_text`) gives the text
    the ledger would encode, and a Run made without it gets the same text made afresh."""
    from slurmexp.ledger.connection import _json
    from slurmexp.sweep.expand import params_text

    sweep = sweep_from(tmp_path, """
        name = "s"
        command = "x {a} {b}"
        [params]
        a = [1, 0.5, true, "é \\" q"]
        b = [-2, 1e300]
        [[runs]]
        a = "z"
        b = 3
        """)
    runs = expand(sweep)
    assert len(runs) == 9 and all(r.params_json is not None for r in runs)
    for run in runs:
        assert params_text(run) == _json(run.params)
        bare = Run(run_id=run.run_id, index=run.index, params=run.params, source=run.source)
        assert bare.params_json is None and params_text(bare) == _json(run.params)
        assert bare == run          # the kept text is no part of a run's identity


def test_ids_stable_when_file_is_reordered(tmp_path):
    a = sweep_from(tmp_path, """
        name = "s"
        command = "x {lr} {model} {seed}"
        [params]
        lr = [0.1, 0.01]
        model = ["resnet", "vit"]
        seed = [1, 2, 3]
        """, "a.toml")
    b = sweep_from(tmp_path, """
        command = "x {seed} {model} {lr}"
        name = "s"
        [params]
        seed = [3, 1, 2]
        model = ["vit", "resnet"]
        lr = [0.01, 0.1]
        """, "b.toml")
    ra, rb = expand(a), expand(b)
    assert len(ra) == 12
    assert [r.run_id for r in ra] != [r.run_id for r in rb]   # order differs...
    assert {r.run_id: r.params for r in ra} == {r.run_id: r.params for r in rb}   # ...ids do not
    assert len({r.run_id for r in ra}) == 12
    assert [r.run_id for r in expand(a)] == [r.run_id for r in ra]


def test_zip_groups_vary_together_and_multiply_with_grid(tmp_path):
    sweep = sweep_from(tmp_path, """
        name = "s"
        command = "x {model} {lr} {warmup} {bs} {acc}"
        [params]
        model = ["a", "b"]
        [[zip]]
        lr = [0.1, 0.01, 0.001]
        warmup = [100, 10, 1]
        [[zip]]
        bs = [32, 64]
        acc = [2, 1]
        """)
    runs = expand(sweep)
    assert len(runs) == 2 * 3 * 2
    pairs = {(r.params["lr"], r.params["warmup"]) for r in runs}
    assert pairs == {(0.1, 100), (0.01, 10), (0.001, 1)}
    assert {(r.params["bs"], r.params["acc"]) for r in runs} == {(32, 2), (64, 1)}
    assert all(r.source == "zip" for r in runs)
    assert [r.params["bs"] for r in runs[:4]] == [32, 64, 32, 64]   # last axis fastest


SAMPLED = """
name = "s"
command = "x {lr} {wd} {depth} {opt} {seed}"
[params]
seed = [1, 2]
[sample]
seed = SEED
n = 20
[sample.params]
lr = { dist = "loguniform", low = 1e-4, high = 1e-1 }
wd = { dist = "uniform", low = 0.0, high = 0.1 }
depth = { dist = "int", low = 2, high = 8 }
opt = { dist = "choice", values = ["sgd", "adam"] }
"""


def test_sampling_is_reproducible_and_in_range(tmp_path):
    a = expand(sweep_from(tmp_path, SAMPLED.replace("SEED", "0"), "a.toml"))
    b = expand(sweep_from(tmp_path, SAMPLED.replace("SEED", "0"), "b.toml"))
    c = expand(sweep_from(tmp_path, SAMPLED.replace("SEED", "1"), "c.toml"))
    assert len(a) == 40
    assert [r.params for r in a] == [r.params for r in b]
    assert [r.params for r in a] != [r.params for r in c]
    for r in a:
        assert 1e-4 <= r.params["lr"] <= 1e-1
        assert 0.0 <= r.params["wd"] <= 0.1
        assert isinstance(r.params["depth"], int) and 2 <= r.params["depth"] <= 8
        assert r.params["opt"] in ("sgd", "adam")
        assert r.source == "sample"
        assert r.seed == 0 and r.params["seed"] in (1, 2)   # the sampler's, not the param's
    combos = [tuple(sorted((k, v) for k, v in r.params.items() if k != "seed")) for r in a[:20]]
    assert len(set(combos)) == 20
    # loguniform spreads over decades instead of crowding near high
    assert min(r.params["lr"] for r in a) < 1e-2


def test_sampled_run_seed_falls_back_to_sample_seed(tmp_path):
    sweep = sweep_from(tmp_path, """
        name = "s"
        command = "x {d}"
        [sample]
        seed = 7
        n = 3
        [sample.params]
        d = { dist = "int", low = 0, high = 100 }
        """)
    assert [r.seed for r in expand(sweep)] == [7, 7, 7]


def test_sample_space_too_small(tmp_path):
    sweep = sweep_from(tmp_path, """
        name = "s"
        command = "x {o}"
        [sample]
        seed = 0
        n = 3
        [sample.params]
        o = { dist = "choice", values = ["a", "b"] }
        """)
    with pytest.raises(SpecError) as info:
        expand(sweep)
    assert info.value.problems[0].key == "sample.n"


def test_explicit_runs_are_appended(tmp_path):
    sweep = sweep_from(tmp_path, """
        name = "s"
        command = "x {lr} {seed}"
        [params]
        lr = [0.1]
        seed = [1]
        [[runs]]
        lr = 0.5
        seed = 9
        [[runs]]
        lr = 0.7
        seed = "x"
        """)
    runs = expand(sweep)
    assert [r.source for r in runs] == ["grid", "extra", "extra"]
    assert [r.index for r in runs] == [0, 1, 2]
    assert runs[1].params == {"lr": 0.5, "seed": 9} and runs[1].seed is None   # not sampled
    assert runs[2].seed is None


def test_duplicate_values_in_grid(tmp_path):
    sweep = sweep_from(tmp_path, 'name = "s"\ncommand = "x {lr}"\n[params]\nlr = [0.1, 0.2, 0.1]\n')
    with pytest.raises(SpecError) as info:
        expand(sweep)
    (p,) = info.value.problems
    assert p.key == "params.lr" and "#3" in p.message


def test_duplicate_explicit_run(tmp_path):
    sweep = sweep_from(tmp_path, """
        name = "s"
        command = "x {lr}"
        [params]
        lr = [0.1, 0.2]
        [[runs]]
        lr = 0.3
        [[runs]]
        lr = 0.2
        """)
    with pytest.raises(SpecError) as info:
        expand(sweep)
    assert info.value.problems[0].key == "runs[1]"
    assert "#1" in info.value.problems[0].message


def test_no_parameters_gives_one_run(tmp_path):
    runs = expand(sweep_from(tmp_path, 'name = "s"\ncommand = "echo hi"\n'))
    assert len(runs) == 1 and runs[0].params == {} and runs[0].run_id == run_id_for({})


def test_runs_only(tmp_path):
    runs = expand(sweep_from(tmp_path, 'name = "s"\ncommand = "x {a}"\n[[runs]]\na = 1\n[[runs]]\na = 2\n'))
    assert [r.params for r in runs] == [{"a": 1}, {"a": 2}]


@pytest.mark.parametrize("text", [
    'command = "x"',
    'command = "x {a} {b}"\n[params]\na = [1, 2, 3]\nb = [4, 5]',
    'command = "x {a}"\n[[runs]]\na = 1\n[[runs]]\na = 2',
    'command = "x {a} {b} {c}"\n[params]\na = [1, 2]\n[[zip]]\nb = [1, 2, 3]\nc = [4, 5, 6]\n'
    '[[runs]]\na = 9\nb = 9\nc = 9',
    'command = "x {a} {u}"\n[params]\na = [1, 2]\n[sample]\nseed = 1\nn = 4\n'
    '[sample.params.u]\ndist = "uniform"\nlow = 0\nhigh = 1',
])
def test_count_runs_is_what_expand_makes(tmp_path, text):
    sweep = sweep_from(tmp_path, f'name = "s"\n{text}\n')
    assert count_runs(sweep) == len(expand(sweep))


def huge_grid(tmp_path):
    """10^7 runs from a small file: expanding it took 115 s and 6.9 GB."""
    return sweep_from(tmp_path, f"""
        name = "huge"
        command = "x {{a}} {{b}} {{c}}"
        [params]
        a = {list(range(1000))}
        b = {list(range(100))}
        c = {list(range(100))}
        """)


def test_huge_grid_is_refused_before_expanding(tmp_path, site, monkeypatch):

    from slurmexp.sweep import plan as plan_mod

    def no_expand(sweep):
        raise AssertionError("expand() called on a sweep that is too big")

    sweep = huge_grid(tmp_path)
    monkeypatch.setattr(plan_mod, "expand", no_expand)
    with pytest.raises(ValidationError) as err:
        make_plan(sweep, site)
    [problem] = err.value.problems
    assert problem.check == "run_count" and problem.key == "params.a"
    assert "10,000,000 runs" in problem.message and "MaxJobCount (10000" in problem.message
    assert "at most 9,999 runs" in problem.fix and "params.a" in problem.fix
    # Without a MaxJobCount in site.toml, slurmexp's own limit still refuses it unexpanded.
    no_limit = site.model_copy(update={"max_job_count": None})
    with pytest.raises(ValidationError) as err:
        make_plan(sweep, no_limit)
    [problem] = err.value.problems
    assert f"limit of {MAX_RUNS:,} runs" in problem.message


def test_sweep_at_the_limit_is_planned(tmp_path, site):
    # Slurm refuses a new array when the jobs it holds plus the array's tasks reach
    # MaxJobCount (>=, slurmctld's _create_job_record): 9,999 runs can be queued, 10,000 never.
    sweep = sweep_from(tmp_path, f'name = "s"\ncommand = "x {{a}}"\n[params]\na = {list(range(9999))}\n')
    assert len(make_plan(sweep, site).runs) == 9999 == site.max_job_count - 1
    at_limit = sweep_from(tmp_path, f'name = "s"\ncommand = "x {{a}}"\n[params]\na = {list(range(10000))}\n')
    with pytest.raises(ValidationError) as err:
        make_plan(at_limit, site)
    assert "10,000 runs" in err.value.problems[0].message


# ---------------------------------------------------------------- chunks


def fake_runs(n):
    return [Run(run_id=run_id_for({"i": i}), index=i, params={"i": i}) for i in range(n)]


RES = Resources(partition="cpu", time_min=10)


def test_2500_runs_make_three_chunks():
    runs = fake_runs(2500)
    chunks = make_chunks(runs, RES, 1001, 8)
    assert [c.size for c in chunks] == [1001, 1001, 498]
    assert [c.chunk for c in chunks] == [0, 1, 2]
    assert [c.offset for c in chunks] == [0, 1001, 2002]
    assert [c.array_spec for c in chunks] == ["0-1000%8", "0-1000%8", "0-497%8"]
    flat = [r.run_id for c in chunks for r in c.runs]
    assert flat == [r.run_id for r in runs]        # every run exactly once, in order
    for c in chunks:
        assert c.size - 1 <= 1000                   # highest task index below MaxArraySize
        for i, run in enumerate(c.runs):
            assert run is runs[c.offset + i]


@pytest.mark.parametrize("n, size, sizes", [(0, 10, []), (1, 10, [1]), (10, 10, [10]),
                                             (11, 10, [10, 1]), (5, 1, [1] * 5)])
def test_chunk_edges(n, size, sizes):
    chunks = make_chunks(fake_runs(n), RES, size)
    assert [c.size for c in chunks] == sizes
    assert all(c.throttle is None and "%" not in c.array_spec for c in chunks)


def test_chunk_size_must_be_positive():
    with pytest.raises(ValueError):
        make_chunks(fake_runs(3), RES, 0)


def test_several_groups_number_chunks_consecutively():
    runs = fake_runs(25)
    big = Resources(partition="gpu", time_min=120, gpus=1)
    plan = assemble_plan([(RES, Placement("cpu"), runs[:15]), (big, Placement("gpu"), runs[15:])], 10, 2)
    assert [(c.chunk, c.group, c.size, c.offset) for c in plan.chunks] == [
        (0, 0, 10, 0), (1, 0, 5, 10), (2, 1, 10, 0)]
    assert plan.chunks[2].resources is big
    assert [p.partition for p in plan.placements] == ["cpu", "gpu"]
    assert plan.runs == runs


def test_make_plan_2500(tmp_path, site):
    sweep = sweep_from(tmp_path, f"""
        name = "big"
        command = "x {{a}} {{b}}"
        [params]
        a = {list(range(50))}
        b = {list(range(50))}
        [resources]
        array_parallelism = 16
        """)
    plan = make_plan(sweep, site)
    assert len(plan.runs) == 2500
    assert [c.size for c in plan.chunks] == [1001, 1001, 498]
    # array_parallelism is for the whole sweep: 16 shared by the three arrays, by size
    assert [c.array_spec for c in plan.chunks] == ["0-1000%7", "0-1000%6", "0-497%3"]
    assert sorted(r.run_id for c in plan.chunks for r in c.runs) == sorted(r.run_id for r in plan.runs)
    assert plan.placements[0].partition == "cpu"
    text = describe(plan)
    assert "--array=0-1000%7" in text and "--array=0-497%3" in text
    assert "2500 runs" in text and "partition cpu" in text
    assert ("array_parallelism 16 is for the whole sweep: its 3 job arrays run at most 7 + 6 + 3 "
            "tasks at once") in text and "16 runs in all" in text


@pytest.mark.parametrize("sizes, limit, shares", [
    ([1001, 1001, 498], 16, [7, 6, 3]),
    ([1001, 1001, 498], 2, [1, 1, 1]),       # more arrays than the limit: one task each
    ([10, 1], 6, [5, 1]),                    # a small array's unused share goes to the others
    ([2, 2], 10, [2, 2]),
    ([1000, 1, 1], 4, [2, 1, 1]),
    ([5], 3, [3]),
    ([5, 5], None, [None, None]),
])
def test_array_parallelism_is_shared_among_the_arrays(sizes, limit, shares):
    from slurmexp.arrays import split_throttle

    assert split_throttle(sizes, limit) == shares
    if limit is not None and len(sizes) <= limit < sum(sizes):
        assert sum(shares) == limit


def test_explain_says_when_arrays_outnumber_array_parallelism(tmp_path, site):
    sweep = sweep_from(tmp_path, f"""
        name = "many"
        command = "x {{a}}"
        [params]
        a = {list(range(2500))}
        [resources]
        array_parallelism = 2
        """)
    plan = make_plan(sweep, site)
    assert [c.throttle for c in plan.chunks] == [1, 1, 1]
    assert ("array_parallelism 2 is for the whole sweep, but it has 3 job arrays: each array runs "
            "one task at a time (%1), so up to 3 runs at once, not 2") in describe(plan)


# ---------------------------------------------------------------- routing


def test_site_defaults_fill_in(tmp_path, site):
    res = requested_resources(grid(tmp_path), site)
    assert (res.cpus, res.mem_mb, res.time_min, res.qos, res.account, res.gpus, res.nodes) == (
        1, 500, 10, "normal", "research", 0, 1)
    res = requested_resources(grid(tmp_path, 'cpus = 2\nmem = "1G"\ntime = "00:30:00"\nqos = "high"\n'
                                             'account = "other"', "b.toml"), site)
    assert (res.cpus, res.mem_mb, res.time_min, res.qos, res.account) == (2, 1024, 30, "high", "other")


def test_cpu_run_goes_to_cpu(tmp_path, site):
    res, placement = resolve_resources(grid(tmp_path), site)
    assert res.partition == placement.partition == "cpu"
    assert placement.excluded == {}
    assert any("CPU run" in r and "c1, c2; not c3 (reservation resv1)" in r for r in placement.reasons)
    assert "time 00:10:00 within max_time 1-00:00:00" in placement.reasons


def test_a100_run_goes_to_gpu(tmp_path, site):
    res, placement = resolve_resources(grid(tmp_path, 'gpus = 1\ngpu_type = "a100"\ntime = "01:00:00"'), site)
    assert res.partition == "gpu" and res.gres == "gpu:a100:1"
    assert "GPU run: a100 x1 found on g1" in placement.reasons
    assert "time 01:00:00 within max_time 2-00:00:00" in placement.reasons


def test_v100_pair_found_on_g2(tmp_path, site):
    res, placement = resolve_resources(grid(tmp_path, 'gpus = 2\ngpu_type = "v100"'), site)
    assert res.partition == "gpu" and "GPU run: v100 x2 found on g2" in placement.reasons


def test_nine_gpus_fit_nowhere(tmp_path, site):
    res, placement = resolve_resources(grid(tmp_path, "gpus = 9"), site)
    assert placement.partition == "gpu" and placement.reasons == []
    assert "at most 2 per node" in placement.excluded["gpu"]
    for name in site.partitions:
        problems = route_problems(res, site, name)
        assert problems, name
    assert route_problems(res, site, "cpu") == ["no node here has GPUs"]
    typed = requested_resources(grid(tmp_path, 'gpus = 9\ngpu_type = "a100"', "t.toml"), site)
    assert "not enough a100 GPUs on any one node: asked 9, at most 2 per node" in route_problems(typed, site, "gpu")


def test_unknown_gpu_type(tmp_path, site):
    _, placement = resolve_resources(grid(tmp_path, 'gpus = 1\ngpu_type = "h100"'), site)
    assert "GPU type h100 on no node here" in placement.excluded["gpu"]
    assert "a100, v100" in placement.excluded["gpu"]


def test_too_many_cpus_and_too_much_memory(tmp_path, site):
    _, placement = resolve_resources(grid(tmp_path, 'cpus = 20\nmem = "9G"'), site)
    assert placement.partition == "cpu" and placement.reasons == []
    assert "cpus 20 over every node (at most 16 per node)" in placement.excluded["cpu"]
    assert "mem 9G over every node (at most 8000M per node)" in placement.excluded["cpu"]


def test_asked_partition_over_max_time(tmp_path, site):
    res, placement = resolve_resources(grid(tmp_path, 'partition = "debug"\ntime = "01:00:00"'), site)
    assert res.partition == placement.partition == "debug"
    assert placement.reasons == ["asked for in sweep resources.partition"]
    assert "time 01:00:00 over max_time 00:05:00" in placement.excluded["debug"]
    assert route_problems(res, site) == ["time 01:00:00 over max_time 00:05:00"]


def test_asked_partition_that_fits(tmp_path, site):
    res, placement = resolve_resources(grid(tmp_path, 'partition = "debug"\ntime = "00:05:00"'), site)
    assert placement.reasons[0] == "asked for in sweep resources.partition"
    assert placement.excluded == {} and route_problems(res, site) == []


def test_undefined_partition(tmp_path, site):
    res, placement = resolve_resources(grid(tmp_path, 'partition = "nope"'), site)
    assert "not defined" in placement.excluded["nope"]


def test_reservation_nodes(tmp_path, site):
    res, placement = resolve_resources(grid(tmp_path, 'reservation = "resv1"'), site)
    assert placement.partition == "cpu" and placement.excluded == {}
    assert any("c3" in r for r in placement.reasons)
    res, placement = resolve_resources(grid(tmp_path, 'reservation = "resv1"\npartition = "debug"', "b.toml"), site)
    assert "reservation resv1 has no nodes in this partition (its nodes: c3)" in placement.excluded["debug"]


def test_qos_not_allowed(tmp_path):
    (tmp_path / "site.toml").write_text(ROOT_SITE.read_text().replace(
        'max_time = "1-00:00:00"', 'max_time = "1-00:00:00"\nallow_qos = ["normal"]', 1))
    site = load_site(tmp_path / "site.toml")
    _, placement = resolve_resources(grid(tmp_path, 'qos = "high"'), site)
    assert "qos high not allowed here (allow_qos: normal)" in placement.excluded["cpu"]


def test_first_fitting_candidate_wins(tmp_path):
    text = ROOT_SITE.read_text().replace('cpu = ["cpu"]', 'cpu = ["debug", "cpu"]')
    (tmp_path / "site.toml").write_text(text)
    site = load_site(tmp_path / "site.toml")
    _, short = resolve_resources(grid(tmp_path, 'time = "00:05:00"'), site)
    assert short.partition == "debug" and short.excluded == {}
    _, long = resolve_resources(grid(tmp_path, 'time = "00:30:00"', "b.toml"), site)
    assert long.partition == "cpu"
    assert long.excluded == {"debug": "time 00:30:00 over max_time 00:05:00"}
    assert "first that fits in routing.cpu (debug, cpu)" in long.reasons


def test_describe_shows_excluded_and_warning(tmp_path, site):
    plan = make_plan(grid(tmp_path, "gpus = 9"), site)
    text = describe(plan)
    assert "NO PARTITION CAN TAKE THESE RUNS" in text
    assert "gpu: not enough GPUs on any one node" in text
    assert "--array=0-1" in text


# ---------------------------------------------------------------- commands


@pytest.mark.parametrize("value, text", [(0.1, "0.1"), (1e-05, "1e-05"), (3, "3"), (True, "true"),
                                         (False, "false"), ("vit", "vit"), (2.0, "2.0")])
def test_value_text(value, text):
    assert value_text(value) == text


HOSTILE = [
    '"; touch {marker}; echo "',
    "$(touch {marker})",
    "`touch {marker}`",
    "a\nb; touch {marker}",
    "it's; touch {marker} #",
    "' ; touch {marker} ; '",
    "  spaced  out  ",
    "",
    "*",
    "back\\slash \\n",
]


@pytest.mark.parametrize("template", HOSTILE)
def test_command_for_hostile_values_are_one_literal_word(tmp_path, template):
    marker = tmp_path / "marker"
    value = template.format(marker=marker)
    sweep = sweep_from(tmp_path, """
        name = "s"
        command = '''printf '[%s]\\n' {x} {run_id} {run_dir}'''
        [params]
        x = ["placeholder"]
        """)
    run = Run(run_id=run_id_for({"x": value}), index=0, params={"x": value})
    run_dir = tmp_path / "run dir; touch marker"
    line = command_for(sweep, run, run_dir, "s-1234")
    out = subprocess.run(["bash", "-c", line], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert out.stdout == f"[{value}]\n[{run.run_id}]\n[{run_dir}]\n"
    assert not marker.exists()
    assert not (tmp_path / "marker").exists()


def test_command_for_real_sweep(tmp_path):
    sweep = sweep_from(tmp_path, """
        name = "s"
        command = "python train.py --lr {lr} --model {model} --flag {flag} --exp {experiment_id} --literal {{x}}"
        [params]
        lr = [0.1]
        model = ["vit b"]
        flag = [false]
        """)
    (run,) = expand(sweep)
    assert command_for(sweep, run, "/tmp/r", "s-abc") == (
        "python train.py --lr 0.1 --model 'vit b' --flag false --exp s-abc --literal {x}")


def test_runs_reused_at_launch_leave_the_arrays_that_remain_the_whole_limit():
    from slurmexp.launch.reuse import _without

    runs = fake_runs(20)
    plan = assemble_plan([(RES, Placement("cpu"), runs)], 10, 4)
    assert [c.throttle for c in plan.chunks] == [2, 2]
    rest = _without(plan, {r.run_id for r in runs[10:]})      # the second array all reused
    assert [c.array_spec for c in rest.chunks] == ["0-9%4"] and rest.throttle == 4
    assert [c.throttle for c in plan.chunks] == [2, 2]        # the original plan is unchanged
