"""The sweep.toml and site.toml references and JSON Schemas, generated from the pydantic schema.

One walk over a model and its JSON Schema (`keys`) gives every key a file can have, with its
type, default and, from `keydocs`, its example and description. From it come the Markdown
pages in docs/ (`reference_markdown`; `python3 -m slurmexp.docsgen` rewrites them) and the
JSON Schema `slurmexp schema sweep|site` prints, for TOML editors (taplo, Even Better TOML):
TOML has no null, so an optional key's `null` is left out, and the loader's own fields too.
`tests/test_reference.py` fails when a key has no description or a committed page is stale.
"""
from __future__ import annotations

import functools
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from slurmexp.keydocs import KEY_DOCS
from slurmexp.sweep.strict_toml import toml_value

KINDS = ("sweep", "site")
FILES = {"sweep": "sweep.toml", "site": "site.toml"}
SOURCES = {"sweep": "slurmexp/sweep/spec.py", "site": "slurmexp/sites/model.py"}
PAGES = {"sweep": "docs/sweep-reference.md", "site": "docs/site-reference.md"}
INTERNAL = ("path", "raw_text")      # filled in by the loader, never written in the file
# The placeholder for an entry of a table of tables ([nodes.<node>]) in a key's path.
ENTRY = {"nodes": "<node>", "partitions": "<partition>", "qos": "<qos>",
         "reservations": "<reservation>", "params": "<param>"}
REQUIRED = object()


def model_for(kind: str) -> type[BaseModel]:
    if kind == "sweep":
        from slurmexp.sweep.spec import Sweep
        return Sweep
    if kind == "site":
        from slurmexp.sites.model import Site
        return Site
    raise ValueError(f"unknown kind {kind!r}: one of {', '.join(KINDS)}")


@dataclass
class Key:
    path: str                  # "resources.gpus", "nodes.<node>.cpus"
    section: str               # "" (top level), "resources", "nodes.<node>", "zip[]"
    schema: dict[str, Any]     # its property in the JSON Schema (the dict itself, so it can be edited)
    default: Any               # REQUIRED, None (not set), or the value it takes
    child: str | None          # a table: the section its keys are in ("nodes.<node>")


def _drop_null(node: Any) -> Any:
    """The schema without `null` (TOML has none: an optional key is absent) or pydantic's titles."""
    if isinstance(node, list):
        return [_drop_null(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _drop_null(v) for k, v in node.items()
           if not (k == "default" and v is None) and not (k == "title" and isinstance(v, str))}
    options = [o for o in out.get("anyOf", []) if o != {"type": "null"}]
    if "anyOf" in out and len(options) < len(out["anyOf"]):
        del out["anyOf"]
        if len(options) == 1:
            out = {**options[0], **out}
        else:
            out["anyOf"] = options
    return out


def _base_schema(kind: str) -> dict[str, Any]:
    schema = model_for(kind).model_json_schema()
    for name in INTERNAL:
        schema["properties"].pop(name, None)
    schema["required"] = [r for r in schema.get("required", []) if r not in INTERNAL]
    return _drop_null(schema)


def _ref(node: Any) -> str | None:
    """The $defs name a property refers to (directly, or in its items/values/options)."""
    if isinstance(node, dict):
        if "$ref" in node:
            return node["$ref"].rsplit("/", 1)[-1]
        for key in ("items", "additionalProperties", "anyOf"):
            found = _ref(node.get(key))
            if found:
                return found
    if isinstance(node, list):
        return next(filter(None, map(_ref, node)), None)
    return None


def _submodel(annotation: Any) -> type[BaseModel] | None:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _submodel(arg)
        if found:
            return found
    return None


def _walk(model: type[BaseModel], node: dict, root: dict, section: str, out: list[Key]) -> None:
    for name, field in model.model_fields.items():
        if name in INTERNAL:
            continue
        prop = node["properties"][name]
        path = f"{section}.{name}" if section else name
        if field.is_required():
            default = REQUIRED
        else:
            default = field.get_default(call_default_factory=True)
        sub, ref = _submodel(field.annotation), _ref(prop)
        child = None
        if sub is not None and ref is not None:
            if "additionalProperties" in prop and _ref(prop["additionalProperties"]):
                child = f"{path}.{ENTRY.get(name, '<name>')}"
            elif "items" in prop:
                child = f"{path}[]"
            else:
                child = path
        out.append(Key(path, section, prop, default, child))
        if child is not None:
            _walk(sub, root["$defs"][ref], root, child, out)


def keys(kind: str, schema: dict | None = None) -> list[Key]:
    """Every key a `kind` file can have, in the schema's order, sections after their parent."""
    root = _base_schema(kind) if schema is None else schema
    out: list[Key] = []
    _walk(model_for(kind), root, root, "", out)
    return out


def _toml_example(text: str) -> Any:
    return tomllib.loads(f"x = {text}")["x"]


@functools.lru_cache(maxsize=None)
def _json_schema(kind: str) -> str:
    root = _base_schema(kind)
    docs = KEY_DOCS[kind]
    for key in keys(kind, root):
        example, description = docs.get(key.path, (None, None))
        if description:
            key.schema["description"] = description
            if key.child is not None:       # the table's own, which editors show inside it
                root["$defs"][_ref(key.schema)]["description"] = description
        if example is not None:
            key.schema["examples"] = [_toml_example(example)]
    root["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    root["title"] = FILES[kind]
    root["description"] = (f"slurmexp {FILES[kind]} (`slurmexp schema {kind}`; every key: "
                           f"{PAGES[kind]})")
    return json.dumps(root, sort_keys=False)


def json_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of a `kind` file, with each key's description and example."""
    model_for(kind)
    return json.loads(_json_schema(kind))


# ----------------------------------------------------------------------------------------
# The Markdown pages
# ----------------------------------------------------------------------------------------


def type_text(node: dict[str, Any]) -> str:
    """A property's JSON Schema in TOML words: "integer >= 1", "array of string", "table"."""
    if "anyOf" in node:
        return " or ".join(type_text(o) for o in node["anyOf"])
    if node.get("type") == ["string", "number", "boolean"]:
        return "value"
    if "$ref" in node:
        return "table"
    if "enum" in node:
        return "one of " + ", ".join(f"`{toml_value(v)}`" for v in node["enum"])
    kinds = node.get("type", "any")
    words = {"object": "table", "number": "number", "integer": "integer", "boolean": "boolean",
             "string": "string", "array": "array"}
    text = " or ".join(words.get(k, k) for k in ([kinds] if isinstance(kinds, str) else kinds))
    if kinds == "array" and "items" in node:
        text = f"array of {_inner(node['items'])}"
    if kinds == "object" and isinstance(node.get("additionalProperties"), dict):
        text = f"table of {_inner(node['additionalProperties'])}"
    if node.get("format") == "path":
        text = "path"
    if node.get("format") == "date-time":
        text = "date-time"
    for word, op in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="),
                     ("exclusiveMaximum", "<")):
        if word in node:
            text += f" {op} {node[word]}"
    if node.get("minItems"):
        text += f" (at least {node['minItems']})"
    if node.get("minLength"):
        text += " (not empty)"
    return text


def _inner(node: dict[str, Any]) -> str:
    text = type_text(node)
    return f"({text})" if " or " in text else text


def _default_text(key: Key) -> str:
    if key.default is REQUIRED:
        return "**required**"
    if key.default is None or key.default is PydanticUndefined:
        return "not set"
    if isinstance(key.default, BaseModel):
        return "(table)"
    if isinstance(key.default, Path):
        return f"`{toml_value(str(key.default))}`"
    if isinstance(key.default, (list, dict)):
        return f"`{json.dumps(key.default, ensure_ascii=False)}`" if key.default else \
            ("`[]`" if isinstance(key.default, list) else "`{}`")
    return f"`{toml_value(key.default)}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _heading(section: str) -> str:
    if not section:
        return "Top level"
    if section.endswith("[]"):
        return f"`[[{section[:-2]}]]`"
    return f"`[{section}]`"


def reference_markdown(kind: str) -> str:
    """The reference page of a `kind` file, as committed in docs/."""
    docs = KEY_DOCS[kind]
    rows: dict[str, list[str]] = {}
    for key in keys(kind):
        example, description = docs.get(key.path, (None, "**undocumented**"))
        name = key.path[len(key.section) + 1:] if key.section else key.path
        example_text = f"`{_cell(f'{name} = {example}')}`" if example is not None else \
            f"see {_heading(key.child or key.path)}"
        rows.setdefault(key.section, []).append(
            f"| `{name}` | {_cell(type_text(key.schema))} | {_cell(_default_text(key))} | "
            f"{example_text} | {_cell(description)} |")
    intro = docs.get("", "")
    out = [f"# {FILES[kind]} reference", "",
           f"Generated from the schema in `{SOURCES[kind]}` by `python3 -m slurmexp.docsgen`; do not",
           "edit by hand. `tests/test_reference.py` fails when this page is out of date or a key has",
           f"no description. `slurmexp schema {kind}` prints the same schema as JSON Schema, for",
           "editors (taplo, Even Better TOML).", "", intro, ""]
    for section, lines in rows.items():
        out += [f"## {_heading(section)}", "", "| key | type | default | example | description |",
                "|---|---|---|---|---|", *lines, ""]
    return "\n".join(out)


def write_pages(repo: Path) -> list[Path]:
    """Rewrite docs/sweep-reference.md and docs/site-reference.md under `repo`."""
    written = []
    for kind in KINDS:
        path = repo / PAGES[kind]
        path.write_text(reference_markdown(kind))
        written.append(path)
    return written


if __name__ == "__main__":
    for page in write_pages(Path(__file__).resolve().parent.parent):
        print(f"wrote {page}")
