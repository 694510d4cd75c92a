"""The documentation matches the code, and the code keeps the shape the documentation promises.

In the spirit of sqlite-utils' tests/test_docs.py:

- every module under slurmexp/ is named in docs/DESIGN.md's module tables, and every name there
  is a module (package-relative dotted paths: `reconcile.one_pass`; a package by its own path,
  `reconcile`; the top-level package's files as `__init__` and `__main__`);
- every command and subcommand of the `slurmexp` click group appears in README.md as
  `slurmexp <command>`;
- no module is named like a standard-library module (`python slurmexp/cli.py` puts slurmexp/
  first on sys.path, where such a module would shadow the real one);
- every module has at most MAX_LINES lines, unless its row in DESIGN.md says why with the marker
  `(N lines: reason)`, N at least its length (a marker on a module within the limit is stale);
- `python -m slurmexp --help` and `python slurmexp/cli.py --help` both work;
- no import circle among slurmexp modules (module-level imports; not `if TYPE_CHECKING:` blocks,
  not imports inside functions).
"""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from slurmexp.cli import main

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "slurmexp"
DESIGN = REPO / "docs" / "DESIGN.md"
README = REPO / "README.md"
MAX_LINES = 400
# `(512 lines: one schema, its cross-section checks)` in a module's row of DESIGN.md.
LONG_MARKER = re.compile(r"\((\d+) lines: ([^)]*\S[^)]*)\)")
ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|(.*)\|\s*$")


# --- what is on disk and in the docs ----------------------------------------------------------

def module_files() -> dict[str, Path]:
    """Package-relative dotted name -> file, for every module and package under slurmexp/."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def design_rows() -> dict[str, str]:
    """First-cell name -> the rest of the row, for the tables under `## Modules` in DESIGN.md."""
    text = DESIGN.read_text()
    match = re.search(r"^## Modules\b.*?(?=^## |\Z)", text, re.M | re.S)
    assert match, "docs/DESIGN.md has no '## Modules' section"
    rows: dict[str, str] = {}
    for line in match.group(0).splitlines():
        m = ROW.match(line.strip())
        if m:
            name = m.group(1)
            assert name not in rows, f"{name} has two rows in DESIGN.md"
            rows[name] = m.group(2)
    return rows


def line_count(path: Path) -> int:
    return len(path.read_text().splitlines())


def command_paths(group: click.Group, prefix: str = "") -> list[str]:
    out = []
    for name, command in sorted(group.commands.items()):
        path = f"{prefix}{name}"
        out.append(path)
        if isinstance(command, click.Group):
            out += command_paths(command, path + " ")
    return out


# --- imports ---------------------------------------------------------------------------------

def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def module_level_imports(source: str, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The slurmexp modules `module` imports when it is imported (full dotted names).

    `import a.b` and `from a.b import c` count as importing a.b, and `from a import b` as
    importing a and, where b is a module, a.b. Bodies of functions are not run at import
    time; `if TYPE_CHECKING:` blocks never are. Relative imports are resolved.
    """
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base_parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.If):
                if not _is_type_checking(node.test):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, (ast.With, ast.For, ast.While)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
            elif isinstance(node, ast.ClassDef):
                visit(node.body)          # a class body runs at import time

    visit(ast.parse(source).body)
    return {name for name in found if name in known and name != module}


def import_graph() -> dict[str, set[str]]:
    files = {"slurmexp" if name == "__init__" else f"slurmexp.{name}": path
             for name, path in module_files().items()}
    known = set(files)
    return {mod: module_level_imports(path.read_text(), mod, path.name == "__init__.py", known)
            for mod, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}          # 1: on the current path, 2: done
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = dfs(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = dfs(node)
            if found:
                return found
    return None


# --- the tests -------------------------------------------------------------------------------

def test_the_lists_are_not_empty():
    # Guards the other tests: a walk that found nothing would make them all pass.
    modules = module_files()
    assert {"cli", "__init__", "__main__", "reconcile", "reconcile.one_pass",
            "backends.slurm.parse.sacct", "launch.templates"} <= set(modules)
    assert len(design_rows()) >= 40
    assert {"launch", "reconcile", "site", "site show", "site discover"} <= set(command_paths(main))


def test_every_module_is_in_the_design_table_and_every_row_is_a_module():
    modules = set(module_files())
    rows = set(design_rows())
    missing = sorted(modules - rows)
    assert not missing, f"modules without a row in docs/DESIGN.md's module tables: {missing}"
    extra = sorted(rows - modules)
    assert not extra, f"rows in docs/DESIGN.md's module tables that are not modules: {extra}"


@pytest.mark.parametrize("command", command_paths(main))
def test_every_cli_command_is_in_the_readme(command):
    readme = README.read_text()
    assert re.search(rf"slurmexp {re.escape(command)}(?![\w-])", readme), \
        f"`slurmexp {command}` is not mentioned in README.md"


def test_no_module_is_named_like_a_standard_library_module():
    clashes = sorted(name for name in module_files()
                     if any(part in sys.stdlib_module_names for part in name.split(".")))
    assert not clashes, f"named like standard-library modules: {clashes}"


def test_modules_are_short_unless_the_design_says_why():
    rows = design_rows()
    problems = []
    for name, path in module_files().items():
        n = line_count(path)
        marker = LONG_MARKER.search(rows.get(name, ""))
        if n > MAX_LINES and marker is None:
            problems.append(f"{name}: {n} lines; split it, or say why in its DESIGN.md row: "
                            f"({n} lines: reason)")
        elif marker is not None and n > int(marker.group(1)):
            problems.append(f"{name}: {n} lines, DESIGN.md says {marker.group(1)}; update the "
                            f"marker (and its reason)")
        elif marker is not None and n <= MAX_LINES:
            problems.append(f"{name}: {n} lines, within {MAX_LINES}: remove the stale marker "
                            f"{marker.group(0)!r} from DESIGN.md")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("argv", [["-m", "slurmexp", "--help"], ["slurmexp/cli.py", "--help"]],
                         ids=["python -m slurmexp", "python slurmexp/cli.py"])
def test_help_runs_both_ways(argv):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.run([sys.executable, *argv], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: ") and proc.stderr == ""
    listed = re.findall(r"^  (\w[\w-]*)\s", proc.stdout.split("Commands:", 1)[-1], re.M)
    assert sorted(listed) == sorted(main.commands), proc.stdout


def test_no_import_circle():
    graph = import_graph()
    assert "slurmexp.cli" in graph and graph["slurmexp.cli"], "the import walk found nothing"
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_import_walk_counts_only_module_level_imports():
    known = {"slurmexp", "slurmexp.a", "slurmexp.b", "slurmexp.c", "slurmexp.d", "slurmexp.pkg",
             "slurmexp.pkg.e"}
    source = (
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "import slurmexp.a\n"
        "from slurmexp import b\n"
        "if TYPE_CHECKING:\n    from slurmexp import c\n"
        "def f():\n    from slurmexp import d\n"
        "try:\n    from .e import X\nexcept ImportError:\n    pass\n"
    )
    assert module_level_imports(source, "slurmexp.pkg.m", False, known) == {
        "slurmexp.a", "slurmexp", "slurmexp.b", "slurmexp.pkg.e"}
    assert find_cycle({"x": {"y"}, "y": {"z"}, "z": {"x"}, "w": {"x"}}) == ["x", "y", "z", "x"]
    assert find_cycle({"x": {"y"}, "y": set()}) is None
