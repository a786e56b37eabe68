"""``robustdeq leaderboard``: render the tables of one or every protocol from the JSON entries."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from robustdeq.cli.common import ROOT_HELP, check_writable, console, one_line_errors, protocol_option
from robustdeq.errors import RobustdeqError
from robustdeq.leaderboard import read_entries, render
from robustdeq.leaderboard.readme import write_readme_tables
from robustdeq.leaderboard.render import headline, render_published
from robustdeq.records.published import published_only, read_published
from robustdeq.records.store import protocol_folders
from robustdeq.zoo import write_index


@one_line_errors
def leaderboard(
    root: Annotated[Path, typer.Argument(help=ROOT_HELP)] = Path("leaderboards"),
    protocol: Annotated[list[str] | None, protocol_option("Only this protocol's folder (default: all).")] = None,
) -> None:
    """Validate every entry, write leaderboard.md, leaderboard.csv and leaderboard.html (a self-contained page)
    per protocol, print the tables. A protocol folder with published numbers (published.toml) and no entries yet
    gets a leaderboard.md with those numbers. A README beside ROOT with `<!-- leaderboard:PROTOCOL:start -->`
    blocks gets each protocol's compact table there."""
    folders = [root / name for name in protocol] if protocol else sorted(protocol_folders(root) + published_only(root))
    if not folders:
        raise RobustdeqError(f"{root}: no entries (no <protocol>/ folder holding a <defense>.json)")
    check_writable(root, *folders)
    for folder in folders:
        entries = read_entries(folder)
        published = read_published(folder)
        if not entries and published is not None:  # published numbers, no entries yet
            paths = render_published(folder, published)
            console.print(f"[bold]{folder.name}[/bold] (no entries yet, {len(published.result)} published numbers) -> "
                          f"{', '.join(str(p) for p in paths)}")  # fmt: skip
            continue
        paths = render(entries, folder)
        frame = headline(entries)
        console.print(f"[bold]{folder.name}[/bold] ({len(entries)} entries) -> {', '.join(str(p) for p in paths)}")
        console.print(frame.to_string(index=False), markup=False)
    index = write_index(root)
    if index is not None:
        console.print(f"zoo index -> {index}")
    readme = write_readme_tables(root)
    if readme is not None:
        console.print(f"leaderboard tables in {readme}")
