"""``robustdeq zoo``: the trained reference models, with their accuracies and checksums."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from robustdeq import zoo as models_zoo
from robustdeq.cli.common import console, one_line_errors
from robustdeq.errors import RobustdeqError


@one_line_errors
def zoo(
    root: Annotated[
        Path | None,
        typer.Argument(help="Leaderboard root whose entries name the checkpoints (default: the repository's)."),
    ] = None,
    protocol: Annotated[str | None, typer.Option(help="Only this protocol's models.")] = None,
    root_option: Annotated[Path | None, typer.Option("--root", hidden=True)] = None,  # before 2026-12
    as_json: Annotated[bool, typer.Option("--json", help="Print the index as JSON instead of a table.")] = False,
) -> None:
    """List the zoo: every leaderboard entry's trained checkpoint (evaluate one with `robustdeq evaluate zoo:NAME`,
    load it in Python with `robustdeq.load_model(NAME)`)."""
    root = root or root_option or models_zoo.LEADERBOARDS_DIR
    models = models_zoo.list_models(protocol, root)
    if not models:
        raise RobustdeqError(f"no zoo models under {root}" + (f" for protocol {protocol!r}" if protocol else ""))
    if as_json:
        console.print_json(json.dumps([m.to_dict(root) for m in models]))
        return
    table = Table(title=f"robustdeq zoo ({root})")
    for column in ("name", "protocol", "family", "recipe", "clean %", "robust %", "sha256", "where"):
        table.add_column(column)
    for m in models:
        where = str(m.file.relative_to(root)) if m.file is not None and m.file.is_relative_to(root) else m.url or "-"
        table.add_row(
            m.name,
            m.protocol,
            m.family,
            m.recipe,
            f"{100 * m.clean_accuracy:.1f}",
            f"{100 * m.robust_accuracy:.1f}",
            m.sha256[:12],
            where,
        )
    console.print(table)
