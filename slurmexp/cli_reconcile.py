"""The reconcile package's commands: `reconcile` (one pass, or `--loop`), `retry`, `cancel`
and `health`. Each calls one library function; errors become messages in `cli.SlurmexpGroup`."""
from __future__ import annotations

import json
import sys

import click

from slurmexp.cli_common import _ledger
from slurmexp.completion import complete_experiment
from slurmexp.report.refs import resolve_experiment


@click.command()
@click.option("--quiet", "-q", is_flag=True, help="Print nothing unless something needs attention (for cron).")
@click.option("--verbose", "-v", is_flag=True, help="Also list every run's transition and every action.")
@click.option("--dry-run", is_flag=True, help="Say what would change; change nothing, submit nothing.")
@click.option("--grace", "grace_s", type=float, default=300, show_default=True,
              help="Seconds a job may be missing from squeue and sacct before it counts as LOST.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@click.option("--loop", "loop_s", type=float, metavar="SECONDS",
              help="A pass every SECONDS in the foreground until SIGINT/SIGTERM (where there is no cron).")
@click.pass_context
def reconcile(ctx, quiet: bool, verbose: bool, dry_run: bool, grace_s: float, fmt: str,
              loop_s: float | None) -> None:
    """One pass: bring the ledger in line with sacct (one batched query), retry what the
    infrastructure broke, adopt orphans. Exit 3 when Slurm did not answer (nothing changed).

    With --loop SECONDS: passes until SIGINT/SIGTERM (then exit 0), under the same lock as a
    cron pass; a failed pass is printed and the next one runs on time."""
    from slurmexp.reconcile.one_pass import reconcile_pass

    def report(summary, stamp: bool = False) -> None:
        if fmt == "json":
            click.echo(json.dumps(summary.to_dict(), default=str, **({} if stamp else {"indent": 2})))
        elif not quiet or not summary.ok or summary.error or getattr(summary, "flagged", None) \
                or getattr(summary, "warnings", None):
            text = summary.format(verbose=verbose or (dry_run and not quiet))
            click.echo(f"[{summary.started}] {text}" if stamp else text)

    if loop_s is not None:
        from slurmexp.reconcile.loop import check_interval, run_loop

        check_interval(loop_s)            # before the ledger is opened: a usage error first
        n = run_loop(_ledger(ctx, "write"), loop_s, report=lambda s: report(s, stamp=True),
                     dry_run=dry_run, grace_s=grace_s, announce=lambda t: click.echo(t, err=True))
        click.echo(f"reconcile: stopped after {n} pass(es)", err=True)
        return
    summary = reconcile_pass(_ledger(ctx, "write"), dry_run=dry_run, grace_s=grace_s)
    report(summary)
    sys.exit(summary.exit_code)


@click.command()
@click.argument("experiment", shell_complete=complete_experiment)
@click.option("--failed", "which", flag_value="failed", default=True, help="Runs that failed (default).")
@click.option("--lost", "which", flag_value="lost", help="Runs that were lost.")
@click.option("--all", "which", flag_value="all", help="Every run not COMPLETED.")
@click.option("--unsubmitted", "which", flag_value="unsubmitted",
              help="Runs never submitted (sbatch refused their array at launch: a queue limit).")
@click.pass_context
def retry(ctx, experiment: str, which: str) -> None:
    """Resubmit terminal runs of EXPERIMENT now, as new attempts of the same runs (past the
    sweep's max_attempts if asked: it says so)."""
    from slurmexp.reconcile.retry import retry_experiment

    ledger = _ledger(ctx, "write")
    notes: list[str] = []
    subs = retry_experiment(ledger, None, resolve_experiment(ledger, experiment), which,
                            notes=notes)
    for note in notes:
        click.echo(note, err=True)
    click.echo(f"{len(subs)} array job(s) submitted" if subs else "nothing to retry")


@click.command()
@click.argument("experiment", shell_complete=complete_experiment)
@click.option("--reason", default="cancelled by user", show_default=True)
@click.pass_context
def cancel(ctx, experiment: str, reason: str) -> None:
    """scancel EXPERIMENT's queued and running jobs (one call) and mark those runs CANCELLED
    with REASON; tasks that had already ended keep the state sacct gives them."""
    from slurmexp.reconcile.cancel import cancel_experiment

    ledger = _ledger(ctx, "write")
    n = cancel_experiment(ledger, None, resolve_experiment(ledger, experiment), reason)
    click.echo(f"{n} run(s) cancelled")


@click.command()
@click.option("--max-age", "max_age", type=float, default=30, show_default=True,
              help="Minutes since the last successful reconcile pass.")
@click.pass_context
def health(ctx, max_age: float) -> None:
    """Exit 1 when the last reconcile pass failed or is older than --max-age (for monitors)."""
    from slurmexp.reconcile.health import health as check_health

    ok, message = check_health(_ledger(ctx, "read"), max_age)
    click.echo(message)
    sys.exit(0 if ok else 1)
