"""``robustdeq submit``: validate a defense folder, then train (or load), evaluate and add it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from robustdeq.checkpoint import load_weights
from robustdeq.cli.common import (
    DATA_DIR_HELP,
    DeviceOption,
    Interrupted,
    check_writable,
    console,
    one_line_errors,
    protocol_option,
)
from robustdeq.device import resolve as resolve_device
from robustdeq.errors import RobustdeqError
from robustdeq.pipeline import Budget, load_splits, refuse_replacing, run_defense
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
        list[str] | None, protocol_option("Protocol to run (default: the manifest's `protocols`, else digits-linf).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Leaderboard root; entries go to OUT/<protocol>/.")] = Path("leaderboards"),
    force: Annotated[
        bool,
        typer.Option(help="Replace an existing entry of the same defense id, a full one even with a reduced budget."),
    ] = False,
    n_examples: Annotated[int | None, typer.Option(min=1, help="Evaluate only the first N protocol examples.")] = None,
    epochs: Annotated[int | None, typer.Option(min=0, help="Override the manifest's epochs.")] = None,
    train_subset: Annotated[int | None, typer.Option(min=1, help="Train on the first N training examples.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help=DATA_DIR_HELP)] = None,
    download: Annotated[bool, typer.Option(help="Download a missing torchvision data set into --data-dir.")] = False,
    device: DeviceOption = "auto",
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Check the manifest, the model and any checkpoint before any training; then train (or load the
    checkpoint), evaluate under each protocol and write the entries.

    --epochs, --train-subset and --n-examples make a quick try: its entry is flagged reduced_budget
    and replaces no full entry. Run again after an interruption, the same command resumes training
    after its last finished epoch and the attacks after their last batch.
    """
    compute = resolve_device(device)
    defense = load_defense(path)
    if defense.train.checkpoint is not None and (epochs is not None or train_subset is not None):
        raise RobustdeqError(f"{defense.id} ships trained weights ({defense.train.checkpoint}): nothing to train")
    budget = Budget(epochs=epochs, train_subset=train_subset, n_examples=n_examples)
    names = protocol or list(defense.protocols) or ["digits-linf"]
    specs = [find_protocol(name) for name in names]
    check_writable(out, *(out / spec.id for spec in specs))
    for spec in specs:
        refuse_replacing(out, defense, spec, budget, force=force)
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
        try:
            entry = run_defense(defense, spec, splits[spec.id], out, budget, progress, compute)
        except KeyboardInterrupt:
            raise Interrupted(
                "interrupted; running the same command again resumes training after its last finished epoch "
                f"and the attacks after their last batch (saved in {out / spec.id})"
            ) from None
        console.print(
            f"submitted {defense.id} under {spec.id}: clean {100 * entry['clean_accuracy']:.2f}%, "
            f"robust {100 * entry['robust_accuracy']:.2f}%; entry {entry_path(out, spec.id, defense.id)}"
        )
