"""`slurmexp init` and `slurmexp schema`: a starter sweep.toml, and the files' JSON Schemas."""
from __future__ import annotations

import json

import click


@click.command()
@click.argument("path", default="sweep.toml", type=click.Path(dir_okay=False))
@click.option("--name", help="The sweep's name (default: the folder's name).")
@click.option("--force", is_flag=True, help="Replace an existing file.")
def init(path: str, name: str | None, force: bool) -> None:
    """Write a commented starter sweep.toml to PATH (default: ./sweep.toml); an existing file
    is kept unless --force."""
    from slurmexp.starter import write_starter

    click.echo(write_starter(path, name=name, force=force))


@click.command()
@click.argument("kind", type=click.Choice(["sweep", "site"]))
def schema(kind: str) -> None:
    """Print the JSON Schema of sweep.toml or site.toml (for taplo / Even Better TOML)."""
    from slurmexp.docsgen import json_schema

    click.echo(json.dumps(json_schema(kind), indent=2))
