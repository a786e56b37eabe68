"""The Typer application: one module per command group, each a thin wrapper over the library."""

from __future__ import annotations

import signal
from typing import Annotated

import typer

from robustdeq import distributed
from robustdeq.cli import data
from robustdeq.cli.bench import bench
from robustdeq.cli.challenge import challenge
from robustdeq.cli.common import Command, console, print_error
from robustdeq.cli.evaluate import evaluate
from robustdeq.cli.fidelity import fidelity
from robustdeq.cli.leaderboard import leaderboard
from robustdeq.cli.report import report
from robustdeq.cli.site import site
from robustdeq.cli.submit import submit
from robustdeq.cli.sweep import sweep
from robustdeq.cli.train import train
from robustdeq.cli.zoo import zoo
from robustdeq.errors import RobustdeqError
from robustdeq.version import __version__

app = typer.Typer(
    name="robustdeq",
    help="Adversarial-robustness benchmark for deep equilibrium (DEQ) and weight-tied models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Help texts are printed verbatim: rich markup would eat "[eps_sweep]" or "[train]", and rich's
    # option table cuts long help texts short on an 80-column terminal.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},  # inherited by every subcommand
)


def _print_version(value: bool) -> None:
    if value:
        print(f"robustdeq {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Adversarial-robustness benchmark for deep equilibrium (DEQ) and weight-tied models."""


for command in (bench, train, evaluate, leaderboard, report, site, submit, sweep, zoo, fidelity, challenge):
    app.command(cls=Command)(command)
app.add_typer(data.app, name="data")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    """The ``robustdeq`` command; under torchrun it joins the process group first (rank 0 prints)."""
    try:
        distributed.init()
    except RobustdeqError as exc:
        print_error(exc)
        raise SystemExit(1) from None
    console.quiet = not distributed.is_main()
    # A kill (SIGTERM: `timeout`, a batch scheduler) stops a command as Ctrl-C does: workers terminated,
    # state files kept for resumption, one line on stderr, no leaked semaphores reported at exit.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        app()
    finally:
        distributed.shutdown()
