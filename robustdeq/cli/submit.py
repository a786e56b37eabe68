"""``robustdeq submit``: validate a defense folder, then train (or load), evaluate and add it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from robustdeq.checkpoint import load_weights
from robustdeq.cli.common import DATA_DIR_HELP, DeviceOption, check_writable, console, one_line_errors, split_names
from robustdeq.device import resolve as resolve_device
from robustdeq.errors import RobustdeqError
from robustdeq.pipeline import Budget, load_splits, run_defense
from robustdeq.progress import Progress
from robustdeq.records.defense import load_defense
from robustdeq.records.protocol import find_protocol
from robustdeq.records.store import entry_path
from robustdeq.training import build_model, training_recipe
from robustdeq.validate import check_model


@one_line_errors
def submit(
    path: Annotated[Path, typer.Argument(help="Defense folder holding defense.toml (and model.py / weights).")],
    protocol: Annotated[
        str | None,
        typer.Option(help="Comma-separated protocols (default: the manifest's `protocols`, else digits-linf)."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Leaderboard root; entries go to OUT/<protocol>/.")] = Path("leaderboards"),
    force: Annotated[bool, typer.Option(help="Replace an existing entry of the same defense id.")] = False,
    data_dir: Annotated[Path | None, typer.Option(help=DATA_DIR_HELP)] = None,
    download: Annotated[bool, typer.Option(help="Download a missing torchvision data set into --data-dir.")] = False,
    device: DeviceOption = "auto",
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Check the manifest, the model and any checkpoint before any training; then train (or load the
    checkpoint), evaluate under each protocol and write the entries."""
    compute = resolve_device(device)
    defense = load_defense(path)
    names = split_names(protocol) or list(defense.protocols) or ["digits-linf"]
    specs = [find_protocol(name) for name in names]
    check_writable(out, *(out / spec.id for spec in specs))
    for spec in specs:
        target = entry_path(out, spec.id, defense.id)
        if target.exists() and not force:
            raise RobustdeqError(f"{target} exists; pass --force to replace it")
        if defense.train.checkpoint is None:
            training_recipe(defense.train, spec.threat, str(defense.path))
        model = build_model(defense, spec.dataset, compute)
        check_model(model, spec.dataset)
        if defense.train.checkpoint is not None:
            load_weights(model, (defense.path or path) / defense.train.checkpoint)
    splits = {spec.id: load_splits(spec, data_dir, download) for spec in specs}  # a missing data set fails here
    progress = Progress(enabled=not quiet)
    for spec in specs:
        entry = run_defense(defense, spec, splits[spec.id], out, Budget(), progress, compute)
        console.print(
            f"submitted {defense.id} under {spec.id}: clean {100 * entry['clean_accuracy']:.2f}%, "
            f"robust {100 * entry['robust_accuracy']:.2f}%; entry {entry_path(out, spec.id, defense.id)}"
        )
