"""What the `slurmexp` commands share: the ledger and scheduler they use, --site and SWEEP,
tables and JSON on stdout, and checking an --output before the work that fills it.

Kept apart from cli.py so each command module stays small; nothing here imports more than
click (the ledger, rich and the factory's schedulers are imported when first used).
"""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import click

from slurmexp.backends.base import DEFAULT_KIND, scheduler_for
from slurmexp.errors import Problem, SlurmexpError


def _ledger(ctx: click.Context, mode: str):
    """The ledger this command uses, opened once per command in `mode` (ledger.opening):
    "read" for the commands that only look (they never create or change a file), "write" for
    reconcile, retry and cancel, "create" for launch and `cron --install`."""
    from slurmexp.errors import LedgerError
    from slurmexp.ledger import Ledger

    root = ctx.find_root()
    obj = root.obj
    if obj.get("ledger_obj") is None:
        try:
            obj["ledger_obj"] = Ledger(obj.get("ledger_path"), mode=mode)
        except LedgerError as exc:
            exc.problems.append(Problem("", "", f"the path came from {_ledger_origin(root)}"))
            raise
    return obj["ledger_obj"]


def _ledger_origin(root: click.Context) -> str:
    """Where the ledger path came from, for an error about it (a mistyped path shows)."""
    source = root.get_parameter_source("ledger_path")
    if source is click.core.ParameterSource.COMMANDLINE:
        return "--ledger"
    if source is click.core.ParameterSource.ENVIRONMENT:
        return "$SLURMEXP_LEDGER"
    import os

    if os.environ.get("SLURMEXP_HOME"):
        return "$SLURMEXP_HOME (its ledger.db)"
    return "the default (~/.slurmexp/ledger.db; --ledger, $SLURMEXP_LEDGER or $SLURMEXP_HOME move it)"


def _ledger_path(ctx: click.Context):
    """The ledger's path without opening it (for `cron` and for errors)."""
    from slurmexp.ledger.connection import default_ledger_path

    obj = ctx.find_root().obj or {}
    if obj.get("ledger_obj") is not None:
        return obj["ledger_obj"].path
    path = obj.get("ledger_path")
    return Path(path).expanduser() if path else default_ledger_path()


def _fault_error(exc: BaseException, ctx: click.Context) -> SlurmexpError | None:
    """A full disk anywhere (the ledger, a report, run files) is StorageFull, exit 7: what was
    committed before stays and reconcile finishes it. Any other SQLite error met after the
    ledger opened (a page damaged deep in the file, a write refused) is a LedgerError naming
    the file, exit 4. Never a traceback; None for anything else."""
    import sqlite3

    from slurmexp.errors import StorageFull
    from slurmexp.launch.submission import is_storage_full

    if is_storage_full(exc):
        return StorageFull(f"{getattr(exc, 'filename', None) or _ledger_path(ctx)}: {exc}; "
                           "free space (or raise the quota) and run the command again; "
                           "`slurmexp reconcile` finishes anything left half done")
    if isinstance(exc, sqlite3.Error):
        from slurmexp.ledger.opening import ledger_error

        return ledger_error(exc, _ledger_path(ctx))
    if isinstance(exc, OSError) and exc.errno in _FS_FIXES:
        # A folder that is not writable, a read-only file system, a path that vanished: what
        # the system refused and where, with what to do, not a traceback (exit 1). Like a
        # full disk, what was committed before stays for reconcile.
        where = exc.filename or "a file"
        return SlurmexpError(f"{where}: {exc.strerror or exc}", [Problem(
            str(where), "", exc.strerror or str(exc), fix=_FS_FIXES[exc.errno].format(
                where=where, parent=os.path.dirname(str(where)) or "."), check="filesystem")])
    return None


_FS_FIXES = {
    errno.EACCES: "check the permissions of {where} and its folder (ls -ld {parent}), or choose "
                  "another place (output_dir in sweep.toml, --ledger, -o)",
    errno.EPERM: "check the permissions of {where} and its folder (ls -ld {parent})",
    errno.EROFS: "{parent} is on a read-only file system: choose another place (output_dir in "
                 "sweep.toml, --ledger, -o)",
    errno.ENOENT: "{parent} does not exist (or was removed meanwhile): create it, or choose "
                  "another place",
    errno.ENOTDIR: "a part of {where} is a file, not a folder: choose another place",
    errno.EISDIR: "{where} is a folder: give a file's path",
}


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


class OutputStream:
    """A text stream to --output FILE (opened at the first write, so options checked before
    it leave an existing file alone) or, with none, to stdout through click.echo; an OSError
    is the --output error that _write_output gives."""

    def __init__(self, output: str | None) -> None:
        self.output, self.file = output, None

    def write(self, text: str) -> None:
        if self.output is None:
            click.echo(text, nl=False)
            return
        try:
            if self.file is None:
                self.file = Path(self.output).expanduser().open("w", encoding="utf-8")
            self.file.write(text)
        except OSError as exc:
            self.close()
            raise _output_error(self.output, f"{exc.strerror or exc}: {self.output}",
                                "choose a path in a folder you can write to") from None

    def close(self) -> None:
        file, self.file = self.file, None
        if file is not None:
            try:
                file.close()
            except OSError as exc:       # the last buffered write failed (a full disk)
                raise _output_error(self.output, f"{exc.strerror or exc}: {self.output}",
                                    "choose a path in a folder you can write to") from None


def _write_output(output: str, text: str) -> None:
    try:
        Path(output).expanduser().write_text(text)
    except OSError as exc:
        raise _output_error(output, f"{exc.strerror or exc}: {output}",
                            "choose a path in a folder you can write to") from None
