"""``robustdeq sweep``: train and evaluate a grid over depth, width and sparsity of one defense."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from robustdeq.cli.common import DATA_DIR_HELP, DeviceOption, check_writable, console, one_line_errors, protocol_option
from robustdeq.device import resolve as resolve_device
from robustdeq.errors import RobustdeqError
from robustdeq.pipeline import Budget
from robustdeq.progress import Progress
from robustdeq.records.defense import find_defense
from robustdeq.records.paths import DEFENSES_DIR
from robustdeq.records.protocol import find_protocol
from robustdeq.sweep import run_sweep


def _numbers(value: str | None, kind: type, name: str) -> list[int | float]:
    if value is None:
        return []
    try:
        return [kind(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise RobustdeqError(f"--{name} must be comma-separated {kind.__name__}s, got {value!r}") from None


@one_line_errors
def sweep(
    defense: Annotated[str, typer.Argument(help="Base defense id or folder (e.g. wtm-pgd-at).")],
    depth: Annotated[str | None, typer.Option(help="Comma-separated depths L (block applications).")] = None,
    width: Annotated[str | None, typer.Option(help="Comma-separated widths (channels).")] = None,
    density: Annotated[str | None, typer.Option(help="Comma-separated mask densities in (0, 1].")] = None,
    protocol: Annotated[list[str] | None, protocol_option("Protocol id or path (default: digits-linf).")] = None,
    out: Annotated[Path, typer.Option(help="Leaderboard root for the sweep's entries.")] = Path("leaderboards/sweeps"),
    data_dir: Annotated[Path | None, typer.Option(help=DATA_DIR_HELP)] = None,
    download: Annotated[bool, typer.Option(help="Download a missing torchvision data set into --data-dir.")] = False,
    defenses_dir: Annotated[Path, typer.Option(help="Where defense folders live.")] = DEFENSES_DIR,
    n_examples: Annotated[int | None, typer.Option(min=1, help="Evaluate only the first N protocol examples.")] = None,
    epochs: Annotated[int | None, typer.Option(min=0, help="Override the training epochs.")] = None,
    train_subset: Annotated[int | None, typer.Option(min=1, help="Train on the first N training examples.")] = None,
    force: Annotated[
        bool, typer.Option(help="Replace a full entry even though this run's budget is reduced (--n-examples etc.).")
    ] = False,
    device: DeviceOption = "auto",
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Train and evaluate every point of a depth x width x density grid; one entry per point.

    `robustdeq report OUT` then plots clean and robust accuracy against each knob.
    """
    values = {
        "depth": _numbers(depth, int, "depth"),
        "width": _numbers(width, int, "width"),
        "density": _numbers(density, float, "density"),
    }
    compute = resolve_device(device)
    base = find_defense(defense, defenses_dir)
    specs = [find_protocol(name) for name in protocol or ["digits-linf"]]
    check_writable(out, *(out / spec.id for spec in specs))
    budget = Budget(epochs=epochs, train_subset=train_subset, n_examples=n_examples)
    progress = Progress(enabled=not quiet)
    for spec in specs:
        entries = run_sweep(base, spec, values, out, data_dir, download, budget, progress, compute, force)
        for e in entries:
            console.print(
                f"{e['defense']}: clean {100 * e['clean_accuracy']:.2f}%, robust {100 * e['robust_accuracy']:.2f}%"
            )
        console.print(f"{len(entries)} entries in {out / spec.id}; plot them with `robustdeq report {out}`")
