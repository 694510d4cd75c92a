"""The sweep.toml and site.toml references, JSON Schemas and starter (issue 15 item 9), and
shell completion of experiment and run ids (item 10).

- every key of the pydantic schema has a description and an example in `slurmexp.keydocs`,
  and every path there is a key; the committed docs/*-reference.md pages are what
  `python3 -m slurmexp.docsgen` writes;
- `slurmexp schema sweep|site` is a valid JSON Schema that real files (the examples, the
  repository's site.toml, the starter) pass and a file with a typo fails;
- `slurmexp init` writes a starter that passes `slurmexp validate --offline` against the
  repository's site.toml, and keeps an existing file unless --force;
- completion offers the ledger's ids, opens it without changing it, and never fails loudly.
"""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from slurmexp import docsgen
from slurmexp.cli import main
from slurmexp.completion import complete_experiment, complete_run, experiment_items, run_items
from slurmexp.keydocs import KEY_DOCS
from slurmexp.ledger import Ledger
from slurmexp.starter import starter_text

REPO = Path(__file__).resolve().parent.parent
SWEEPS = [REPO / "examples" / "lr-sweep" / "sweep.toml", REPO / "examples" / "function-sweep" / "sweep.toml"]
SITE = REPO / "site.toml"


def _walk_schema(node):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk_schema(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk_schema(value)


# --- the reference pages -----------------------------------------------------------------

@pytest.mark.parametrize("kind", docsgen.KINDS)
def test_every_key_is_documented_and_every_documented_key_exists(kind):
    paths = [k.path for k in docsgen.keys(kind)]
    assert len(paths) > 40 and len(paths) == len(set(paths))
    docs = KEY_DOCS[kind]
    undocumented = [p for p in paths if p not in docs or not docs[p][1].strip()]
    assert not undocumented, (f"keys of {docsgen.FILES[kind]} without a description in "
                              f"slurmexp/keydocs.py: {undocumented}")
    stale = sorted(set(docs) - set(paths) - {""})
    assert not stale, f"slurmexp/keydocs.py documents keys {docsgen.FILES[kind]} does not have: {stale}"
    assert docs[""].strip(), "the page's introduction (key \"\") is empty"
    tables = {k.path for k in docsgen.keys(kind) if k.child is not None}
    no_example = [p for p in paths if p not in tables and docs[p][0] is None]
    assert not no_example, f"keys without an example: {no_example}"


@pytest.mark.parametrize("kind", docsgen.KINDS)
def test_the_committed_reference_page_is_up_to_date(kind):
    page = REPO / docsgen.PAGES[kind]
    assert page.exists(), f"{page} is missing: run python3 -m slurmexp.docsgen"
    assert page.read_text() == docsgen.reference_markdown(kind), \
        f"{docsgen.PAGES[kind]} is out of date: run python3 -m slurmexp.docsgen and commit it"


def test_the_page_has_a_row_for_every_key_with_type_and_default():
    text = docsgen.reference_markdown("sweep")
    assert "## `[resources]`" in text and "## `[sample.params.<param>]`" in text
    assert "| `gpus` | integer >= 0 | not set | `gpus = 1` |" in text
    assert "| `max_attempts` | integer >= 1 | `3` | `max_attempts = 3` |" in text
    assert "| `name` | string | **required** |" in text
    site = docsgen.reference_markdown("site")
    assert "## `[partitions.<partition>]`" in site
    assert "| `max_time` | string | `\"UNLIMITED\"` |" in site
    assert "**undocumented**" not in text + site


def test_a_key_added_to_the_schema_is_found_undocumented(monkeypatch):
    # The completeness test can fail: a key with no entry in keydocs shows up as one.
    docs = {k: v for k, v in KEY_DOCS["sweep"].items() if k != "resources.gpus"}
    monkeypatch.setitem(KEY_DOCS, "sweep", docs)
    assert "resources.gpus" in [k.path for k in docsgen.keys("sweep")]
    assert "**undocumented**" in docsgen.reference_markdown("sweep")


# --- the JSON Schemas ----------------------------------------------------------------------

@pytest.mark.parametrize("kind", docsgen.KINDS)
def test_the_schema_has_the_files_shape(kind):
    schema = docsgen.json_schema(kind)
    model = docsgen.model_for(kind)
    assert set(schema["properties"]) == set(model.model_fields) - set(docsgen.INTERNAL)
    assert schema["additionalProperties"] is False
    assert all(d["additionalProperties"] is False for d in schema["$defs"].values())
    nodes = list(_walk_schema(schema))
    assert {"type": "null"} not in nodes, "TOML has no null"
    for table in [schema, *schema["$defs"].values()]:     # editors show each key's description
        assert all(isinstance(p.get("description"), str) for p in table["properties"].values()), table
    refs = {n["$ref"].rsplit("/", 1)[-1] for n in nodes if "$ref" in n}
    assert refs <= set(schema["$defs"])


def _validator(schema):
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("kind", docsgen.KINDS)
def test_the_schema_is_valid_json_schema_and_every_example_passes_it(kind):
    schema = docsgen.json_schema(kind)
    _validator(schema)
    for key in docsgen.keys(kind, schema):
        example = KEY_DOCS[kind][key.path][0]
        if example is None:
            continue
        value = tomllib.loads(f"x = {example}")["x"]
        check = _validator({"$defs": schema["$defs"], **key.schema})
        errors = [e.message for e in check.iter_errors(value)]
        assert not errors, f"{key.path}: example {example} fails its own schema: {errors}"


def test_real_files_pass_the_schema_and_a_typo_does_not():
    sweep = _validator(docsgen.json_schema("sweep"))
    for path in SWEEPS:
        errors = [e.message for e in sweep.iter_errors(tomllib.loads(path.read_text()))]
        assert not errors, f"{path}: {errors}"
    assert not list(sweep.iter_errors(tomllib.loads(starter_text("demo"))))
    site = _validator(docsgen.json_schema("site"))
    assert not [e.message for e in site.iter_errors(tomllib.loads(SITE.read_text()))]

    data = tomllib.loads(SWEEPS[0].read_text())
    assert any("resourcse" in e.message for e in sweep.iter_errors({**data, "resourcse": {}}))
    bad = {**data, "resources": {**data["resources"], "gpus": -1}}
    assert [list(e.absolute_path) for e in sweep.iter_errors(bad)] == [["resources", "gpus"]]
    assert not sweep.is_valid({k: v for k, v in data.items() if k != "name"})
    assert not site.is_valid({**tomllib.loads(SITE.read_text()), "nodes": {"c1": {"cpus": 1}}})


def test_slurmexp_schema_prints_the_schema():
    result = CliRunner().invoke(main, ["schema", "site"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == docsgen.json_schema("site")
    result = CliRunner().invoke(main, ["schema", "sweeps"])
    assert result.exit_code == 2 and "sweeps" in result.output


# --- slurmexp init -------------------------------------------------------------------------

def test_init_writes_a_starter_that_validates_offline_against_the_repository_site(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(main, ["init"])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "sweep.toml").read_text()
    assert text.startswith("# A slurmexp sweep") and f'name = "{tmp_path.name}"' in text.replace("_", "_")
    result = runner.invoke(main, ["validate", "--offline", "--site", str(SITE), "sweep.toml"])
    assert result.exit_code == 0, result.output
    assert "ok: 6 runs" in result.output


def test_init_keeps_an_existing_file_unless_force(tmp_path):
    target = tmp_path / "mine.toml"
    target.write_text("name = 'keep'\n")
    runner = CliRunner()
    result = runner.invoke(main, ["init", str(target)])
    assert result.exit_code == 1
    assert "exists" in result.output and "--force" in result.output
    assert target.read_text() == "name = 'keep'\n"
    result = runner.invoke(main, ["init", str(target), "--force", "--name", "lr.v2"])
    assert result.exit_code == 0, result.output
    assert 'name = "lr.v2"' in target.read_text()


@pytest.mark.parametrize("argv, words", [
    (["init", "x.toml", "--name", "-rf"], ["--name", "cannot be a sweep name"]),
    (["init", "no/such/folder/sweep.toml"], ["cannot write", "create the folder"]),
])
def test_init_refuses_with_the_fix(tmp_path, monkeypatch, argv, words):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert all(w in result.output for w in words), result.output
    assert not (tmp_path / "x.toml").exists()


# --- completion ----------------------------------------------------------------------------

def _make_ledger(path: Path) -> None:
    with Ledger(path) as led:
        for exp_id, name, n in (("lr-sweep-aaaa1111", "lr-sweep", 3), ("lr-sweep-bbbb2222", "lr-sweep", 2),
                                ("zip-cccc3333", "zip", 1)):
            runs = [dict(run_id=f"{name[0]}{i:03d}-{exp_id[-4:]}", idx=i, params={"i": i},
                         run_dir=f"/exp/{exp_id}/{i}", chunk=0, task_index=i) for i in range(n)]
            led.create_experiment(exp_id, name, "fp-" + exp_id, "mini", "slurm", f"/exp/{exp_id}",
                                  None, None, None, None, None, {}, runs)


def _complete(ledger: Path, words: str, shell: str = "bash") -> list[str]:
    env = {"_SLURMEXP_COMPLETE": f"{shell}_complete", "COMP_WORDS": words,
           "COMP_CWORD": str(len(words.split(" ")) - 1), "SLURMEXP_LEDGER": str(ledger)}
    result = CliRunner().invoke(main, [], env=env, prog_name="slurmexp")
    assert result.exit_code == 0, result.output
    return [line for line in result.output.splitlines() if line]


def test_experiment_arguments_complete_ids_and_names(tmp_path):
    path = tmp_path / "ledger.db"
    _make_ledger(path)
    with Ledger(path, mode="read") as led:
        values = [i.value for i in experiment_items(led, "lr")]
    assert values == ["lr-sweep-bbbb2222", "lr-sweep-aaaa1111", "lr-sweep"]   # newest first, then names
    assert _complete(path, "slurmexp status lr-sweep-a") == ["plain,lr-sweep-aaaa1111"]
    assert _complete(path, "slurmexp cancel z") == ["plain,zip-cccc3333", "plain,zip"]
    assert "plain,zip-cccc3333" in _complete(path, "slurmexp diff lr-sweep zi")
    assert "plain,lr-sweep-aaaa1111" in _complete(path, "slurmexp report zip lr")
    zsh = _complete(path, "slurmexp archive zip-", shell="zsh")
    assert zsh == ["plain", "zip-cccc3333", "zip, planned"]


def test_run_arguments_complete_run_ids_and_experiment_run(tmp_path):
    path = tmp_path / "ledger.db"
    _make_ledger(path)
    assert _complete(path, "slurmexp show l00") == ["plain,l000-1111", "plain,l001-1111", "plain,l002-1111",
                                                    "plain,l000-2222", "plain,l001-2222"]
    assert _complete(path, "slurmexp logs z") == ["plain,z000-3333"]
    with Ledger(path, mode="read") as led:
        assert [i.value for i in run_items(led, "lr-sweep:")] == ["lr-sweep:l000-2222", "lr-sweep:l001-2222"]
        assert [i.value for i in run_items(led, "lr-sweep-aaaa:l002")] == ["lr-sweep-aaaa:l002-1111"]


def test_completion_reads_the_ledger_without_changing_it(tmp_path):
    path = tmp_path / "ledger.db"
    _make_ledger(path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert _complete(path, "slurmexp status ")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize("content", [None, b"", b"not a database at all" * 50], ids=["missing", "empty", "junk"])
def test_completion_without_a_usable_ledger_offers_nothing_and_says_nothing(tmp_path, content):
    path = tmp_path / "ledger.db"
    if content is not None:
        path.write_bytes(content)
    for words in ("slurmexp status ", "slurmexp show r", "slurmexp show lr:"):
        result = CliRunner().invoke(main, [], prog_name="slurmexp", env={
            "_SLURMEXP_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": "2",
            "SLURMEXP_LEDGER": str(path)})
        assert (result.exit_code, result.output.strip()) == (0, ""), result.output
    assert path.exists() == (content is not None), "completion must not create a ledger"


def test_completion_functions_swallow_every_error(tmp_path, monkeypatch):
    import click

    path = tmp_path / "ledger.db"
    _make_ledger(path)
    ctx = click.Context(main, obj={"ledger_path": str(path)})
    assert [i.value for i in complete_experiment(ctx, None, "zip")] == ["zip-cccc3333", "zip"]
    assert complete_run(ctx, None, "nosuch:") == []        # an unknown experiment: an error, swallowed
    monkeypatch.setattr(Ledger, "experiments", lambda self: 1 / 0)
    assert complete_experiment(ctx, None, "") == []


def test_the_readme_lines_enable_completion_and_the_ledger_option_is_followed(tmp_path):
    for shell, marker in (("bash", "complete -o nosort -F _slurmexp_completion slurmexp"),
                          ("zsh", "compdef _slurmexp_completion slurmexp"),
                          ("fish", "complete --no-files --command slurmexp")):
        result = CliRunner().invoke(main, [], prog_name="slurmexp",
                                    env={"_SLURMEXP_COMPLETE": f"{shell}_source"})
        assert result.exit_code == 0 and marker in result.output, (shell, result.output)
        assert f"_SLURMEXP_COMPLETE={shell}_source slurmexp" in (REPO / "README.md").read_text()
    path = tmp_path / "other.db"
    _make_ledger(path)
    words = f"slurmexp --ledger {path} rm zip-"
    result = CliRunner().invoke(main, [], prog_name="slurmexp", env={
        "_SLURMEXP_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": "4",
        "SLURMEXP_LEDGER": str(tmp_path / "none.db")})
    assert result.output.split() == ["plain,zip-cccc3333"]


def test_bash_completes_from_the_ledger_with_the_readme_line(tmp_path):
    # The real thing: bash sources the README's line and its completion function fills COMPREPLY.
    import os
    import shutil
    import subprocess
    import sys

    if shutil.which("bash") is None:
        pytest.skip("no bash")
    wrapper = tmp_path / "bin" / "slurmexp"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m slurmexp "$@"\n')
    wrapper.chmod(0o755)
    _make_ledger(tmp_path / "ledger.db")
    script = ('eval "$(_SLURMEXP_COMPLETE=bash_source slurmexp)"\n'
              'COMP_WORDS=(slurmexp status lr); COMP_CWORD=2; _slurmexp_completion slurmexp\n'
              'printf "%s\\n" "${COMPREPLY[@]}"; COMPREPLY=()\n'
              'COMP_WORDS=(slurmexp logs z0); COMP_CWORD=2; _slurmexp_completion slurmexp\n'
              'printf "%s\\n" "${COMPREPLY[@]}"\n')
    env = dict(os.environ, PATH=f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}",
               SLURMEXP_LEDGER=str(tmp_path / "ledger.db"),
               PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["lr-sweep-bbbb2222", "lr-sweep-aaaa1111", "lr-sweep", "z000-3333"]
    assert proc.stderr == ""


def test_the_starters_commented_examples_are_real_keys():
    # Uncommented in place, every `# key = value` and `# [table]` line of the starter still
    # makes a sweep the schema accepts: no commented example names a key that does not exist.
    import re

    lines = starter_text("demo").splitlines()
    shown = [re.sub(r"\s+#.*$", "", line[2:]) if re.match(r"# (\[|[a-z_]+ = )", line) else line
             for line in lines]
    assert sum(a != b for a, b in zip(lines, shown)) >= 15
    data = tomllib.loads("\n".join(shown))
    assert {"zip", "runs", "env", "checkpoint", "meta"} <= set(data) and data["resources"]["gpus"] == 1
    errors = [e.message for e in _validator(docsgen.json_schema("sweep")).iter_errors(data)]
    assert not errors, errors
