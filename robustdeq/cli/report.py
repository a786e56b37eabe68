"""``robustdeq report``: Markdown + HTML report with figures from the leaderboard entries."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from robustdeq.cli.common import console, one_line_errors, split_names
from robustdeq.report import write_report


@one_line_errors
def report(
    root: Annotated[Path, typer.Argument(help="Leaderboard root holding <protocol>/ folders of entries.")] = Path(
        "leaderboards"
    ),
    out: Annotated[Path, typer.Option(help="Folder for report.md, report.html and the PNG figures.")] = Path("report"),
    protocols: Annotated[str | None, typer.Option(help="Comma-separated protocol ids (default: all).")] = None,
) -> None:
    """Write a report of one or more protocols: tables and a per-attack accuracy figure each."""
    paths = write_report(root, out, split_names(protocols))
    console.print("wrote " + ", ".join(str(p) for p in paths))
