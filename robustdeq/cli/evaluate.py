"""``robustdeq evaluate``: run a protocol on a trained checkpoint and write its entry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from robustdeq.cli.common import DATA_DIR_HELP, console, one_line_errors
from robustdeq.errors import RobustdeqError
from robustdeq.pipeline import Budget, evaluate_and_write, load_splits, load_trained
from robustdeq.progress import Progress
from robustdeq.specs import find_protocol


@one_line_errors
def evaluate(
    checkpoint: Annotated[
        Path, typer.Argument(help="A folder written by `robustdeq train` (model.safetensors + meta.json).")
    ],
    protocol: Annotated[str | None, typer.Option(help="Protocol to run (default: the one it was trained for).")] = None,
    out: Annotated[Path, typer.Option(help="Leaderboard root; the entry goes to OUT/<protocol>/.")] = Path(
        "leaderboards"
    ),
    data_dir: Annotated[Path | None, typer.Option(help=DATA_DIR_HELP)] = None,
    download: Annotated[bool, typer.Option(help="Download a missing torchvision data set into --data-dir.")] = False,
    n_examples: Annotated[int | None, typer.Option(min=1, help="Evaluate only the first N protocol examples.")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Evaluate a trained model under a protocol (clean, every attack, worst case, checks) and write the entry."""
    defense, trained = load_trained(checkpoint)
    spec = find_protocol(protocol or trained.protocol)
    if spec.dataset != trained.dataset:
        raise RobustdeqError(f"checkpoint was trained on {trained.dataset!r}, protocol {spec.id} uses {spec.dataset!r}")
    _, test = load_splits(spec, data_dir, download)
    entry = evaluate_and_write(
        defense, spec, trained, test, out, Budget(n_examples=n_examples), Progress(enabled=not quiet)
    )
    console.print(
        f"{defense.id} under {spec.id}: clean {100 * entry['clean_accuracy']:.2f}%, "
        f"robust {100 * entry['robust_accuracy']:.2f}%; entry in {out / spec.id}"
    )
