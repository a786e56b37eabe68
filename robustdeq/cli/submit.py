"""``robustdeq submit``: validate a defense folder, then train, evaluate and add it to a leaderboard."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from robustdeq.cli.common import DATA_DIR_HELP, console, one_line_errors
from robustdeq.errors import RobustdeqError
from robustdeq.leaderboard.store import entry_path
from robustdeq.pipeline import Budget, load_splits, run_defense
from robustdeq.progress import Progress
from robustdeq.specs import find_protocol, load_defense
from robustdeq.training import build_model
from robustdeq.training.trainer import make_recipe
from robustdeq.validate import check_model


@one_line_errors
def submit(
    path: Annotated[Path, typer.Argument(help="Defense folder holding defense.toml.")],
    protocol: Annotated[str, typer.Option(help="Protocol to evaluate under.")] = "digits-linf",
    out: Annotated[Path, typer.Option(help="Leaderboard root; the entry goes to OUT/<protocol>/.")] = Path(
        "leaderboards"
    ),
    force: Annotated[bool, typer.Option(help="Replace an existing entry of the same defense id.")] = False,
    data_dir: Annotated[Path | None, typer.Option(help=DATA_DIR_HELP)] = None,
    download: Annotated[bool, typer.Option(help="Download a missing torchvision data set into --data-dir.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Check the manifest and the model before any training; then train, evaluate and write the entry."""
    defense = load_defense(path)
    spec = find_protocol(protocol)
    target = entry_path(out, spec.id, defense.id)
    if target.exists() and not force:
        raise RobustdeqError(f"{target} exists; pass --force to replace it")
    make_recipe(defense.train, spec.threat, str(defense.path))
    check_model(build_model(defense, spec.dataset), spec.dataset)
    splits = load_splits(spec, data_dir, download)
    entry = run_defense(defense, spec, splits, out, Budget(), None, Progress(enabled=not quiet))
    console.print(
        f"submitted {defense.id}: clean {100 * entry['clean_accuracy']:.2f}%, "
        f"robust {100 * entry['robust_accuracy']:.2f}%; entry {target}"
    )
