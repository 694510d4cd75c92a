"""`slurmexp archive`, `slurmexp rm` and `slurmexp diff`: hiding, removing and comparing experiments."""
from __future__ import annotations

import click

from slurmexp.cli_common import _emit, _ledger
from slurmexp.completion import complete_experiment
from slurmexp.report.refs import resolve_experiment


@click.command()
@click.argument("experiment", shell_complete=complete_experiment)
@click.option("--undo", is_flag=True, help="Show it in `slurmexp status` again.")
@click.pass_context
def archive(ctx, experiment: str, undo: bool) -> None:
    """Hide EXPERIMENT from `slurmexp status` (kept whole; `status --archived` lists it)."""
    from slurmexp.manage import archive_experiment

    ledger = _ledger(ctx, "write")
    click.echo(archive_experiment(ledger, resolve_experiment(ledger, experiment), undo))


@click.command()
@click.argument("experiment", shell_complete=complete_experiment)
@click.option("--files", is_flag=True, help="Also delete the experiment's folder (runs, logs, scripts).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask.")
@click.pass_context
def rm(ctx, experiment: str, files: bool, yes: bool) -> None:
    """Delete EXPERIMENT from the ledger (refused while it has active runs); --files: its folder too."""
    from slurmexp.manage import remove_experiment

    ledger = _ledger(ctx, "write")
    exp_id = resolve_experiment(ledger, experiment)
    if not yes:
        click.confirm(f"remove {exp_id} from {ledger.path}{' and delete its folder' if files else ''}?",
                      abort=True, err=True)
    click.echo(remove_experiment(ledger, exp_id, files=files))


@click.command()
@click.argument("experiment_a", shell_complete=complete_experiment)
@click.argument("experiment_b", shell_complete=complete_experiment)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@click.pass_context
def diff(ctx, experiment_a: str, experiment_b: str, fmt: str) -> None:
    """What changed from EXPERIMENT_A to EXPERIMENT_B: sweep, site, resources, provenance."""
    from slurmexp.report.diff import diff_experiments, format_diff

    ledger = _ledger(ctx, "read")
    data = diff_experiments(ledger, resolve_experiment(ledger, experiment_a), resolve_experiment(ledger, experiment_b))
    _emit(data, fmt, lambda d: click.echo(format_diff(d), nl=False))
