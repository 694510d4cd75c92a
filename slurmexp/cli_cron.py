"""`slurmexp cron`: the reconcile pass in the user's crontab, or in Slurm's scrontab."""
from __future__ import annotations

import sys

import click

from slurmexp.cli_common import _ledger, _ledger_path


@click.command()
@click.option("--every", type=int, default=5, show_default=True, help="Minutes between passes.")
@click.option("--install", is_flag=True, help="Install the line in your crontab (replacing an older one).")
@click.option("--remove", is_flag=True, help="Take slurmexp's line out of your crontab (with --scrontab: scrontab).")
@click.option("--scrontab", is_flag=True,
              help="Slurm's own crontab (scrontab, ScronParameters=enable) instead of cron: install it there.")
@click.option("--scron-option", "scron_options", multiple=True, metavar="OPT",
              help="With --scrontab: an sbatch option for the pass's job, e.g. --partition=debug (repeatable).")
@click.pass_context
def cron(ctx, every: int, install: bool, remove: bool, scrontab: bool, scron_options: tuple[str, ...]) -> None:
    """Print (or --install, --remove) the crontab line that runs `slurmexp reconcile` every N
    minutes. With --scrontab the pass is installed as an entry of Slurm's scrontab (a batch job
    every N minutes; its output in reconcile.log beside the ledger); with --scrontab --remove
    it is taken out again. Other entries of either table are kept."""
    import shutil

    from slurmexp.reconcile import cron as cron_mod

    # The pass needs the ledger: installing it makes one if none is there yet (and refuses a
    # damaged one); printing or removing the line opens nothing.
    path = _ledger(ctx, "create").path if install or (scrontab and not remove) else _ledger_path(ctx)
    exe = shutil.which("slurmexp") or [sys.executable, "-m", "slurmexp"]
    if scron_options and not scrontab:
        raise click.UsageError("--scron-option needs --scrontab")
    if scrontab:
        from slurmexp.reconcile import scron

        if remove:
            click.echo("removed slurmexp's scrontab entry" if scron.remove_scron() else "no slurmexp scrontab entry")
        else:
            click.echo(scron.install_scron(scron.scron_entry(every, path, exe, options=scron_options)),
                       nl=False)
            click.echo(f"installed: Slurm runs `slurmexp reconcile` every {every} minute(s) as job "
                       f"{scron.SCRON_JOB_NAME}", err=True)
    elif remove:
        click.echo("removed slurmexp's crontab line" if cron_mod.remove_cron() else "no slurmexp crontab line")
    elif install:
        click.echo(cron_mod.install_cron(cron_mod.cron_line(every, path, exe)))
    else:
        click.echo(cron_mod.cron_line(every, path, exe))
