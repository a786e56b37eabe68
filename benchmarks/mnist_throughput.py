"""MNIST throughput on this machine: what the MNIST tier costs, measured before it is sized.

For each timed defense (default: deq-pgd-at, lyadeq-trades, cnn-pgd-at and the entropy-reduction
defense deq-pgd-at-er), with its MNIST variant (``[datasets.mnist]`` in its manifest), through the
library's own pipeline (:func:`robustdeq.pipeline.run_defense`, what ``robustdeq bench`` runs), on one
torch thread (``bench --jobs 2`` runs two such workers on two cores):

- trains a timing model: the variant's recipe on the first ``--train-images`` training images for
  ``--epochs`` epochs (the eps ramp of its first epoch included), enough to be robust, since an
  attack's cost depends on how many examples survive its early stages; its training seconds per epoch
  are scaled to the 60,000 training images (the cost per image rises as a DEQ trains: the tier's own
  training times, ``--tier``, are the measured ones);
- evaluates it with the full protocol (``mnist-linf-0.3``) on the first ``--n-examples`` test images:
  seconds per test example for the whole protocol and for AutoAttack alone, with the model's clean and
  robust accuracy;
- with ``--tier-n-examples`` (the protocol's batch size, 250), evaluates the tier's own finished models on
  that many test images too: the cost per image falls with the batch (the per-call overhead of a DEQ's
  solves is shared by more rows), so this is the figure the tier will see;
- projects the MNIST tier's evaluation cost at n = 500 and n = 1,000, each tier defense priced at the
  timed defense of its family, in core-hours and in hours on 2 cores (2 workers).

Models and entries go to ``--work`` (not committed; re-running resumes and reuses them), the summary
to ``benchmarks/results/mnist_throughput.{json,md}``.

    python benchmarks/mnist_throughput.py --data-dir ../shared/data
    python benchmarks/mnist_throughput.py --data-dir ../shared/data --tier /work/mnist-tier  # + the tier's training
    python benchmarks/mnist_throughput.py --data-dir ../shared/data --tier /work/mnist-tier --tier-n-examples 250
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

from robustdeq.pipeline import Budget, load_splits, run_defense, training_state_file
from robustdeq.progress import Progress
from robustdeq.records.defense import find_defense
from robustdeq.records.protocol import find_protocol
from robustdeq.training.resume import saved

RESULTS = Path(__file__).parent / "results"
PROTOCOL = "mnist-linf-0.3"
TIMED = ("deq-pgd-at", "lyadeq-trades", "cnn-pgd-at", "deq-pgd-at-er")
TRAIN_IMAGES = 60_000
# The MNIST tier's entries, each priced at the timed defense of its family.
TIER = {
    "cnn-standard": "cnn-pgd-at",
    "cnn-pgd-at": "cnn-pgd-at",
    "deq-standard": "deq-pgd-at",
    "deq-pgd-at": "deq-pgd-at",
    "wtm-pgd-at": "deq-pgd-at",
    "deq-trades": "deq-pgd-at",
    "deq-ris-pgd-at": "deq-pgd-at",
    "deq-jiio": "deq-pgd-at",
    "lyadeq-standard": "lyadeq-trades",
    "lyadeq-trades": "lyadeq-trades",
    "deq-pgd-at-er": "deq-pgd-at-er",
}
SIZES = (500, 1000)


def finished_tier_state(tier: Path | None, name: str) -> Path | None:
    """The tier's training state of ``name`` when its training has finished (all the variant's epochs)."""
    if tier is None:
        return None
    path = training_state_file(tier, PROTOCOL, name)
    meta = saved(path)
    return path if meta.get("epochs") == find_defense(name).on("mnist").train.epochs else None


def time_defense(
    name: str, data_dir: Path, work: Path, budget: Budget, tier_state: Path | None = None
) -> dict[str, Any]:
    """Evaluate the timing model of ``name`` (trained, or resumed, first), or with ``tier_state`` the
    tier's own trained model (its finished training state, copied: nothing is trained again): the
    entry's numbers and timings."""
    protocol = find_protocol(PROTOCOL)
    defense = find_defense(name)
    if tier_state is not None:
        work = work / f"tier-{budget.n_examples}"
        budget = Budget(n_examples=budget.n_examples)
        copy = training_state_file(work, protocol.id, name)
        if not copy.is_file():
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(tier_state, copy)
    entry_file = work / protocol.id / f"{name}.json"
    if not entry_file.is_file():
        torch.set_num_threads(1)
        run_defense(defense, protocol, load_splits(protocol, data_dir, False), work, budget, Progress())
    entry = json.loads(entry_file.read_text())
    provenance = entry["provenance"]
    n = entry["n_examples"]
    epochs = provenance["training"]["epochs"]
    images = provenance["training"]["train_subset"] or TRAIN_IMAGES
    attack = provenance.get("attack_seconds") or {}
    return {
        "model": "tier" if tier_state is not None else "timing",
        "clean_accuracy": entry["clean_accuracy"],
        "robust_accuracy": entry["robust_accuracy"],
        "attacks": entry["attacks"],
        "n_examples": n,
        "train_images": images,
        "epochs": epochs,
        "train_seconds": provenance["train_seconds"],
        "train_seconds_per_epoch_60k": provenance["train_seconds"] / epochs * TRAIN_IMAGES / images,
        "eval_seconds": provenance["eval_seconds"],
        "seconds_per_example": provenance["eval_seconds"] / n,
        "autoattack_seconds_per_example": attack.get("autoattack", float("nan")) / n,
        "attack_seconds": attack,
    }


def tier_training(tier: Path | None) -> dict[str, dict[str, float]]:
    """Seconds and epochs of the MNIST tier's own training so far, read from its training states."""
    out: dict[str, dict[str, float]] = {}
    if tier is None:
        return out
    for name in TIER:
        meta = saved(training_state_file(tier, PROTOCOL, name))
        if meta.get("epochs"):
            out[name] = {"epochs": meta["epochs"], "seconds_per_epoch": meta["seconds"] / meta["epochs"]}
    return out


def projection(timed: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The tier's evaluation cost at each n, each entry priced at its family's timed defense: the tier's
    own model where it was timed, else the timing model times the mean ratio (tier / timing model) of the
    defenses timed both ways (a timing model is less robust, so fewer examples reach the costly attacks).
    Where a tier model was also timed at the protocol's batch size (``(tier, batch)``), that is its price,
    and every other price is scaled by the mean ratio batch / small n of the models timed both ways."""

    def mean_ratio(num: str, den: str) -> float:
        ratios = [
            timed[f"{name}{num}"]["seconds_per_example"] / timed[f"{name}{den}"]["seconds_per_example"]
            for name in TIER
            if f"{name}{num}" in timed and f"{name}{den}" in timed
        ]
        return sum(ratios) / len(ratios) if ratios else 1.0

    scale, batch = mean_ratio(" (tier)", ""), mean_ratio(" (tier, batch)", " (tier)")
    price: dict[str, float] = {}
    basis: dict[str, str] = {}
    for name, base in TIER.items():
        if f"{base} (tier, batch)" in timed:
            price[name], basis[name] = timed[f"{base} (tier, batch)"]["seconds_per_example"], f"{base} (tier, batch)"
        elif f"{base} (tier)" in timed:
            price[name] = timed[f"{base} (tier)"]["seconds_per_example"] * batch
            basis[name] = f"{base} (tier)" + (f" x {batch:.2f}" if batch != 1.0 else "")
        elif base in timed:
            price[name] = timed[base]["seconds_per_example"] * scale * batch
            basis[name] = f"{base} x {scale * batch:.2f}"
    out: dict[str, Any] = {
        "timing_to_tier_ratio": round(scale, 2),
        "batch_to_small_ratio": round(batch, 2),
        "basis": basis,
    }
    for n in SIZES:
        core_hours = sum(price.values()) * n / 3600
        out[str(n)] = {
            "per_entry_hours": {k: round(v * n / 3600, 2) for k, v in price.items()},
            "core_hours": round(core_hours, 1),
            "hours_on_2_cores": round(core_hours / 2, 1),
            "priced": len(price),
        }
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# MNIST throughput ({PROTOCOL} version {result['protocol_version']}, one torch thread per defense)",
        "",
        f"Machine: {result['machine']}. Timing models: the MNIST variant's recipe on the first "
        f"{result['train_images']:,} training images for {result['epochs']} epochs; evaluated with the full "
        f"protocol on the first {result['n_examples']} test images. Tier models: the tier's own, trained with "
        "the variant's full recipe on all 60,000 images (their training seconds are the measured ones), "
        f"evaluated likewise. Run: `{result['command']}`. {result.get('note', '')}".rstrip(),
        "",
        "| defense (model) | clean % | robust % | s / test example (protocol) | s / test example (AutoAttack) | "
        "train s / epoch of 60,000 (scaled) |",
        "|---|---|---|---|---|---|",
    ]
    for name, t in result["timed"].items():
        model = t["model"] + (f", {t['n_examples']} test images" if t["n_examples"] != result["n_examples"] else "")
        lines.append(
            f"| {name.split(' (')[0]} ({model}) | {100 * t['clean_accuracy']:.1f} | "
            f"{100 * t['robust_accuracy']:.1f} | "
            f"{t['seconds_per_example']:.1f} | {t['autoattack_seconds_per_example']:.1f} | "
            f"{t['train_seconds_per_epoch_60k']:.0f} |"
        )
    if result["tier_training"]:
        lines += ["", "The tier's own training (the MNIST variants on all 60,000 images), measured so far:", ""]
        lines += ["| defense | epochs done | s / epoch |", "|---|---|---|"]
        for name, t in result["tier_training"].items():
            lines.append(f"| {name} | {t['epochs']:.0f} | {t['seconds_per_epoch']:.0f} |")
    p = result["projection"]
    lines += [
        "",
        "Projected evaluation cost of the MNIST tier's eleven entries, each priced at its family's timed defense:",
        "the tier's own model where it was timed, else the timing model scaled by the mean ratio tier / timing "
        f"model of the defenses timed both ways ({p['timing_to_tier_ratio']}x: the tier's models are more robust, "
        "so more examples reach AutoAttack's costly stages), and by the mean ratio at the protocol's batch size to "
        f"the small n of the tier models timed both ways ({p.get('batch_to_small_ratio', 1.0)}x). Pricing: "
        + "; ".join(f"{k}: {v}" for k, v in p["basis"].items())
        + ".",
        "",
        "| n | core-hours | hours on 2 cores (2 workers) |",
        "|---|---|---|",
    ]
    for n in (str(size) for size in SIZES):
        lines.append(f"| {int(n):,} | {p[n]['core_hours']} | {p[n]['hours_on_2_cores']} |")
    return "\n".join(lines) + "\n"


def without_note(args: list[str]) -> list[str]:
    """The command's arguments less ``--note`` and its text (written in the summary on its own)."""
    out, skip = [], False
    for arg in args:
        if skip or arg == "--note":
            skip = not skip
            continue
        out.append(arg.split("--note=")[0] if arg.startswith("--note=") else arg)
    return [a for a in out if a]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True, help="folder holding MNIST (e.g. ../shared/data)")
    parser.add_argument("--defenses", default=",".join(TIMED), help="comma-separated defense ids to time")
    parser.add_argument("--train-images", type=int, default=10_000, help="training images of the timing models")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the timing models")
    parser.add_argument("--n-examples", type=int, default=40, help="test images evaluated per defense")
    parser.add_argument("--work", type=Path, default=Path("runs") / "mnist_throughput", help="models and entries")
    parser.add_argument("--tier", type=Path, default=None, help="the MNIST tier's bench --out, for its training times")
    parser.add_argument("--tier-defenses", default="", help="the tier models to time (default: --defenses)")
    parser.add_argument(
        "--tier-n-examples", type=int, default=None, help="also time the tier's models on this many images (250)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "mnist_throughput", help="summary (.json and .md)")
    parser.add_argument("--note", default="", help="what else ran on the machine meanwhile (written in the summary)")
    args = parser.parse_args(argv)
    budget = Budget(epochs=args.epochs, train_subset=args.train_images, n_examples=args.n_examples)
    started = time.perf_counter()
    names = args.defenses.split(",")
    timed = {name: time_defense(name, args.data_dir, args.work, budget) for name in names}
    tier_names = args.tier_defenses.split(",") if args.tier_defenses else names
    for name in tier_names:  # the tier's own models, where their training has finished: what the projection uses
        state = finished_tier_state(args.tier, name)
        if state is not None:
            timed[f"{name} (tier)"] = time_defense(name, args.data_dir, args.work, budget, state)
            if args.tier_n_examples:
                at_batch = Budget(n_examples=args.tier_n_examples)
                timed[f"{name} (tier, batch)"] = time_defense(name, args.data_dir, args.work, at_batch, state)
    result = {
        "protocol": PROTOCOL,
        "protocol_version": find_protocol(PROTOCOL).version,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "command": " ".join(
            ["python benchmarks/mnist_throughput.py", *without_note(sys.argv[1:] if argv is None else argv)]
        ),
        "train_images": args.train_images,
        "epochs": args.epochs,
        "n_examples": args.n_examples,
        "timed": timed,
        "tier_training": tier_training(args.tier),
        "projection": projection(timed),
        "seconds": round(time.perf_counter() - started, 1),
        "note": args.note,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
