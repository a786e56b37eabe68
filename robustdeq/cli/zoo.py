"""``robustdeq zoo``: the trained reference models, with their accuracies and checksums."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from robustdeq import zoo as models_zoo
from robustdeq.cli.common import console, either_root, one_line_errors, protocol_option
from robustdeq.errors import RobustdeqError


@one_line_errors
def zoo(
    root: Annotated[
        Path | None,
        typer.Argument(help="Leaderboard root whose entries name the checkpoints (default: the repository's)."),
    ] = None,
    protocol: Annotated[list[str] | None, protocol_option("Only this protocol's models (default: all).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the index as JSON instead of a table.")] = False,
    root_option: Annotated[Path | None, typer.Option("--root", hidden=True)] = None,  # before ROOT was positional
) -> None:
    """List the zoo: every leaderboard entry's trained checkpoint (evaluate one with `robustdeq evaluate zoo:NAME`,
    load it in Python with `robustdeq.load_model(NAME)`)."""
    root = either_root(root, root_option) or models_zoo.LEADERBOARDS_DIR
    names: list[str | None] = [*protocol] if protocol else [None]
    models = [m for name in names for m in models_zoo.list_models(name, root)]
    if not models:
        shown = f" for protocol {', '.join(map(repr, protocol))}" if protocol else ""
        raise RobustdeqError(f"no zoo models under {root}{shown}")
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
