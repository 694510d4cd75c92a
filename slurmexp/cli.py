"""The `slurmexp` command: thin click commands, each calling one library function.

Library errors (SlurmexpError and subclasses) become messages and exit codes in exactly one
place, `SlurmexpGroup.invoke`, so every command reports problems the same way: file, key,
what is wrong and what to do next. Heavy imports (pandas, the Slurm backend) happen inside
the commands that need them, so `slurmexp --help` and `slurmexp status` stay fast.
"""
from __future__ import annotations

import gc
import json
import sqlite3
import sys
import warnings

import click

from slurmexp import __version__
from slurmexp.backends.base import DEFAULT_KIND, KINDS, backend_kind
from slurmexp.cli_common import (
    OutputStream,
    _check_output,
    _emit,
    _fault_error,
    _ledger,
    _scheduler,
    site_option,
    sweep_argument,
)
from slurmexp.cli_cron import cron
from slurmexp.cli_docs import init, schema
from slurmexp.cli_manage import archive, diff, rm
from slurmexp.cli_reconcile import cancel, health, reconcile, retry
from slurmexp.cli_site import site
from slurmexp.completion import complete_experiment, complete_run
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
            except (OSError, sqlite3.Error) as exc:
                error = _fault_error(exc, ctx)
                if error is None:
                    raise
                click.echo(f"error: {error.format()}", err=True)
                ctx.exit(error.exit_code)


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
      1  a command failed or refused its input (report options, --output); health: unhealthy;
         sbatch refused the first array (a queue limit: MaxJobCount, MaxSubmitJobs)
      2  the sweep or site file has problems, or validation refused it: nothing submitted
      3  a Slurm daemon did not answer, or a [remote] cluster was unreachable: nothing decided
      4  the ledger cannot be used (missing, empty, damaged, not a ledger, read-only for a
         command that writes, newer schema): nothing changed; the message says the fix
      5  launch/retry: part submitted, Slurm refused the rest; the runs not submitted are
         named, `slurmexp retry EXP --unsubmitted` submits them
      6  launch/retry: sbatch did not answer for an array; `slurmexp reconcile` adopts or
         submits it (never twice)
      7  a file or the ledger could not be written for want of space (disk full, quota)
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
    """Check SWEEP against site.toml and the live cluster; exit 2 on any problem, 3 when Slurm
    did not answer the live checks."""
    from slurmexp.launch.launcher import check, prepare

    prep = prepare(sweep, site_path)
    report = check(prep, None if offline else _scheduler(cluster=prep.site.cluster, site=prep.site), fresh=fresh)
    if fmt == "json":
        click.echo(json.dumps({"ok": report.ok, "problems": [p.__dict__ for p in report.problems],
                               "skipped": report.skipped, "checked": report.checked,
                               "unavailable": report.unavailable and report.unavailable.message}, indent=2))
    else:
        for p in report.problems:
            click.echo(f"problem: {p.format()}", err=True)
        for s in report.skipped:
            click.echo(f"skipped: {s}", err=True)
        if report.ok and report.unavailable is None:
            click.echo(f"ok: {len(prep.plan.runs)} runs in {len(prep.plan.chunks)} array(s); "
                       f"checked {', '.join(report.checked)}")
    if not report.ok:
        sys.exit(2)
    if report.unavailable is not None:     # the static checks passed; the live ones could not run
        raise report.unavailable


_backend_for_id = click.option(
    "--backend", type=click.Choice(list(KINDS)), default=DEFAULT_KIND, show_default=True,
    help="The backend it would be launched with (part of the experiment id).")


@main.command()
@sweep_argument
@site_option
@_backend_for_id
@click.pass_context
def render(ctx, sweep: str, site_path: str | None, backend: str) -> None:
    """Print the array plan and the exact sbatch scripts SWEEP would submit."""
    from slurmexp.launch.launcher import dry_run_text, prepare, with_depends

    prep = prepare(sweep, site_path, backend)
    click.echo(dry_run_text(with_depends(prep, lambda: _ledger(ctx, "read"))))


@main.command()
@sweep_argument
@site_option
@_backend_for_id
@click.pass_context
def explain(ctx, sweep: str, site_path: str | None, backend: str) -> None:
    """Say where SWEEP's runs would go, why, why the other partitions were excluded, and
    which experiments it waits for ([depends])."""
    from slurmexp.launch.launcher import dry_run_text, prepare, with_depends

    prep = prepare(sweep, site_path, backend)
    click.echo(dry_run_text(with_depends(prep, lambda: _ledger(ctx, "read")), scripts=False))


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
@click.option("--tag", "tags", multiple=True, callback=lambda _c, _p, v: _check_tags(v),
              help="Tag the experiment (repeatable; with [meta] tags); `status --tag` filters on it.")
@click.option("--skip-completed", is_flag=True,
              help="Reuse runs that COMPLETED in another experiment with the same command and resources.")
@click.option("--note", help="A note on the experiment (instead of [meta] description), shown by status --format json.")
@click.pass_context
def launch(ctx, sweep: str, site_path: str | None, backend: str, dry_run: bool, new: bool,
           max_parallel: int | None, fresh: bool, tags: tuple[str, ...], note: str | None,
           skip_completed: bool) -> None:
    """Validate SWEEP, submit it as job arrays and record every run in the ledger."""
    from slurmexp.launch import launcher as launch_mod

    # What the imports made (pydantic's models, jinja2, click) lives as long as the process:
    # frozen, the collector's full passes, triggered by a big sweep's objects, skip it.
    gc.freeze()
    if dry_run:
        prep = launch_mod.with_depends(launch_mod.prepare(sweep, site_path, backend), lambda: _ledger(ctx, "read"))
        if skip_completed:        # the plan as launch would submit it
            from slurmexp.launch.reuse import plan_reuse

            total, prep = len(prep.plan.runs), plan_reuse(prep, _ledger(ctx, "read"), skip=True)
            click.echo(prep.message(total) or "no run completed before: all would run", err=True)
            prep = prep.prep
        kind = backend_kind(backend, key="--backend")
        live = _scheduler(kind.kind, prep.site.cluster, site=prep.site) if kind.live_checks else None
        report = launch_mod.check(prep, live, fresh=fresh)
        click.echo(launch_mod.dry_run_text(prep))
        for s in report.skipped:
            click.echo(f"skipped: {s}", err=True)
        if not report.ok:
            raise SlurmexpError_from(report, prep)
        return
    from slurmexp.errors import PartlySubmitted, SlurmUnavailable, SubmissionUnknown

    ledger = _ledger(ctx, "create")
    if ledger.created:
        click.echo(f"new ledger: {ledger.path}", err=True)
    result = launch_mod.launch(sweep, site_path, backend=backend, ledger=ledger, new=new,
                               max_parallel=max_parallel, fresh=fresh, tags=tags, note=note,
                               skip_completed=skip_completed)
    if result.reuse_message:
        click.echo(result.reuse_message, err=True)
    if result.submitted and result.job_ids:
        click.echo(submitted_line(_ledger(ctx, "create"), result.exp_id, result.job_ids), err=True)
    click.echo(result.exp_id)
    # Not all of it is in the queue: never exit 0 (a script would take the sweep for launched).
    if result.unsubmitted:
        raise PartlySubmitted(result.message)
    if result.pending_intents:
        if result.unanswered is not None and not result.unanswered.timed_out:
            raise SlurmUnavailable(result.message)      # sbatch said it reached no controller
        raise SubmissionUnknown(result.message)
    if result.message:
        click.echo(result.message, err=True)


def _check_tags(tags: tuple[str, ...]) -> tuple[str, ...]:
    from slurmexp.sweep.spec import check_tag

    for tag in tags:
        problem = check_tag(tag)
        if problem:
            raise click.BadParameter(problem, param_hint="--tag")
    return tags


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
@click.argument("experiment", required=False, shell_complete=complete_experiment)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.option("--all", "all_runs", is_flag=True,
              help="With EXPERIMENT: list every run (the table stops after the first 200; JSON has all).")
@click.option("--refresh", is_flag=True, help="Run one reconcile pass first, so the states are Slurm's of now.")
@click.option("--state", "states", multiple=True, help="Only experiments in STATE (repeatable, or A,B).")
@click.option("--since", help="Only experiments created since an age (30m, 12h, 2d, 1w) or a date (2026-12-01).")
@click.option("--name", "names", multiple=True, metavar="PATTERN", help="Only names or ids matching, e.g. 'lr-*'.")
@click.option("--tag", "tags", multiple=True, help="Only experiments with TAG (repeatable: every one).")
@click.option("--archived", is_flag=True, help="Also the experiments `slurmexp archive` hid.")
@click.pass_context
def status(ctx, experiment: str | None, fmt: str, all_runs: bool, refresh: bool, states: tuple[str, ...],
           since: str | None, names: tuple[str, ...], tags: tuple[str, ...], archived: bool) -> None:
    """Experiments and their runs' states, as the ledger has them (fitted to the terminal).

    EXPERIMENT: an id, a unique prefix of one, or a sweep's name (its newest experiment).
    Without --refresh (or a reconcile pass from cron, scrontab or `reconcile --loop`) the
    states are those of the last pass."""
    from slurmexp.report import status as st
    from slurmexp.report.filters import ExperimentFilter

    keep = ExperimentFilter.from_options(states, since, names, tags, archived)
    ledger = _ledger(ctx, "write" if refresh else "read")
    if refresh:
        from slurmexp.reconcile.one_pass import refresh_pass

        for line in refresh_pass(ledger):
            click.echo(f"warning: {line}", err=True)
    if experiment is None:
        if fmt == "json":
            _emit(st.experiment_summaries(ledger, keep), fmt, None)
        else:
            click.echo(st.experiments_text(ledger, keep), nl=False)
        return
    if keep:
        raise click.UsageError("--state, --since, --name and --tag choose experiments: give them without EXPERIMENT")
    exp_id = resolve_experiment(ledger, experiment)
    if fmt == "json":
        _emit(st.run_statuses(ledger, exp_id), fmt, None)
    else:
        click.echo(st.runs_text(ledger, exp_id, all_runs=all_runs), nl=False)


# ----------------------------------------------------------------------------------------
# Reports and runs
# ----------------------------------------------------------------------------------------


@main.command()
@click.argument("experiments", nargs=-1, shell_complete=complete_experiment)
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
@click.option("--metric", "metrics", metavar="NAME", multiple=True,
              help="HTML: plot only this metric (repeatable, or NAME,NAME; default: every metric).")
@click.pass_context
def report(ctx, experiments, fmt: str, output: str | None, by: str | None, best: str | None,
           minimize: bool | None, columns: str | None, excel_safe: bool, metrics: tuple[str, ...]) -> None:
    """Tables of runs, states, accounting and metrics (default: every experiment).

    EXPERIMENTS: ids, unique prefixes, or sweep names (their newest experiment). The table
    fits the terminal ($COLUMNS) and names the columns it left out; CSV, JSON and HTML have
    every column."""
    if minimize is not None and not best:
        raise click.UsageError("--min/--max need --best METRIC")
    if output:
        _check_output(output)
    from slurmexp.report.write import write_report

    ledger = _ledger(ctx, "read")
    stream = OutputStream(output)       # CSV goes out in chunks of rows as they are made
    try:
        write_report(ledger, list(experiments) or None, fmt, stream, by=by, best=best,
                     minimize=minimize, columns=columns, excel_safe=excel_safe, metrics=metrics)
    finally:
        stream.close()
    if output:
        click.echo(f"wrote {output}", err=True)


@main.command()
@click.argument("run", shell_complete=complete_run)
@click.pass_context
def show(ctx, run: str) -> None:
    """A run's provenance, attempts, script and log paths (RUN or EXPERIMENT:RUN, prefixes ok)."""
    from slurmexp.report.show import format_run, show_run

    click.echo(format_run(show_run(_ledger(ctx, "read"), run)), nl=False)


@main.command()
@click.argument("run", shell_complete=complete_run)
@click.option("--stderr", is_flag=True, help="The standard error instead of the output.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing as the run writes.")
@click.pass_context
def logs(ctx, run: str, stderr: bool, follow: bool) -> None:
    """Print the newest attempt's output of RUN."""
    from slurmexp.report.remote_logs import remote_logs
    from slurmexp.report.show import ended_marker, log_path
    from slurmexp.report.show import follow as follow_file

    over_ssh = remote_logs(_ledger(ctx, "read"), run, stderr, follow)     # launched with [remote]
    if over_ssh is not None:
        for text in over_ssh:
            click.echo(text, nl=False)
        return
    path = log_path(_ledger(ctx, "read"), run, stderr, must_exist=not follow)
    if follow:
        for text in follow_file(path, stop=ended_marker(path)):
            click.echo(text, nl=False)
    else:
        click.echo(path.read_text(errors="replace"), nl=False)


main.add_command(site)
for _command in (reconcile, retry, cancel, health):
    main.add_command(_command)
main.add_command(cron)
main.add_command(archive)
main.add_command(rm)
main.add_command(diff)
main.add_command(init)
main.add_command(schema)


if __name__ == "__main__":
    main()
