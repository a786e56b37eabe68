"""An outside attacker: strong PGD of our own on the zoo's models, outside the protocol's code path.

For each named zoo model, every example its committed entry counts as robust is attacked with plain
PGD written here (no AttackView, no warm starts, no holds; the model in eval mode called cold, its
own attack-time gradient): ``--steps`` steps of 2.5 eps / steps from ``--restarts`` random starts,
once on the cross-entropy and once on the margin loss max_{j != y} z_j - z_y (Carlini & Wagner).
A model with robustdeq's inference-time loop (entropy reduction) is attacked with BPDA (the loop as
the identity on the backward pass: its ``bpda`` loop gradient) and through the loop (``unroll``).
Every candidate is verified as the protocol verifies (finite, in [0, 1], within eps, misclassified
by a fresh instance rebuilt from the checkpoint, cold). The verified breaks are written as a
challenge file (docs/challenge.md) that ``robustdeq challenge`` checks and records:

    python benchmarks/outside_attack.py deq-pgd-at lyadeq-pgd-at deq-pgd-at-er --out /tmp/outside
    robustdeq challenge zoo:digits-linf/deq-pgd-at /tmp/outside/deq-pgd-at.safetensors

Results (per model: examples attacked, verified breaks, their margins, seconds) go to
``benchmarks/results/outside_attack.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn

from robustdeq.data import load
from robustdeq.models.entropy import EntropyReduced
from robustdeq.pipeline import load_trained
from robustdeq.records.outcomes import decode_indices, unbits
from robustdeq.records.protocol import find_protocol
from robustdeq.records.store import read_entry
from robustdeq.records.threat import ThreatModel
from robustdeq.zoo import find_model

ROOT = Path(__file__).resolve().parent.parent


def margin_loss(logits: Tensor, y: Tensor) -> Tensor:
    """max_{j != y} z_j - z_y per example (positive: misclassified)."""
    other = logits.clone()
    other[torch.arange(len(y)), y] = -torch.inf
    return other.amax(1) - logits.gather(1, y[:, None]).squeeze(1)


def pgd(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, steps: int, loss: str, seed: int) -> Tensor:
    """One random start of L-inf / L2 PGD on ``loss``; returns the iterate with the largest margin seen."""
    generator = torch.Generator().manual_seed(seed)
    noise = 2 * torch.rand(x.shape, generator=generator) - 1
    if threat.norm == "L2":
        noise = noise / noise.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    x_adv = threat.project(x + threat.eps * noise, x)
    step = 2.5 * threat.eps / steps
    best, best_margin = x_adv.clone(), torch.full((len(y),), -torch.inf)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        logits = model(x_adv)
        margin = margin_loss(logits, y)
        objective = F.cross_entropy(logits, y, reduction="sum") if loss == "ce" else margin.sum()
        (grad,) = torch.autograd.grad(objective, x_adv)
        with torch.no_grad():
            better = margin.detach() > best_margin
            best[better], best_margin[better] = x_adv.detach()[better], margin.detach()[better]
            direction = (
                grad.sign()
                if threat.norm == "Linf"
                else grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            )
            x_adv = threat.project(x_adv + step * direction, x)
    with torch.no_grad():
        final = margin_loss(model(x_adv), y)
        better = final > best_margin
        best[better] = x_adv[better]
    return best.detach()


def attack(name: str, steps: int, restarts: int, out: Path) -> dict[str, Any]:
    model_info = find_model(name)
    entry = read_entry(model_info.entry)
    protocol = find_protocol(entry["protocol"])
    threat = protocol.threat
    _, trained = load_trained(f"zoo:{model_info.protocol}/{name}", "cpu")
    model = trained.model.eval()
    fresh = load_trained(f"zoo:{model_info.protocol}/{name}", "cpu")[1].model.eval()
    test = load(protocol.dataset, "test")
    indices = decode_indices(entry["per_example"]["indices"])
    robust = unbits(entry["per_example"]["robust"])
    targets = torch.tensor([i for i, r in zip(indices, robust, strict=True) if r])
    x, y = test.x[targets], test.y[targets]
    loops = ("bpda", "unroll") if isinstance(model, EntropyReduced) else (None,)
    started = time.perf_counter()
    found = x.clone()
    broken = torch.zeros(len(y), dtype=torch.bool)
    margins = torch.full((len(y),), -torch.inf)
    runs = 0
    for loop in loops:
        for loss in ("ce", "margin"):
            for restart in range(restarts):
                todo = ~broken
                if not bool(todo.any()):
                    break
                context = cast(EntropyReduced, model).loop_gradient_mode(loop) if loop else nullcontext()
                with context:
                    candidate = pgd(model, x[todo], y[todo], threat, steps, loss, seed=1000 * runs + restart)
                runs += 1
                with torch.no_grad():
                    logits = fresh(candidate)
                valid = threat.verify(candidate, x[todo])
                wrong = (logits.argmax(1) != y[todo]) & valid & torch.isfinite(logits).all(1)
                rows = torch.nonzero(todo).flatten()
                found[rows[wrong]] = candidate[wrong]
                margins[rows[wrong]] = margin_loss(logits, y[todo])[wrong]
                broken[rows[wrong]] = True
    seconds = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    file = out / f"{name}.safetensors"
    if bool(broken.any()):
        meta = {"by": "benchmarks/outside_attack.py", "attack": f"PGD-{steps} x {restarts} restarts, CE and margin"}
        save_file({"indices": targets[broken].contiguous(), "x_adv": found[broken].contiguous()}, str(file), meta)
    return {
        "model": name,
        "protocol": entry["protocol"],
        "entry_robust": int(sum(robust)),
        "attacked": len(y),
        "verified_breaks": [int(i) for i in targets[broken]],
        "margins": [round(float(m), 5) for m in margins[broken]],
        "loop_gradients": [loop for loop in loops if loop],
        "seconds": round(seconds, 1),
        "file": str(file) if bool(broken.any()) else None,
    }


def closest(name: str, index: int, steps: int, restarts: int) -> dict[str, Any]:
    """How close one example comes to breaking: the largest margin max_{j != y} z_j - z_y a fresh instance
    gives over ``restarts`` random starts on each loss (positive: broken), and how many starts broke it."""
    model_info = find_model(name)
    protocol = find_protocol(read_entry(model_info.entry)["protocol"])
    model = load_trained(f"zoo:{model_info.protocol}/{name}", "cpu")[1].model.eval()
    fresh = load_trained(f"zoo:{model_info.protocol}/{name}", "cpu")[1].model.eval()
    test = load(protocol.dataset, "test")
    x, y = test.x[[index]], test.y[[index]]
    with torch.no_grad():
        clean = float(margin_loss(fresh(x), y)[0])
    margins = []
    for k, loss in enumerate(("ce", "margin")):
        for restart in range(restarts):
            candidate = pgd(model, x, y, protocol.threat, steps, loss, seed=10_000 * (k + 1) + restart)
            with torch.no_grad():
                margins.append(float(margin_loss(fresh(candidate), y)[0]))
    return {
        "model": name,
        "index": index,
        "clean_margin": round(clean, 4),
        "best_margin": round(max(margins), 4),
        "starts": len(margins),
        "starts_that_break": sum(m > 0 for m in margins),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help="zoo names")
    parser.add_argument(
        "--closest",
        nargs="*",
        default=[],
        metavar="NAME:INDEX",
        help="also report how close these examples come to breaking over --closest-restarts starts per loss",
    )
    parser.add_argument("--closest-restarts", type=int, default=20)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--restarts", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("/tmp/outside-attack"))
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "outside_attack")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in args.models:
        row = attack(name, args.steps, args.restarts, args.out)
        print(json.dumps(row))
        rows.append(row)
    near = []
    for spec in args.closest:
        name, _, index = spec.rpartition(":")
        row = closest(name, int(index), args.steps, args.closest_restarts)
        print(json.dumps(row))
        near.append(row)
    result = {"steps": args.steps, "restarts": args.restarts, "models": rows, "closest": near}
    args.results.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        f"# Outside attack: PGD-{args.steps} x {args.restarts} restarts, CE and margin (benchmarks/outside_attack.py)",
        "",
        "| model | protocol | robust in entry | verified breaks (test index: margin) | seconds |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        breaks = ", ".join(f"#{i}: {m:.3g}" for i, m in zip(r["verified_breaks"], r["margins"], strict=True)) or "none"
        lines.append(f"| {r['model']} | {r['protocol']} | {r['entry_robust']} | {breaks} | {r['seconds']} |")
    if near:
        lines += [
            "",
            f"How close single examples come (PGD-{args.steps}, {args.closest_restarts} random starts on each loss; "
            "margin max_{j != y} z_j - z_y on a fresh instance, positive: broken):",
            "",
            "| model | test index | clean margin | best margin | starts that break |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['model']} | {r['index']} | {r['clean_margin']} | {r['best_margin']} | "
            f"{r['starts_that_break']} of {r['starts']} |"
            for r in near
        ]
    args.results.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
