"""JIIO versus PGD adversarial training of the same DEQ: speed, solver work and robustness.

Trains two reference defenses, each with its own recipe and settings (by default deq-jiio, the
reference DEQ trained with JIIO: a joint fixed point over state, perturbation and adjoint; and
deq-pgd-at, the same DEQ trained with PGD-AT, 7 steps) for the same number of epochs, then
evaluates both under the protocol (digits-linf: PGD-20 and AutoAttack standard). Reports per
defense: wall time per epoch, forward and backward cell evaluations during training, the strength
of each training attack (cross-entropy it reaches on a fixed batch against the final second,
PGD-AT, model), clean and robust accuracies.

Timing: ``--repeats R`` trains each defense R times from the same seed, interleaved (first,
second, second, first, ...) so that a change in the machine's load falls on both, after one
untimed warm-up epoch of each (the first training in a process pays one-off costs), and reports
each defense's seconds per epoch (mean, min, max, every run) and the ratio first / second: the
ratio of the means, and its spread over the repeats, from the fastest first over the slowest
second to the slowest first over the fastest second. ``robustdeq report`` reads that spread for
the JIIO speed claims (``robustdeq/report/claims.toml``); it needs at least 3 repeats. Time on an
idle machine: training time depends on the load. Only the first repeat's models are evaluated
(training is seeded: the repeats train the same weights).

    python benchmarks/jiio_vs_pgd_at.py --repeats 3           # digits-linf, ~20 minutes on 2 idle cores
    python benchmarks/jiio_vs_pgd_at.py --repeats 3 --protocol digits-l2 --first deq-jiio-l2 --second deq-pgd-at-l2
    python benchmarks/jiio_vs_pgd_at.py --mnist ../shared/data --train-subset 5000 --n-examples 200

Results: ``benchmarks/results/jiio_vs_pgd_at.{json,md}`` for digits-linf,
``jiio_vs_pgd_at-<protocol>.{json,md}`` for another protocol (``--out`` to choose).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from robustdeq.data import load
from robustdeq.evaluation import evaluate
from robustdeq.records.defense import DefenseSpec, find_defense
from robustdeq.records.protocol import find_protocol
from robustdeq.threat import pgd
from robustdeq.training import train_model
from robustdeq.training.jiio import JIIO

RESULTS = Path(__file__).parent / "results"
DEFAULT_PROTOCOL = "digits-linf"
WARMUP = 128  # training examples of the untimed warm-up epoch


def default_out(protocol: str) -> Path:
    """``results/jiio_vs_pgd_at`` for the default protocol, ``results/jiio_vs_pgd_at-<protocol>`` otherwise."""
    return RESULTS / ("jiio_vs_pgd_at" if protocol == DEFAULT_PROTOCOL else f"jiio_vs_pgd_at-{protocol}")


def interleaved(names: list[str], repeats: int) -> list[tuple[int, str]]:
    """(repeat, name) in training order: the pair's order alternates (a b, b a, a b, ...)."""
    order = []
    for r in range(repeats):
        order += [(r, name) for name in (names if r % 2 == 0 else names[::-1])]
    return order


def spread(seconds: list[float]) -> dict[str, Any]:
    """Mean, min, max and every run of one defense's seconds per epoch."""
    return {
        "seconds_per_epoch": sum(seconds) / len(seconds),
        "seconds_per_epoch_min": min(seconds),
        "seconds_per_epoch_max": max(seconds),
        "seconds_per_epoch_runs": list(seconds),
    }


def ratio(first: list[float], second: list[float]) -> dict[str, float]:
    """first / second: the ratio of the means, and its spread over the repeats (fastest first over
    slowest second, slowest first over fastest second)."""
    return {
        "mean": (sum(first) / len(first)) / (sum(second) / len(second)),
        "low": min(first) / max(second),
        "high": max(first) / min(second),
    }


def attack_strengths(
    reference: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, threat: Any, settings: dict[str, dict[str, Any]]
) -> dict[str, float]:
    """Cross-entropy each defense's training attack reaches on (x, y) against ``reference`` (PGD-AT:
    its steps and step size without the random start; JIIO: its joint solve)."""
    out = {}
    jiio_fields = {f.name for f in dataclasses.fields(JIIO)}
    for name, recipe_settings in settings.items():
        if "iterations" in recipe_settings:
            attack = JIIO(**{k: v for k, v in recipe_settings.items() if k in jiio_fields})
            x_adv = attack.perturb(reference, x, y).x_adv
        else:
            steps = int(recipe_settings["steps"])
            x_adv = pgd(reference, x, y, threat, steps, float(recipe_settings["step_size"]), random_start=False)
        with torch.no_grad():
            out[name] = float(F.cross_entropy(reference(x_adv), y))
    return out


def markdown(summary: dict[str, Any]) -> str:
    results = summary["results"]
    header = (
        "| defense | recipe | s/epoch: mean [min, max] | fwd evals | bwd evals | attack CE | clean % | PGD % | AA % "
        "| robust % |"
    )
    rows = [header, "|---" * 10 + "|"]
    for name, r in results.items():
        acc = {k: f"{100 * v:.1f}" for k, v in r["attacks"].items()}
        cells = [
            name,
            r["recipe"],
            f"{r['seconds_per_epoch']:.2f} [{r['seconds_per_epoch_min']:.2f}, {r['seconds_per_epoch_max']:.2f}]",
            str(r["train_forward_evals"]),
            str(r["train_backward_evals"]),
            f"{r['attack_cross_entropy']:.3f}",
            f"{100 * r['clean_accuracy']:.1f}",
            acc.get("pgd", "-"),
            acc.get("autoattack", "-"),
            f"{100 * r['robust_accuracy']:.1f}",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    q = summary["ratio_seconds_per_epoch"]
    first, second = summary["first"], summary["second"]
    return (
        "\n".join(rows)
        + f"\n\n{summary['protocol']}, {summary['repeats']} timed training run(s) per defense, interleaved. "
        f"Seconds per epoch {first} / {second}: {q['mean']:.2f} (ratio of the means), spread over the repeats "
        f"[{q['low']:.2f}, {q['high']:.2f}]; {second} / {first}: {summary['speedup_seconds_per_epoch']:.2f}x.\n"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=3, help="timed training runs per defense (default 3)")
    parser.add_argument("--first", default="deq-jiio", help="the JIIO-trained defense (id or folder)")
    parser.add_argument("--second", default="deq-pgd-at", help="the PGD-AT-trained defense (id or folder)")
    parser.add_argument("--protocol", default=None, help=f"protocol id or TOML file (default {DEFAULT_PROTOCOL})")
    parser.add_argument("--jiio-iterations", type=int, default=None, help="override the first defense's iterations")
    parser.add_argument("--mnist", type=Path, default=None, help="data dir holding MNIST (uses mnist-linf-0.3)")
    parser.add_argument("--train-subset", type=int, default=None)
    parser.add_argument("--n-examples", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--out", type=Path, default=None, help="results path without suffix (default: results/...)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    torch.set_num_threads(args.threads)
    name = args.protocol or ("mnist-linf-0.3" if args.mnist else DEFAULT_PROTOCOL)
    protocol = find_protocol(name)
    out = args.out or default_out(protocol.id)
    defenses: dict[str, DefenseSpec] = {d: find_defense(d) for d in (args.first, args.second)}
    specs = {}
    for d, defense in defenses.items():
        spec = dataclasses.replace(defense.train, epochs=args.epochs, train_subset=args.train_subset)
        if d == args.first and args.jiio_iterations is not None:
            spec = dataclasses.replace(
                spec, recipe_settings={**spec.recipe_settings, "iterations": args.jiio_iterations}
            )
        specs[d] = spec
    train_split = load(protocol.dataset, "train", args.mnist)
    test_split = load(protocol.dataset, "test", args.mnist)

    for d, defense in defenses.items():  # untimed: the first training in a process pays one-off costs
        warmup = dataclasses.replace(specs[d], epochs=1, train_subset=min(args.train_subset or WARMUP, WARMUP))
        train_model(defense, protocol.dataset, train_split, protocol.threat, warmup)
    seconds: dict[str, list[float]] = {d: [] for d in defenses}
    first_runs: dict[str, Any] = {}
    for repeat, d in interleaved(list(defenses), args.repeats):
        result = train_model(defenses[d], protocol.dataset, train_split, protocol.threat, specs[d])
        seconds[d].append(result.seconds / max(specs[d].epochs, 1))
        print(f"repeat {repeat + 1}/{args.repeats} {d}: {seconds[d][-1]:.3f} s/epoch", flush=True)
        if repeat == 0:
            first_runs[d] = result

    results: dict[str, dict[str, Any]] = {}
    for d, result in first_runs.items():
        evaluation = evaluate(result.model, protocol, test_split, args.n_examples)
        results[d] = {
            "defense": d,
            "recipe": specs[d].recipe,
            "epochs": specs[d].epochs,
            **spread(seconds[d]),
            "train_forward_evals": result.forward_evals,
            "train_backward_evals": result.backward_evals,
            "recipe_settings": result.recipe_settings,
            "clean_accuracy": evaluation.clean_accuracy,
            "robust_accuracy": evaluation.robust_accuracy,
            "attacks": evaluation.attack_accuracies(),
            "eval_seconds": evaluation.seconds,
        }
        print(d, json.dumps(results[d]), flush=True)

    # Strength of the two training attacks, on the same batch against the same (second, PGD-AT) model.
    reference = first_runs[args.second].model.eval()
    x, y = test_split.x[:128], test_split.y[:128]
    strengths = attack_strengths(
        reference, x, y, protocol.threat, {d: r.recipe_settings for d, r in first_runs.items()}
    )
    for d, value in strengths.items():
        results[d]["attack_cross_entropy"] = value
    q = ratio(seconds[args.first], seconds[args.second])
    summary = {
        "protocol": protocol.id,
        "first": args.first,
        "second": args.second,
        "repeats": args.repeats,
        "threads": args.threads,
        "results": results,
        "ratio_seconds_per_epoch": q,
        "speedup_seconds_per_epoch": 1 / q["mean"],
        "at": time.ctime(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    table = markdown(summary)
    out.with_suffix(".md").write_text(table)
    print(table)
    return summary


if __name__ == "__main__":
    main()
