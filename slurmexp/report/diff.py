"""`slurmexp diff EXP1 EXP2`: what changed between two experiments, section by section.

- **sweep**: the two sweep files as launched (the copies in the experiment folders, else the
  files the ledger names), key by key (`params.lr`, `resources.time`, ...);
- **site**: the same for the two site.toml copies, when their hashes differ;
- **resources**: what each resource group asked for and where it went (the stored settings:
  partition, time, memory, CPUs, GPUs, QOS, throttle, limits), so site defaults count too;
- **provenance**: git commit, branch, uncommitted changes, Python, host, user, and the Python
  distributions whose versions differ (from each `provenance/environment.txt`).

Reads the ledger and the experiment folders only; never Slurm.
"""
from __future__ import annotations

import json
import tomllib
from dataclasses import asdict
from pathlib import Path
from typing import Any

from slurmexp import layout
from slurmexp.ledger import Ledger

_PROVENANCE_KEYS = ("git.commit", "git.branch", "git.dirty", "git.diff_sha256", "git.n_untracked",
                    "python.version", "python.executable", "environment.sha256", "host", "user",
                    "platform")
_MISSING = object()


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys for nested tables; lists of tables by index (`zip[0].lr`), other lists whole."""
    out: dict[str, Any] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{i}]"))
    else:
        out[prefix] = value
    return out


def changes(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """[{key, a, b}] for every key whose value differs (absent: no `a` or no `b`)."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, _MISSING), b.get(key, _MISSING)
        if va != vb:
            row: dict[str, Any] = {"key": key}
            if va is not _MISSING:
                row["a"] = va
            if vb is not _MISSING:
                row["b"] = vb
            out.append(row)
    return out


def _toml(*paths: Any) -> dict[str, Any]:
    for path in paths:
        if path and Path(path).is_file():
            try:
                return tomllib.loads(Path(path).read_text())
            except (OSError, tomllib.TOMLDecodeError):
                return {}
    return {}


def _distributions(exp: dict) -> dict[str, str]:
    path = layout.ExperimentPaths(exp["exp_dir"]).provenance_dir / "environment.txt" if exp.get("exp_dir") else None
    out = {}
    if path is not None and path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            name, sep, version = line.partition("==")
            if sep:
                out[f"distribution.{name.strip().lower()}"] = version.strip()
    return out


def _resources(ledger: Ledger, exp_id: str) -> dict[str, Any]:
    settings = ledger.experiment_settings(exp_id)
    out: dict[str, Any] = {}
    for g in settings.groups:
        data = asdict(g)
        data.pop("chunks", None)
        data.pop("group", None)
        out.update({f"group {g.group}.{k}": v for k, v in data.items() if v is not None})
    out.update({f"retry.{k}": v for k, v in asdict(settings.retry).items()})
    if settings.checkpoint is not None:
        out.update({f"checkpoint.{k}": v for k, v in asdict(settings.checkpoint).items()})
    return out


def diff_experiments(ledger: Ledger, exp_a: str, exp_b: str) -> dict[str, Any]:
    a, b = ledger.get_experiment(exp_a, required=True), ledger.get_experiment(exp_b, required=True)

    def copy(exp: dict, attr: str) -> Any:
        return getattr(layout.ExperimentPaths(exp["exp_dir"]), attr) if exp.get("exp_dir") else None

    sections = {
        "sweep": changes(flatten(_toml(a.get("sweep_copy_path"), copy(a, "sweep_copy"), a.get("sweep_path"))),
                         flatten(_toml(b.get("sweep_copy_path"), copy(b, "sweep_copy"), b.get("sweep_path")))),
        "site": [] if a.get("site_hash") == b.get("site_hash") else changes(
            flatten(_toml(copy(a, "site_copy"), a.get("site_path"))),
            flatten(_toml(copy(b, "site_copy"), b.get("site_path")))),
        "resources": changes(_resources(ledger, exp_a), _resources(ledger, exp_b)),
    }
    pa, pb = flatten(a["provenance"]), flatten(b["provenance"])
    sections["provenance"] = changes({k: pa[k] for k in _PROVENANCE_KEYS if k in pa} | _distributions(a),
                                     {k: pb[k] for k in _PROVENANCE_KEYS if k in pb} | _distributions(b))
    if a.get("cluster") != b.get("cluster") or a.get("backend") != b.get("backend"):
        sections["resources"].insert(0, {"key": "cluster", "a": f"{a['backend']}:{a.get('cluster')}",
                                         "b": f"{b['backend']}:{b.get('cluster')}"})
    return {"a": exp_a, "b": exp_b, "sections": sections}


def _show(value: Any) -> str:
    return json.dumps(value, default=str) if not isinstance(value, str) else value


def format_diff(data: dict[str, Any]) -> str:
    lines = [f"--- {data['a']}", f"+++ {data['b']}"]
    for name, rows in data["sections"].items():
        if not rows:
            lines.append(f"{name}: same")
            continue
        lines.append(f"{name}: {len(rows)} change(s)")
        for row in rows:
            if "a" not in row:
                lines.append(f"  + {row['key']} = {_show(row['b'])}")
            elif "b" not in row:
                lines.append(f"  - {row['key']} = {_show(row['a'])}")
            else:
                lines.append(f"  ~ {row['key']}: {_show(row['a'])} -> {_show(row['b'])}")
    return "\n".join(lines) + "\n"
