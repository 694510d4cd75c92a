"""The `slurmexp` command: thin click commands, each calling one library function.

Library errors (SlurmexpError and subclasses) become messages and exit codes in exactly one
place, `SlurmexpGroup.invoke`, so every command reports problems the same way: file, key,
what is wrong and what to do next. Heavy imports (pandas, the Slurm backend) happen inside
the commands that need them, so `slurmexp --help` and `slurmexp status` stay fast.
"""
from __future__ import annotations

import json
import sys
import warnings

import click

from slurmexp import __version__
from slurmexp.backends.base import DEFAULT_KIND, KINDS, backend_kind
from slurmexp.cli_common import (
    _check_output,
    _emit,
    _ledger,
    _scheduler,
    _write_output,
    site_option,
    sweep_argument,
)
from slurmexp.cli_site import site
from slurmexp.errors import SlurmexpError, SlurmexpWarning
from slurmexp.report.refs import resolve_experiment


class SlurmexpGroup(click.Group):
    def invoke(self, ctx: click.Context):
        with warnings.catch_warnings():
            warnings.simplefilter("always", SlurmexpWarning)
            shown = warnings.showwarning

            def show(message, category, *args, **kwargs):
                if issubclass(category, SlurmexpWarning):
                    click.echo(f"warning: {message}", err=True)
                else:
                    shown(message, category, *args, **kwargs)

            warnings.showwarning = show
            try:
                return super().invoke(ctx)
            except SlurmexpError as exc:
                click.echo(f"error: {exc.format()}", err=True)
                ctx.exit(exc.exit_code)


@click.group(cls=SlurmexpGroup)
@click.option("--ledger", "ledger_path", envvar="SLURMEXP_LEDGER", type=click.Path(dir_okay=False),
              help="Ledger file (default: $SLURMEXP_HOME/ledger.db or ~/.slurmexp/ledger.db).")
@click.version_option(__version__, prog_name="slurmexp")
@click.pass_context
def main(ctx: click.Context, ledger_path: str | None) -> None:
    """Run experiments on Slurm unattended: validate, place, submit, track, reconcile, report.

    \b
    Exit codes:
      0  done
      1  a command failed or refused its input (report options, --output); health: unhealthy
      2  the sweep or site file has problems, or validation refused it: nothing submitted
      3  a Slurm daemon did not answer, or a [remote] cluster was unreachable: nothing decided
    """
    ctx.ensure_object(dict)
    ctx.obj["ledger_path"] = ledger_path


# ----------------------------------------------------------------------------------------
# Before launch
# ----------------------------------------------------------------------------------------


@main.command()
@sweep_argument
@site_option
@click.option("--offline", is_flag=True, help="Only the static checks (no cluster queries).")
@click.option("--fresh", is_flag=True, help="Ask sacctmgr again rather than reuse QOS/associations read minutes ago.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def validate(sweep: str, site_path: str | None, offline: bool, fresh: bool, fmt: str) -> None:
    """Check SWEEP against site.toml and the live cluster; exit 2 on any problem."""
    from slurmexp.launch.launcher import check, prepare

    prep = prepare(sweep, site_path)
    report = check(prep, None if offline else _scheduler(cluster=prep.site.cluster, site=prep.site), fresh=fresh)
    if fmt == "json":
        click.echo(json.dumps({"ok": report.ok, "problems": [p.__dict__ for p in report.problems],
                               "skipped": report.skipped, "checked": report.checked}, indent=2))
    else:
        for p in report.problems:
            click.echo(f"problem: {p.format()}", err=True)
        for s in report.skipped:
            click.echo(f"skipped: {s}", err=True)
        if report.ok:
            click.echo(f"ok: {len(prep.plan.runs)} runs in {len(prep.plan.chunks)} array(s); "
                       f"checked {', '.join(report.checked)}")
    if not report.ok:
        sys.exit(2)


@main.command()
@sweep_argument
@site_option
def render(sweep: str, site_path: str | None) -> None:
    """Print the array plan and the exact sbatch scripts SWEEP would submit."""
    from slurmexp.launch.launcher import dry_run_text, prepare

    click.echo(dry_run_text(prepare(sweep, site_path)))


@main.command()
@sweep_argument
@site_option
def explain(sweep: str, site_path: str | None) -> None:
    """Say where SWEEP's runs would go, why, and why the other partitions were excluded."""
    from slurmexp.launch.launcher import dry_run_text, prepare

    click.echo(dry_run_text(prepare(sweep, site_path), scripts=False))


# ----------------------------------------------------------------------------------------
# Launch and follow
# ----------------------------------------------------------------------------------------


@main.command()
@sweep_argument
@site_option
@click.option("--backend", type=click.Choice(list(KINDS)), default=DEFAULT_KIND, show_default=True)
@click.option("--dry-run", is_flag=True, help="Print the plan and scripts; submit nothing.")
@click.option("--new", is_flag=True, help="Launch again although this sweep was launched before.")
@click.option("--max-parallel", type=int, help="Local backend: tasks at once (default: the throttle or CPUs).")
@click.option("--fresh", is_flag=True, help="Ask sacctmgr again rather than reuse QOS/associations read minutes ago.")
@click.pass_context
def launch(ctx, sweep: str, site_path: str | None, backend: str, dry_run: bool, new: bool,
           max_parallel: int | None, fresh: bool) -> None:
    """Validate SWEEP, submit it as job arrays and record every run in the ledger."""
    from slurmexp.launch import launcher as launch_mod

    if dry_run:
        prep = launch_mod.prepare(sweep, site_path)
        kind = backend_kind(backend, key="--backend")
        live = _scheduler(kind.kind, prep.site.cluster, site=prep.site) if kind.live_checks else None
        report = launch_mod.check(prep, live, fresh=fresh)
        click.echo(launch_mod.dry_run_text(prep))
        for s in report.skipped:
            click.echo(f"skipped: {s}", err=True)
        if not report.ok:
            raise SlurmexpError_from(report, prep)
        return
    result = launch_mod.launch(sweep, site_path, backend=backend, ledger=_ledger(ctx), new=new,
                               max_parallel=max_parallel, fresh=fresh)
    if result.message:
        click.echo(result.message, err=True)
    if result.submitted and result.job_ids:
        click.echo(submitted_line(_ledger(ctx), result.exp_id, result.job_ids), err=True)
    click.echo(result.exp_id)


def submitted_line(ledger, exp_id: str, job_ids: list[str]) -> str:
    """"submitted job 8 (8 tasks in 1 array)": a bare "submitted: 8" read as a count."""
    subs = [s for s in ledger.submissions(exp_id) if s["job_id"] in job_ids]
    tasks = sum(s["n_tasks"] or 0 for s in subs)
    arrays = len(subs) or len(job_ids)
    jobs = f"job {job_ids[0]}" if len(job_ids) == 1 else f"jobs {', '.join(job_ids)}"
    return (f"submitted {jobs} ({tasks:,} task{'s' if tasks != 1 else ''} in {arrays} "
            f"array{'s' if arrays != 1 else ''})")


def SlurmexpError_from(report, prep):  # noqa: N802 - reads like the exception it builds
    from slurmexp.errors import ValidationError

    return ValidationError(f"{prep.sweep.path}: {len(report.problems)} problem(s); nothing would be submitted",
                           report.problems)


@main.command()
@click.argument("experiment", required=False)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def status(ctx, experiment: str | None, fmt: str) -> None:
    """Experiments and their runs' states, as the ledger has them (fitted to the terminal).

    EXPERIMENT: an id, a unique prefix of one, or a sweep's name (its newest experiment)."""
    from slurmexp.report.status import experiment_summaries, format_experiments, format_runs, run_statuses

    ledger = _ledger(ctx)
    if experiment is None:
        _emit(experiment_summaries(ledger), fmt, lambda d: click.echo(format_experiments(d), nl=False))
        return
    exp_id = resolve_experiment(ledger, experiment)
    _emit(run_statuses(ledger, exp_id), fmt, lambda d: click.echo(format_runs(exp_id, d), nl=False))


@main.command()
@click.option("--quiet", "-q", is_flag=True, help="Print nothing unless something needs attention (for cron).")
@click.option("--verbose", "-v", is_flag=True, help="Also list every run's transition and every action.")
@click.option("--dry-run", is_flag=True, help="Say what would change; change nothing, submit nothing.")
@click.option("--grace", "grace_s", type=float, default=300, show_default=True,
              help="Seconds a job may be missing from squeue and sacct before it counts as LOST.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@click.pass_context
def reconcile(ctx, quiet: bool, verbose: bool, dry_run: bool, grace_s: float, fmt: str) -> None:
    """One pass: bring the ledger in line with sacct (one batched query), retry what the
    infrastructure broke, adopt orphans. Exit 3 when Slurm did not answer (nothing changed)."""
    from slurmexp.reconcile.one_pass import reconcile_pass

    summary = reconcile_pass(_ledger(ctx), dry_run=dry_run, grace_s=grace_s)
    if fmt == "json":
        click.echo(json.dumps(summary.to_dict(), indent=2, default=str))
    elif not quiet or not summary.ok or summary.error or getattr(summary, "flagged", None) \
            or getattr(summary, "warnings", None):
        click.echo(summary.format(verbose=verbose or (dry_run and not quiet)))
    sys.exit(summary.exit_code)


@main.command()
@click.argument("experiment")
@click.option("--failed", "which", flag_value="failed", default=True, help="Runs that failed (default).")
@click.option("--lost", "which", flag_value="lost", help="Runs that were lost.")
@click.option("--all", "which", flag_value="all", help="Every run not COMPLETED.")
@click.pass_context
def retry(ctx, experiment: str, which: str) -> None:
    """Resubmit terminal runs of EXPERIMENT now, as new attempts of the same runs."""
    from slurmexp.reconcile.resubmit import retry_experiment

    ledger = _ledger(ctx)
    subs = retry_experiment(ledger, None, resolve_experiment(ledger, experiment), which)
    click.echo(f"{len(subs)} array job(s) submitted" if subs else "nothing to retry")


@main.command()
@click.argument("experiment")
@click.option("--reason", default="cancelled by user", show_default=True)
@click.pass_context
def cancel(ctx, experiment: str, reason: str) -> None:
    """scancel every job of EXPERIMENT (one call) and mark its runs CANCELLED with REASON."""
    from slurmexp.reconcile.cancel import cancel_experiment

    ledger = _ledger(ctx)
    n = cancel_experiment(ledger, None, resolve_experiment(ledger, experiment), reason)
    click.echo(f"{n} run(s) cancelled")


@main.command()
@click.option("--every", type=int, default=5, show_default=True, help="Minutes between passes.")
@click.option("--install", is_flag=True, help="Install the line in your crontab (replacing an older one).")
@click.pass_context
def cron(ctx, every: int, install: bool) -> None:
    """Print (or --install) the crontab line that runs `slurmexp reconcile` every N minutes."""
    import shutil

    from slurmexp.reconcile.cron import cron_line, install_cron

    ledger = _ledger(ctx)
    exe = shutil.which("slurmexp") or [sys.executable, "-m", "slurmexp"]
    line = cron_line(every, ledger.path, exe)
    if install:
        click.echo(install_cron(line))
    else:
        click.echo(line)


@main.command()
@click.option("--max-age", "max_age", type=float, default=30, show_default=True,
              help="Minutes since the last successful reconcile pass.")
@click.pass_context
def health(ctx, max_age: float) -> None:
    """Exit 1 when the last reconcile pass failed or is older than --max-age (for monitors)."""
    from slurmexp.reconcile.health import health as check_health

    ok, message = check_health(_ledger(ctx), max_age)
    click.echo(message)
    sys.exit(0 if ok else 1)


# ----------------------------------------------------------------------------------------
# Reports and runs
# ----------------------------------------------------------------------------------------


@main.command()
@click.argument("experiments", nargs=-1)
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "markdown", "html"]),
              default="table", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write to FILE instead of stdout.")
@click.option("--by", help="Aggregate metrics over the other parameters, grouped by PARAM[,PARAM].")
@click.option("--best", metavar="METRIC", help="Show the best runs by METRIC.")
@click.option("--min/--max", "minimize", default=None, help="Direction for --best (default: guessed from the name).")
@click.option("--columns", metavar="COL[,COL]",
              help="Table/Markdown: the run table's columns (default: what fits the terminal).")
@click.option("--excel-safe", is_flag=True,
              help="CSV for spreadsheets: prefix text cells starting with = + - @ (formulas) with '.")
@click.pass_context
def report(ctx, experiments, fmt: str, output: str | None, by: str | None, best: str | None,
           minimize: bool | None, columns: str | None, excel_safe: bool) -> None:
    """Tables of runs, states, accounting and metrics (default: every experiment).

    EXPERIMENTS: ids, unique prefixes, or sweep names (their newest experiment). The table
    fits the terminal ($COLUMNS) and names the columns it left out; CSV, JSON and HTML have
    every column."""
    from slurmexp.report.build import build_report, render_report

    if minimize is not None and not best:
        raise click.UsageError("--min/--max need --best METRIC")
    if output:
        _check_output(output)
    text = render_report(build_report(_ledger(ctx), list(experiments) or None, by=by, best=best,
                                      minimize=minimize), fmt, excel_safe=excel_safe,
                         columns=columns)
    if output:
        _write_output(output, text)
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


@main.command()
@click.argument("run")
@click.pass_context
def show(ctx, run: str) -> None:
    """A run's provenance, attempts, script and log paths (RUN or EXPERIMENT:RUN, prefixes ok)."""
    from slurmexp.report.show import format_run, show_run

    click.echo(format_run(show_run(_ledger(ctx), run)), nl=False)


@main.command()
@click.argument("run")
@click.option("--stderr", is_flag=True, help="The standard error instead of the output.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing as the run writes.")
@click.pass_context
def logs(ctx, run: str, stderr: bool, follow: bool) -> None:
    """Print the newest attempt's output of RUN."""
    from slurmexp.report.remote_logs import remote_logs
    from slurmexp.report.show import ended_marker, log_path
    from slurmexp.report.show import follow as follow_file

    over_ssh = remote_logs(_ledger(ctx), run, stderr, follow)     # launched with [remote]
    if over_ssh is not None:
        for text in over_ssh:
            click.echo(text, nl=False)
        return
    path = log_path(_ledger(ctx), run, stderr, must_exist=not follow)
    if follow:
        for text in follow_file(path, stop=ended_marker(path)):
            click.echo(text, nl=False)
    else:
        click.echo(path.read_text(errors="replace"), nl=False)


main.add_command(site)


if __name__ == "__main__":
    main()
