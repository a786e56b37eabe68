"""``robustdeq train``: train one defense for a protocol's data set and save a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from robustdeq import distributed
from robustdeq.checkpoint import FILENAME, save_checkpoint
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
from robustdeq.pipeline import Budget, checkpoint_meta, load_splits, train_defense
from robustdeq.progress import Progress
from robustdeq.records.defense import find_defense
from robustdeq.records.paths import DEFENSES_DIR
from robustdeq.records.protocol import find_protocol


@one_line_errors
def train(
    defense: Annotated[str, typer.Argument(help="Defense id (a folder in defenses/) or a path to a defense folder.")],
    protocol: Annotated[
        list[str] | None,
        protocol_option("Protocol whose data set and threat model to train for (default: digits-linf)."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Checkpoint root; the model goes to OUT/<protocol>/<defense>/.")] = Path(
        "runs"
    ),
    data_dir: Annotated[Path | None, typer.Option(help=DATA_DIR_HELP)] = None,
    download: Annotated[bool, typer.Option(help="Download a missing torchvision data set into --data-dir.")] = False,
    defenses_dir: Annotated[Path, typer.Option(help="Where defense folders live.")] = DEFENSES_DIR,
    epochs: Annotated[int | None, typer.Option(min=0, help="Override the manifest's epochs.")] = None,
    train_subset: Annotated[int | None, typer.Option(min=1, help="Train on the first N training examples.")] = None,
    device: DeviceOption = "auto",
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Train a defense and save OUT/<protocol>/<defense>/model.safetensors, which carries the manifest it was
    trained from (evaluate it with `robustdeq evaluate`). Run again after an interruption, the same command
    resumes after the last finished epoch.

    Under `torchrun --nproc-per-node N -m robustdeq train ...` the ranks train data-parallel (each takes its
    share of every batch) and rank 0 saves the checkpoint.
    """
    compute = resolve_device(device)
    specs = [find_protocol(name) for name in protocol or ["digits-linf"]]
    chosen = find_defense(defense, defenses_dir)
    for spec in specs:
        check_writable(out / spec.id / chosen.id)
    splits = [load_splits(spec, data_dir, download) for spec in specs]  # every protocol checked before training
    budget = Budget(epochs=epochs, train_subset=train_subset)
    for spec, (train_split, test_split) in zip(specs, splits, strict=True):
        folder = out / spec.id / chosen.id
        resume = folder / ".train-state.safetensors"
        shown = Progress(enabled=not quiet)
        try:
            result, record = train_defense(chosen, spec, train_split, budget, shown, test_split, compute, resume)
        except KeyboardInterrupt:
            raise Interrupted(
                f"interrupted; running the same command again resumes after the last finished epoch (saved in {resume})"
            ) from None
        if distributed.is_main():
            meta = checkpoint_meta(chosen, spec, record, result.seconds, result.federated)
            save_checkpoint(result.model, folder / FILENAME, meta)
            resume.unlink(missing_ok=True)
        console.print(
            f"trained {chosen.id} in {result.seconds:.1f} s (final loss {result.final_loss:.4f}); saved {folder}"
        )
