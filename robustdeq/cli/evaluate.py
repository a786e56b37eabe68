"""``robustdeq evaluate``: run a protocol on a trained checkpoint and write its entry."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer

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
from robustdeq.pipeline import (
    Budget,
    evaluate_and_write,
    load_splits,
    load_trained,
    refuse_replacing,
    state_file,
)
from robustdeq.progress import Progress
from robustdeq.records.protocol import find_protocol
from robustdeq.records.store import read_entry
from robustdeq.zoo import ZooModel, find_model


@one_line_errors
def evaluate(
    checkpoint: Annotated[
        str,
        typer.Argument(
            help="A folder written by `robustdeq train`, a checkpoint file, or zoo:NAME (a trained reference "
            "model: `robustdeq zoo` lists them)."
        ),
    ],
    protocol: Annotated[
        list[str] | None, protocol_option("Protocol to run (default: the one it was trained for).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Leaderboard root; the entry goes to OUT/<protocol>/.")] = Path(
        "leaderboards"
    ),
    data_dir: Annotated[Path | None, typer.Option(help=DATA_DIR_HELP)] = None,
    download: Annotated[bool, typer.Option(help="Download a missing torchvision data set into --data-dir.")] = False,
    n_examples: Annotated[int | None, typer.Option(min=1, help="Evaluate only the first N protocol examples.")] = None,
    eps_sweep: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated eps values for the robust-accuracy-versus-eps curve drawn into the entry "
            "(replaces the protocol's [eps_sweep] list; its attacks stay), e.g. 0.05,0.1,0.2,0.3,1.0."
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Attack batch size instead of the protocol's (recorded in the entry's attack settings). Attack "
            "randomness is seeded per batch, so numbers are reproducible for a given batch size; under torchrun the "
            "batches are the unit of work shared by the ranks.",
        ),
    ] = None,
    per_example: Annotated[
        Path | None,
        typer.Option(
            help="Also write every example's outcome (clean, each attack, each batch record) to this JSON "
            "(one protocol only)."
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Replace a full entry even though this run's budget is reduced (--n-examples etc.).")
    ] = False,
    device: DeviceOption = "auto",
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Evaluate a trained model under a protocol (clean, every attack, worst case, checks) and write the entry.

    Under `torchrun --nproc-per-node N -m robustdeq evaluate ...` the ranks share the attack batches and
    rank 0 writes the entry, identical to a single-process run with the same batch size.
    """
    sweep = parse_eps_list(eps_sweep) if eps_sweep is not None else None  # before anything is loaded
    if per_example is not None and protocol is not None and len(protocol) > 1:
        raise RobustdeqError("--per-example takes one --protocol (it would hold every protocol's outcomes in turn)")
    compute = resolve_device(device)
    named = find_protocol(protocol[0]).id if protocol else None  # which zoo model a plain zoo:NAME means
    defense, trained = load_trained(checkpoint, compute, named)
    for note in trained.notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    specs = [find_protocol(name) for name in protocol or [trained.protocol]]
    check_writable(out, *(out / spec.id for spec in specs), *([per_example.parent] if per_example is not None else []))
    budget = Budget(n_examples=n_examples, batch_size=batch_size, eps_sweep=sweep)
    for spec in specs:  # every protocol checked before the first is attacked
        if spec.dataset != trained.dataset:
            raise RobustdeqError(
                f"checkpoint was trained on {trained.dataset!r}, protocol {spec.id} uses {spec.dataset!r}"
            )
        refuse_replacing(out, defense, spec, budget, trained.train_info, force)
    tests = [load_splits(spec, data_dir, download)[1] for spec in specs]
    for spec, test in zip(specs, tests, strict=True):
        try:
            progress = Progress(enabled=not quiet)
            entry = evaluate_and_write(defense, spec, trained, test, out, budget, progress, per_example)
        except KeyboardInterrupt:
            state = state_file(out, spec.id, defense.id)
            raise Interrupted(
                f"interrupted; the attack batches done so far are saved in {state}, and running the same command "
                "again resumes from there"
            ) from None
        console.print(
            f"{defense.id} under {spec.id}: clean {100 * entry['clean_accuracy']:.2f}%, "
            f"robust {100 * entry['robust_accuracy']:.2f}%; entry in {out / spec.id}"
        )
        if checkpoint.startswith("zoo:"):
            model = find_model(checkpoint[len("zoo:") :], prefer=named)
            console.print(reproduction(entry, model), highlight=False, soft_wrap=True)


def reproduction(entry: dict[str, Any], model: ZooModel) -> str:
    """Whether a re-evaluation of a zoo model gives its committed entry's numbers."""
    committed = read_entry(model.entry)
    if (committed["protocol_hash"], committed["n_examples"]) != (entry["protocol_hash"], entry["n_examples"]):
        return f"not comparable with {model.entry}: another protocol version or number of examples"
    keys = ["clean_accuracy", "robust_accuracy"]
    differ = [k for k in keys if committed[k] != entry[k]]
    differ += [f"attacks.{a}" for a in entry["attacks"] if committed["attacks"].get(a) != entry["attacks"][a]]
    if committed.get("per_example") and committed["per_example"] != entry["per_example"]:
        differ.append("per_example")
    if not differ:
        return f"reproduces {model.entry} exactly (every accuracy and every example's outcome)"
    return f"differs from {model.entry} in {', '.join(differ)}"


def parse_eps_list(text: str) -> tuple[float, ...]:
    """``"0.05,0.1"`` -> (0.05, 0.1); finite, positive and increasing, else a one-line error."""
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise RobustdeqError(f"--eps-sweep: {text!r} is not a comma-separated list of numbers") from None
    if not all(math.isfinite(v) for v in values):  # "inf", "nan", and "1e309" (which overflows to inf)
        raise RobustdeqError(f"--eps-sweep: {text!r} must be finite eps values")
    if not values or any(v <= 0 for v in values) or list(values) != sorted(set(values)):
        raise RobustdeqError(f"--eps-sweep: {text!r} must be positive, increasing eps values")
    return values
