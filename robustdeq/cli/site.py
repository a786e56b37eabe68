"""``robustdeq site``: a browsable static site of the leaderboard, read from the JSON entries."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from robustdeq.cli.common import ROOT_HELP, check_writable, console, one_line_errors
from robustdeq.leaderboard.site import report_figures_in, write_site
from robustdeq.records.store import protocol_folders


@one_line_errors
def site(
    root: Annotated[Path, typer.Argument(help=ROOT_HELP)] = Path("leaderboards"),
    out: Annotated[
        Path, typer.Option(help="Folder for the site: index.html, sort.js and one folder of pages per protocol.")
    ] = Path("site"),
    report: Annotated[
        Path | None,
        typer.Option(
            help="Folder written by 'robustdeq report': its <protocol>-<figure>.png figures are copied into the "
            "site and shown below each protocol's table."
        ),
    ] = None,
) -> None:
    """Write a static site that works offline (file://): the protocols, a sortable ranked table per protocol
    with rank groups and intervals, and a page per entry."""
    check_writable(out)
    figures = None if report is None else report_figures_in(report, [f.name for f in protocol_folders(root)])
    paths = write_site(root, out, figures)
    console.print(f"wrote {len(paths)} files; open {out / 'index.html'}")
