"""``robustdeq data``: list the data sets and fetch the torchvision ones."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from robustdeq.cli.common import Command, check_writable, console, one_line_errors
from robustdeq.data import DATASETS, load
from robustdeq.errors import RobustdeqError

app = typer.Typer(
    help="Data sets: list them and where they are, download the torchvision ones.",
    no_args_is_help=True,
    rich_markup_mode=None,  # help printed verbatim, like the main app's
)


@app.command("list", cls=Command)
@one_line_errors
def list_(
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Folder holding the torchvision data sets, to show which are there. Not needed for digits."),
    ] = None,
) -> None:
    """List every data set with its shape, classes and whether it is available."""
    table = Table(title="data sets")
    for column in ("name", "shape", "classes", "available"):
        table.add_column(column)
    for name in DATASETS:
        info = DATASETS.get(name)
        if not info.needs_data_dir:
            status = "embedded"
        elif data_dir is None:
            status = "needs --data-dir"
        else:
            try:
                n = len(load(name, "test", data_dir))
                status = f"yes ({n} test examples)"
            except RobustdeqError:
                status = "missing (use `robustdeq data download`)"
        table.add_row(name, "x".join(map(str, info.shape)), str(info.num_classes), status)
    console.print(table)


@app.command(cls=Command)
@one_line_errors
def download(
    name: Annotated[str, typer.Argument(help="Data set name (see `robustdeq data list`).")],
    data_dir: Annotated[Path, typer.Option(help="Folder to download into.")],
) -> None:
    """Download a torchvision data set (train and test splits) into --data-dir."""
    info = DATASETS.get(name)
    if not info.needs_data_dir:
        console.print(f"{name} is embedded; nothing to download")
        return
    check_writable(data_dir)
    for split in ("train", "test"):
        n = len(load(name, split, data_dir, download=True))
        console.print(f"{name} {split}: {n} examples in {data_dir}")
