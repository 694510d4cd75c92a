"""What the `slurmexp` commands share: the ledger and scheduler they use, --site and SWEEP,
tables and JSON on stdout, and checking an --output before the work that fills it.

Kept apart from cli.py so each command module stays small; nothing here imports more than
click (the ledger, rich and the factory's schedulers are imported when first used).
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from slurmexp.backends.base import DEFAULT_KIND, scheduler_for
from slurmexp.errors import Problem, SlurmexpError


def _ledger(ctx: click.Context):
    from slurmexp.ledger import Ledger

    obj = ctx.find_root().obj
    if obj.get("ledger_obj") is None:
        obj["ledger_obj"] = Ledger(obj.get("ledger_path"))
    return obj["ledger_obj"]


def _scheduler(kind: str = DEFAULT_KIND, cluster: str | None = None, site=None):
    """The scheduler of backend `kind` for `cluster` (None: the default cluster), from the one
    factory (over SSH when `site` has a `[remote]` table). Commands about an experiment pass
    none: the library builds it from the experiment's own row (backend and cluster)."""
    return scheduler_for(kind, cluster, site=site)


def _emit(data, fmt: str, table) -> None:
    if fmt == "json":
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        table(data)


def _rich_table(title: str, columns: list[str], rows: list[list]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*["" if v is None else str(v) for v in r])
    Console().print(t)


site_option = click.option("--site", "site_path", type=click.Path(dir_okay=False),
                           help="site.toml (default: $SLURMEXP_SITE, beside the sweep, cwd, $SLURMEXP_HOME)")
sweep_argument = click.argument("sweep", type=click.Path(exists=True, dir_okay=False))


def _output_error(output: str, why: str, fix: str) -> SlurmexpError:
    return SlurmexpError(f"cannot write {output}", [Problem("", "--output", why, fix)])


def _check_output(output: str) -> None:
    """Refuse an --output that cannot be written before doing the work that fills it."""
    import shlex

    folder = Path(output).expanduser().parent
    if not folder.is_dir():
        raise _output_error(output, f"folder {folder} does not exist",
                            f"create it first: mkdir -p {shlex.quote(str(folder))}")
    if Path(output).expanduser().is_dir():
        raise _output_error(output, f"{output} is a folder",
                            f"give a file name, e.g. --output {shlex.quote(str(Path(output) / 'report.txt'))}")


def _write_output(output: str, text: str) -> None:
    try:
        Path(output).expanduser().write_text(text)
    except OSError as exc:
        raise _output_error(output, f"{exc.strerror or exc}: {output}",
                            "choose a path in a folder you can write to") from None
