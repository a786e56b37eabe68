"""``robustdeq bench``: train and evaluate every defense under one protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from robustdeq import distributed
from robustdeq.cli.common import (
    DATA_DIR_HELP,
    DeviceOption,
    Interrupted,
    check_writable,
    console,
    one_line_errors,
    protocol_option,
    split_names,
)
from robustdeq.device import resolve as resolve_device
from robustdeq.errors import RobustdeqError
from robustdeq.pipeline import Budget, refuse_replacing, run_defenses
from robustdeq.progress import Progress
from robustdeq.records.defense import DefenseSpec, find_defense, list_defenses
from robustdeq.records.paths import DEFENSES_DIR
from robustdeq.records.protocol import find_protocol


@one_line_errors
def bench(
    defenses: Annotated[
        str | None,
        typer.Option(help="Comma-separated defense ids or folders (default: the --suite's folders in defenses/)."),
    ] = None,
    suite: Annotated[
        str,
        typer.Option(
            help="Which reference defenses run when --defenses is not given: core (README command 1; its "
            "measured time is in the README), extended (further entries), or all."
        ),
    ] = "core",
    protocol: Annotated[
        list[str] | None,
        protocol_option(
            "Protocol id in attacks/ or a path to a protocol TOML, for every defense (default: each defense's "
            "manifest `protocols`, else digits-linf)."
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="Leaderboard root; entries go to OUT/<protocol>/.")] = Path("leaderboards"),
    data_dir: Annotated[Path | None, typer.Option(help=DATA_DIR_HELP)] = None,
    download: Annotated[bool, typer.Option(help="Download a missing torchvision data set into --data-dir.")] = False,
    defenses_dir: Annotated[Path, typer.Option(help="Where defense folders live.")] = DEFENSES_DIR,
    n_examples: Annotated[int | None, typer.Option(min=1, help="Evaluate only the first N protocol examples.")] = None,
    epochs: Annotated[int | None, typer.Option(min=0, help="Override every defense's training epochs.")] = None,
    train_subset: Annotated[int | None, typer.Option(min=1, help="Train on the first N training examples.")] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Defenses run in parallel, one process and one torch thread each (the numbers do not "
            "depend on it). With --jobs 1 a bar per training and attack; above 1, a line per defense as it "
            "starts and finishes and a bar over the defenses. Default 2, and 1 under torchrun.",
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Attack batch size instead of the protocol's (recorded in the entries' attack settings); "
            "under torchrun the batches are the unit of work shared by the ranks.",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Replace a full entry even though this run's budget is reduced (--n-examples etc.).")
    ] = False,
    train_only: Annotated[
        bool,
        typer.Option(
            help="Train every defense and stop, keeping each finished training's state beside the entries: "
            "the same command without it then evaluates the trained models without training them again."
        ),
    ] = False,
    device: DeviceOption = "auto",
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Train every defense, evaluate it under the protocol, write one JSON entry and its checkpoint each
    (OUT/<protocol>/<defense>.json and .safetensors: the zoo) plus the tables.

    Under `torchrun --nproc-per-node N -m robustdeq bench ...` the ranks train each defense data-parallel and
    share its attack batches; rank 0 writes the entries and tables.
    """
    compute = resolve_device(device)
    names = split_names(defenses) or list_defenses(defenses_dir, suite)
    if not names:
        raise RobustdeqError(f"no defenses of suite {suite!r} found in {defenses_dir}")
    chosen = [find_defense(name, defenses_dir) for name in names]
    ids = [d.id for d in chosen]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:  # two runs of one defense would share, and overwrite, one entry, checkpoint and state file
        raise RobustdeqError(f"--defenses names {', '.join(map(repr, twice))} more than once")
    groups: dict[str, list[DefenseSpec]] = {}  # protocol -> its defenses, in the given order
    for defense in chosen:
        for name in protocol or list(defense.protocols) or ["digits-linf"]:
            groups.setdefault(name, []).append(defense)
    specs = {name: find_protocol(name) for name in groups}  # every protocol is checked before any training
    check_writable(out, *(out / spec.id for spec in specs.values()))
    budget = Budget(epochs=epochs, train_subset=train_subset, n_examples=n_examples, batch_size=batch_size)
    for name, group in groups.items():  # every group, before the first one trains
        for defense in group:
            refuse_replacing(out, defense, specs[name], budget, force=force)
    progress = Progress(enabled=not quiet)
    if jobs is None:
        jobs = 1 if distributed.world_size() > 1 else 2
    for name, group in groups.items():
        spec = specs[name]
        try:
            entries = run_defenses(
                group, spec, data_dir, download, out, budget, progress, jobs, compute, force, train_only
            )
        except KeyboardInterrupt:
            raise Interrupted(
                f"interrupted; every worker stopped. Entries written so far are kept in {out}; running the same "
                "command again resumes the unfinished defenses' training after their last finished epoch and their "
                "attacks from their state files"
            ) from None
        if train_only:
            console.print(
                f"{spec.id}: trained {', '.join(e['defense'] for e in entries)}; the same command without "
                "--train-only evaluates them",
                soft_wrap=True,
            )
            continue
        summary = Table(
            title=f"{spec.id}: {spec.threat.norm} eps={spec.threat.eps}, {entries[0]['n_examples']} examples"
        )
        for column in ("defense", "clean %", "robust %", "strongest attack", "flags"):
            summary.add_column(column)
        for e in sorted(entries, key=lambda e: (-e["robust_accuracy"], -e["clean_accuracy"])):
            strongest = min(e["attacks"], key=e["attacks"].get) if e["attacks"] else "-"
            summary.add_row(
                e["defense"],
                f"{100 * e['clean_accuracy']:.2f}",
                f"{100 * e['robust_accuracy']:.2f}",
                strongest,
                ", ".join(e["flags"]) or "-",
            )
        console.print(summary)
        console.print(f"entries and tables written to {out / spec.id}")
