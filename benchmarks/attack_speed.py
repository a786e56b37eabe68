"""Attacking a DEQ naively versus with robustdeq's warm starts: wall time, solver work, robust accuracy.

On a trained reference DEQ (defenses/deq-pgd-at, trained here unless ``--checkpoint`` names a
``robustdeq train`` folder), runs the same attack on the same test subset two ways:

- ``naive``: every forward solve starts from zeros and stops when the whole batch has
  converged, every IFT backward solve starts from zeros: what a plain torchattacks /
  pyautoattack call on the model does;
- ``warm``: through :class:`robustdeq.evaluation.view.AttackView` with warm starts: each
  example's forward solve starts from its last fixed point, its adjoint solve from its last
  adjoint, and each example stops at its own tolerance.

Both runs verify their adversarial examples and re-classify them from a cold start with the
protocol's solver settings (as the evaluation does), so the robust accuracies are comparable.
Repetitions are interleaved (naive, warm, naive, warm, ...); wall times are medians. The floor
is the explicit weight-tied model with the DEQ's own block (same weights) applied as many times
as the DEQ's mean solver steps on clean inputs, attacked by plain backpropagation.

The goal (issue 22): on the warm path, PGD-20, Square (1,000 queries) and AutoAttack standard
each within 1.5x of the explicit floor's wall time. ``--profile`` also writes the top of a
cProfile of one more warm AutoAttack run, untimed (``<out>_profile.txt``): where a DEQ's attack time goes.

    python benchmarks/attack_speed.py --n-examples 100 --profile   # PGD-20 x3, Square x1, AutoAttack x1 (~8 min)
    python benchmarks/attack_speed.py --skip-autoattack --repeats 5
    python benchmarks/attack_speed.py --mnist ../shared/data --n-examples 100
    python benchmarks/attack_speed.py --checkpoint leaderboards/digits-linf/deq-pgd-at.safetensors --n-examples 100 \
        --lyadeq leaderboards/digits-linf/lyadeq-pgd-at.safetensors   # + LyaDEQ AutoAttack vs the DEQ (goal 2x)
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robustdeq.data import load
from robustdeq.deq import equilibria
from robustdeq.evaluation.attacks import PGD, Attack, AutoAttackSuite, Square
from robustdeq.evaluation.view import AttackView
from robustdeq.pipeline import load_trained
from robustdeq.records.defense import load_defense
from robustdeq.records.paths import ATTACKS_DIR, DEFENSES_DIR
from robustdeq.records.protocol import find_protocol
from robustdeq.training import train_model

GOAL = 1.5  # warm wall time / explicit floor wall time, per attack
LYADEQ_GOAL = 2.0  # LyaDEQ's AutoAttack wall time / the DEQ's warm AutoAttack wall time


def attack_once(
    model: nn.Module, attack: Attack, x: Tensor, y: Tensor, warm: bool, profile: cProfile.Profile | None = None
) -> dict[str, Any]:
    layers = equilibria(model)
    for layer in layers:
        layer.counters.reset()
    labels = y if warm and attack.holds_broken else None
    view = AttackView(model, x, attack.threat, warm_start=warm, labels=labels)
    start = time.perf_counter()
    if profile is not None:
        profile.enable()
    out = attack(view, x, y)
    if profile is not None:
        profile.disable()
    seconds = time.perf_counter() - start
    work = {
        "forward_example_evals": sum(layer.counters.forward_example_evals for layer in layers),
        "backward_example_evals": sum(layer.counters.backward_example_evals for layer in layers),
        "forward_batch_evals": sum(layer.counters.forward_evals for layer in layers),
        "backward_batch_evals": sum(layer.counters.backward_evals for layer in layers),
    }
    model.eval()
    with torch.no_grad():  # verified examples, re-classified from a cold start
        robust = (model(out.x_adv).argmax(1) == y) & (model(x).argmax(1) == y)
    return {"seconds": seconds, "robust_accuracy": float(robust.float().mean()), **work}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("forward_example_evals", "backward_example_evals", "forward_batch_evals", "backward_batch_evals")
    return {
        "median_seconds": statistics.median(r["seconds"] for r in runs),
        "seconds": [round(r["seconds"], 3) for r in runs],
        "robust_accuracy": [r["robust_accuracy"] for r in runs],
        **{key: runs[-1][key] for key in keys},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None, help="a `robustdeq train` folder of deq-pgd-at")
    parser.add_argument("--mnist", type=Path, default=None, help="data dir holding MNIST (uses mnist-linf-0.3)")
    parser.add_argument("--n-examples", type=int, default=250, help="first N test examples (default 250)")
    parser.add_argument("--repeats", type=int, default=3, help="PGD-20 repetitions per mode")
    parser.add_argument("--autoattack-repeats", type=int, default=1)
    parser.add_argument("--square-queries", type=int, default=1000)
    parser.add_argument("--skip-autoattack", action="store_true")
    parser.add_argument("--profile", action="store_true", help="cProfile one more, untimed, warm AutoAttack run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--lyadeq",
        default=None,
        help="also time AutoAttack standard on this LyaDEQ checkpoint (a checkpoint file or zoo:NAME) on the"
        " same examples, against the DEQ's warm AutoAttack (goal: within 2x)",
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "attack_speed")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    protocol = find_protocol(str(ATTACKS_DIR / ("mnist-linf-0.3.toml" if args.mnist else "digits-linf.toml")))
    if args.checkpoint is not None:
        _, trained = load_trained(args.checkpoint)
        model = trained.model
    else:
        defense = load_defense(DEFENSES_DIR / "deq-pgd-at")
        train = load(protocol.dataset, "train", args.mnist)
        model = train_model(defense, protocol.dataset, train, protocol.threat, defense.train).model
    model.eval()
    test = load(protocol.dataset, "test", args.mnist)
    x, y = test.x[: args.n_examples], test.y[: args.n_examples]
    threat = protocol.threat

    with torch.no_grad():
        model(x)
    (layer,) = equilibria(model)
    assert layer.last_stats is not None
    mean_steps = float(layer.last_stats.nstep.float().mean())
    floor = model.explicit_twin(max(1, round(mean_steps))).eval()  # type: ignore[operator]

    pgd = PGD(threat, seed=protocol.seed, batch_size=len(y), steps=20, step_size=threat.eps / 4)
    results: dict[str, Any] = {
        "data": protocol.dataset,
        "n_examples": len(y),
        "threat": {"norm": threat.norm, "eps": threat.eps},
        "solver": layer.spec.to_dict(),
        "mean_clean_solver_steps": mean_steps,
        "threads": torch.get_num_threads(),
    }
    square = Square(threat, seed=protocol.seed, batch_size=len(y), n_queries=args.square_queries)
    suites: list[tuple[str, Attack, int]] = [("pgd20", pgd, args.repeats), ("square", square, 1)]
    if not args.skip_autoattack:
        aa = AutoAttackSuite(threat, seed=protocol.seed, batch_size=len(y))
        suites.append(("autoattack", aa, args.autoattack_repeats))
    profile = cProfile.Profile() if args.profile and not args.skip_autoattack else None
    for name, attack, repeats in suites:
        runs: dict[str, list[dict[str, Any]]] = {"naive": [], "warm": [], "floor": []}
        for _ in range(repeats):
            for mode in runs:
                target = floor if mode == "floor" else model
                runs[mode].append(attack_once(target, attack, x, y, warm=mode == "warm"))
                print(name, mode, json.dumps(runs[mode][-1]), flush=True)
        if name == "autoattack" and profile is not None:  # an extra run: the profiler slows what it watches
            attack_once(model, attack, x, y, warm=True, profile=profile)
        naive, warm, flat = (summarise(runs[m]) for m in ("naive", "warm", "floor"))
        results[name] = {
            "naive": naive,
            "warm": warm,
            f"explicit_floor_depth_{floor.depth}": {
                "median_seconds": flat["median_seconds"],
                "seconds": flat["seconds"],
                "robust_accuracy": flat["robust_accuracy"],
            },
            "forward_evals_ratio": naive["forward_example_evals"] / max(1, warm["forward_example_evals"]),
            "backward_evals_ratio": naive["backward_example_evals"] / max(1, warm["backward_example_evals"]),
            "wall_ratio": naive["median_seconds"] / warm["median_seconds"],
            "warm_over_floor_wall": warm["median_seconds"] / flat["median_seconds"],
        }
    if args.lyadeq is not None and "autoattack" in results:
        _, lyadeq = load_trained(args.lyadeq)
        lyadeq.model.eval()
        aa = AutoAttackSuite(threat, seed=protocol.seed, batch_size=len(y))
        lyadeq_runs = [attack_once(lyadeq.model, aa, x, y, warm=False) for _ in range(args.autoattack_repeats)]
        print("autoattack lyadeq", json.dumps(lyadeq_runs[-1]), flush=True)
        seconds = statistics.median(r["seconds"] for r in lyadeq_runs)
        results["lyadeq_autoattack"] = {
            "checkpoint": str(args.lyadeq),
            "median_seconds": seconds,
            "seconds": [round(r["seconds"], 3) for r in lyadeq_runs],
            "robust_accuracy": [r["robust_accuracy"] for r in lyadeq_runs],
            "over_deq_warm_wall": seconds / results["autoattack"]["warm"]["median_seconds"],
        }
    text = json.dumps(results, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(text + "\n")
    args.out.with_suffix(".md").write_text(table(results, [name for name, _, _ in suites]))
    if profile is not None:
        summary = io.StringIO()
        stats = pstats.Stats(profile, stream=summary)
        stats.strip_dirs().sort_stats("cumulative").print_stats(30)
        stats.sort_stats("tottime").print_stats(20)
        header = f"cProfile of the warm AutoAttack run ({results['data']}, {len(y)} examples)\n"
        Path(f"{args.out}_profile.txt").write_text(header + summary.getvalue())


def table(results: dict[str, Any], attacks: list[str]) -> str:
    """The JSON's headline numbers as a Markdown table."""
    rows = [
        "| attack | mode | median s | fwd evals | bwd evals | robust % |",
        "|---|---|---|---|---|---|",
    ]
    for name in attacks:
        r = results[name]
        for mode in ("naive", "warm"):
            m = r[mode]
            acc = ", ".join(f"{100 * a:.1f}" for a in m["robust_accuracy"])
            cells = [name, mode, f"{m['median_seconds']:.2f}", str(m["forward_example_evals"])]
            rows.append("| " + " | ".join([*cells, str(m["backward_example_evals"]), acc]) + " |")
        (floor_key,) = [k for k in r if k.startswith("explicit_floor")]
        f = r[floor_key]
        acc = ", ".join(f"{100 * a:.1f}" for a in f["robust_accuracy"])
        rows.append(f"| {name} | {floor_key} | {f['median_seconds']:.2f} | - | - | {acc} |")
    lines = ["\n".join(rows), ""]
    for name in attacks:
        r = results[name]
        lines.append(
            f"{name}: forward evals {r['forward_evals_ratio']:.2f}x fewer, backward {r['backward_evals_ratio']:.2f}x"
            f" fewer, wall {r['wall_ratio']:.2f}x faster; warm / explicit floor wall {r['warm_over_floor_wall']:.2f}x"
            f" (goal <= {GOAL}x: {'met' if r['warm_over_floor_wall'] <= GOAL else 'not met'})"
        )
    if "lyadeq_autoattack" in results:
        r = results["lyadeq_autoattack"]
        acc = ", ".join(f"{100 * a:.1f}" for a in r["robust_accuracy"])
        lines.append(
            f"LyaDEQ ({r['checkpoint']}) AutoAttack: {r['median_seconds']:.2f} s (robust {acc}%), "
            f"{r['over_deq_warm_wall']:.2f}x the DEQ's warm AutoAttack"
            f" (goal <= {LYADEQ_GOAL}x: {'met' if r['over_deq_warm_wall'] <= LYADEQ_GOAL else 'not met'})"
        )
    header = f"{results['data']}, {results['n_examples']} examples, {results['threads']} threads\n\n"
    return header + "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
