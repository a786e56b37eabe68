"""The Typer application: one module per command group, each a thin wrapper over the library."""

from __future__ import annotations

import typer

from robustdeq import distributed
from robustdeq.cli import data
from robustdeq.cli.bench import bench
from robustdeq.cli.common import console, print_error
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

app = typer.Typer(
    name="robustdeq",
    help="Adversarial-robustness benchmark for deep equilibrium (DEQ) and weight-tied models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command()(bench)
app.command()(train)
app.command()(evaluate)
app.command()(leaderboard)
app.command()(report)
app.command()(site)
app.command()(submit)
app.command()(sweep)
app.command()(zoo)
app.command()(fidelity)
app.add_typer(data.app, name="data")


def main() -> None:
    """The ``robustdeq`` command; under torchrun it joins the process group first (rank 0 prints)."""
    try:
        distributed.init()
    except RobustdeqError as exc:
        print_error(exc)
        raise SystemExit(1) from None
    console.quiet = not distributed.is_main()
    try:
        app()
    finally:
        distributed.shutdown()
