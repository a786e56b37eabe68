"""Grid sweeps over model settings (depth, width, sparsity): one leaderboard entry per point."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

import torch

from robustdeq.device import CPU
from robustdeq.device import resolve as resolve_device
from robustdeq.errors import RobustdeqError
from robustdeq.pipeline import Budget, load_splits, refuse_replacing, run_defense
from robustdeq.progress import Progress
from robustdeq.records.defense import DefenseSpec, ModelSpec
from robustdeq.records.protocol import ProtocolSpec
from robustdeq.training import build_model

# CLI knob -> model setting, and the short tag it gets in entry ids (lower case, as every id must be).
KNOBS = {"depth": ("depth", "l"), "width": ("channels", "w"), "density": ("density", "d")}


def grid(defense: DefenseSpec, values: dict[str, list[Any]]) -> list[DefenseSpec]:
    """One defense per point of the product of ``values`` (knob -> values), ids tagged by the point."""
    knobs = [k for k in KNOBS if values.get(k)]
    if not knobs:
        raise RobustdeqError("a sweep needs at least one of --depth, --width, --density")
    points = []
    for combo in itertools.product(*(values[k] for k in knobs)):
        settings = dict(defense.model.settings)
        tags = []
        for knob, value in zip(knobs, combo, strict=True):
            setting, tag = KNOBS[knob]
            settings[setting] = value
            tags.append(f"{tag}{value:g}" if isinstance(value, float) else f"{tag}{value}")
        points.append(
            dataclasses.replace(
                defense,
                id=f"{defense.id}-{'-'.join(tags)}",
                name=f"{defense.name} ({', '.join(tags)})",
                model=ModelSpec(defense.model.family, settings),
            )
        )
    return points


def run_sweep(
    defense: DefenseSpec,
    protocol: ProtocolSpec,
    values: dict[str, list[Any]],
    out: Path,
    data_dir: Path | None = None,
    download: bool = False,
    budget: Budget | None = None,
    progress: Progress | None = None,
    device: str | torch.device | None = None,
    force: bool = False,
) -> list[dict[str, Any]]:
    """Train and evaluate every grid point; every point's model is built first, so a bad value
    fails before any training, and so does a reduced run that would replace a full entry (unless
    ``force``)."""
    points = grid(defense, values)
    budget = budget or Budget()
    for point in points:
        build_model(point, protocol.dataset, CPU)
        refuse_replacing(out, point, protocol, budget, force=force)
    splits = load_splits(protocol, data_dir, download)
    target = resolve_device(device)
    return [run_defense(point, protocol, splits, out, budget, progress, target) for point in points]
