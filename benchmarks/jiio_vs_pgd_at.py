"""JIIO versus PGD adversarial training of the same DEQ: speed, solver work and robustness.

Trains the reference DEQ (defenses/deq-pgd-at: model and solver settings) for the same number
of epochs with PGD-AT (7 steps, the manifest's recipe) and with JIIO (joint fixed point over
state, perturbation and adjoint), then evaluates both under the digits protocol (PGD-20 and
AutoAttack standard). Reports per method: wall time per epoch, forward and backward cell
evaluations during training, the strength of each training attack (cross-entropy it reaches on
a fixed batch against the final PGD-AT model), clean and robust accuracies.

    python benchmarks/jiio_vs_pgd_at.py                       # digits, ~8 minutes on 2 cores
    python benchmarks/jiio_vs_pgd_at.py --mnist ../shared/data --train-subset 5000 --n-examples 200
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from robustdeq.data import load
from robustdeq.evaluation import evaluate
from robustdeq.records.defense import load_defense
from robustdeq.records.paths import ATTACKS_DIR, DEFENSES_DIR
from robustdeq.records.protocol import find_protocol
from robustdeq.threat import pgd
from robustdeq.training import train_model
from robustdeq.training.jiio import JIIO


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--jiio-iterations", type=int, default=30)
    parser.add_argument("--mnist", type=Path, default=None, help="data dir holding MNIST (uses mnist-linf-0.3)")
    parser.add_argument("--train-subset", type=int, default=None)
    parser.add_argument("--n-examples", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "jiio_vs_pgd_at")
    args = parser.parse_args()

    torch.set_num_threads(2)
    protocol = find_protocol(str(ATTACKS_DIR / ("mnist-linf-0.3.toml" if args.mnist else "digits-linf.toml")))
    base = load_defense(DEFENSES_DIR / "deq-pgd-at")
    train_split = load(protocol.dataset, "train", args.mnist)
    test_split = load(protocol.dataset, "test", args.mnist)
    common = {"epochs": args.epochs, "train_subset": args.train_subset}
    recipes = {
        "pgd_at": dataclasses.replace(base.train, **common),
        "jiio": dataclasses.replace(
            base.train, recipe="jiio", recipe_settings={"iterations": args.jiio_iterations}, **common
        ),
    }

    results: dict[str, dict[str, object]] = {}
    models = {}
    for name, spec in recipes.items():
        result = train_model(base, protocol.dataset, train_split, protocol.threat, spec)
        models[name] = result.model
        evaluation = evaluate(result.model, protocol, test_split, args.n_examples)
        results[name] = {
            "epochs": spec.epochs,
            "seconds_per_epoch": result.seconds / max(spec.epochs, 1),
            "train_forward_evals": result.forward_evals,
            "train_backward_evals": result.backward_evals,
            "recipe_settings": result.recipe_settings,
            "clean_accuracy": evaluation.clean_accuracy,
            "robust_accuracy": evaluation.robust_accuracy,
            "attacks": evaluation.attack_accuracies(),
            "eval_seconds": evaluation.seconds,
        }
        print(name, json.dumps(results[name]))

    # Strength of the two training attacks, on the same batch against the same (PGD-AT) model.
    reference = models["pgd_at"].eval()
    x, y = test_split.x[:128], test_split.y[:128]
    steps = int(base.train.recipe_settings.get("steps", 7))
    eps = protocol.threat.eps
    x_pgd = pgd(reference, x, y, protocol.threat, steps, 2.5 * eps / steps, random_start=False)
    x_jiio = JIIO(protocol.threat.norm, eps, args.jiio_iterations, eps / 4).perturb(reference, x, y).x_adv
    with torch.no_grad():
        results["pgd_at"]["attack_cross_entropy"] = float(F.cross_entropy(reference(x_pgd), y))
        results["jiio"]["attack_cross_entropy"] = float(F.cross_entropy(reference(x_jiio), y))
    per_epoch = {name: float(r["seconds_per_epoch"]) for name, r in results.items()}
    ratio = per_epoch["pgd_at"] / per_epoch["jiio"]
    summary = {"protocol": protocol.id, "results": results, "speedup_seconds_per_epoch": ratio, "at": time.ctime()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    header = "| method | s/epoch | fwd evals | bwd evals | attack CE | clean % | PGD % | AA % | robust % |"
    rows = [header, "|---" * 9 + "|"]
    for name, r in results.items():
        acc = {k: 100 * v for k, v in r["attacks"].items()}
        cells = [
            name,
            f"{per_epoch[name]:.2f}",
            str(r["train_forward_evals"]),
            str(r["train_backward_evals"]),
            f"{r['attack_cross_entropy']:.3f}",
            f"{100 * r['clean_accuracy']:.1f}",
            f"{acc['pgd']:.1f}",
            f"{acc['autoattack']:.1f}",
            f"{100 * r['robust_accuracy']:.1f}",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    table = "\n".join(rows) + f"\n\nPGD-AT / JIIO seconds per epoch: {ratio:.2f}x\n"
    args.out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
