"""Do the fast DEQ attacks reach the same verdicts as naive ones? The full protocol, both ways.

For every DEQ of the core suite with a shipped checkpoint (``leaderboards/<protocol>/``), the
committed entry is the fast evaluation (``warm_start = true``: per-example warm starts, per-example
stopping, PGD holds). This script evaluates the same checkpoint under the same protocol with
``warm_start = false`` (every forward and adjoint solve from zeros with the batch solver, no holds:
what a plain torchattacks / pyautoattack call does) and compares the robust sets example by
example. For each example on which they differ it lists which attacks broke it on each side: a
verified adversarial example exists on the side where it is broken, so that side is right (the
example is not robust) and the other side's attacks missed it.

Both evaluations stop each solve at the defense's tolerance (1e-3 relative), so their gradients
agree to about that tolerance, not exactly: an example whose attack trajectory passes close to the
decision boundary can end on either side. The tolerance check shows it: PGD-20 (IFT gradient) on
the protocol's examples, naive against warm, once at the defense's tolerances and once at
f_tol = b_tol = 1e-6; at the tight tolerance the two runs' adversarial examples coincide.

    python benchmarks/same_verdicts.py                 # the core DEQs, ~15 min on 2 cores at 100 examples
    python benchmarks/same_verdicts.py --defenses deq-pgd-at --n-examples 100
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustdeq.api import evaluate
from robustdeq.data import load
from robustdeq.deq import equilibria
from robustdeq.evaluation.attacks import PGD
from robustdeq.evaluation.runner import select_subset
from robustdeq.evaluation.view import AttackView
from robustdeq.leaderboard import read_entries
from robustdeq.pipeline import load_trained
from robustdeq.records.defense import list_defenses, load_defense
from robustdeq.records.outcomes import LETTERS, NOT_BROKEN, decode_indices, unbits
from robustdeq.records.paths import DEFENSES_DIR
from robustdeq.records.protocol import ProtocolSpec, find_protocol

ROOT = Path(__file__).resolve().parent.parent


def breakers(entry: dict[str, Any]) -> list[str]:
    """Per example: the first attack run that broke it ('' if none or clean-misclassified)."""
    outcomes = entry["per_example"]
    order = outcomes["attack_order"]
    return ["" if b == NOT_BROKEN else order[LETTERS.index(b)] for b in outcomes["broken_by"]]


def compare(fast: dict[str, Any], naive: dict[str, Any]) -> dict[str, Any]:
    indices = decode_indices(fast["per_example"]["indices"])
    assert indices == decode_indices(naive["per_example"]["indices"])
    robust_fast, robust_naive = unbits(fast["per_example"]["robust"]), unbits(naive["per_example"]["robust"])
    by_fast, by_naive = breakers(fast), breakers(naive)
    differing = []
    for k, (a, b) in enumerate(zip(robust_fast, robust_naive, strict=True)):
        if a != b:
            differing.append(
                {
                    "test_index": indices[k],
                    "robust_fast": a,
                    "robust_naive": b,
                    "broken_by_fast": by_fast[k],
                    "broken_by_naive": by_naive[k],
                    "right": "naive" if a else "fast",  # the side with a verified adversarial example
                }
            )
    return {
        "n_examples": len(indices),
        "robust_fast": sum(robust_fast),
        "robust_naive": sum(robust_naive),
        "clean_same": fast["per_example"]["clean_correct"] == naive["per_example"]["clean_correct"],
        "differing": differing,
    }


def tolerance_check(model: nn.Module, protocol: ProtocolSpec) -> dict[str, Any]:
    """PGD-20 (IFT gradient) naive against warm on the protocol's examples, at the defense's solver
    tolerances and at 1e-6: the examples whose verdicts differ and the largest gap between the
    two runs' adversarial examples."""
    test = load(protocol.dataset, "test")
    idx = select_subset(protocol, test)
    x, y = test.x[idx], test.y[idx]
    (layer,) = equilibria(model)
    default = layer.spec
    pgd = PGD(protocol.threat, protocol.seed, protocol.batch_size, steps=20, step_size=protocol.threat.eps / 4)
    out: dict[str, Any] = {}
    for label, spec in (
        ("defense_tolerance", default),
        ("tolerance_1e-6", default.replace(f_tol=1e-6, b_tol=1e-6, f_max_iter=300, b_max_iter=300)),
    ):
        layer.spec = spec
        runs = {}
        for warm in (False, True):
            x_adv = pgd(AttackView(model, x, protocol.threat, warm, None), x, y).x_adv
            with torch.no_grad():
                robust = (model(x_adv).argmax(1) == y) & (model(x).argmax(1) == y)
            runs[warm] = (x_adv, robust)
        gap = (runs[False][0] - runs[True][0]).flatten(1).abs().amax(1)
        out[label] = {
            "f_tol": spec.f_tol,
            "b_tol": spec.b_tol,
            "robust_naive": int(runs[False][1].sum()),
            "robust_warm": int(runs[True][1].sum()),
            "differing_verdicts": idx[runs[False][1] != runs[True][1]].tolist(),
            "max_gap": float(gap.max()),
            "rows_apart": int((gap > 1e-6).sum()),
        }
    layer.spec = default
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", default="digits-linf")
    parser.add_argument("--defenses", default=None, help="comma-separated ids (default: the core suite's DEQs)")
    parser.add_argument("--leaderboards", type=Path, default=ROOT / "leaderboards")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "same_verdicts")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    protocol = find_protocol(args.protocol)
    folder = args.leaderboards / protocol.id
    committed = {e["defense"]: e for e in read_entries(folder)}
    if args.defenses:
        names = args.defenses.split(",")
    else:
        core = [d for d in list_defenses() if load_defense(DEFENSES_DIR / d).suite == "core"]
        names = [d for d in core if d in committed and committed[d].get("solver")]
    # The worst case needs the attacks and the [checks] re-runs that count in it; the eps sweep
    # and the papers' own evaluations are outside it.
    naive_protocol = dataclasses.replace(protocol, warm_start=False, paper_evaluations=False, eps_sweep=())
    report: dict[str, Any] = {"protocol": protocol.id, "protocol_version": protocol.version, "defenses": {}}
    for name in names:
        entry = committed[name]
        _, trained = load_trained(folder / f"{name}.safetensors")
        began = time.perf_counter()
        naive = evaluate(trained.model, naive_protocol, name=name, progress=False).data
        seconds = time.perf_counter() - began
        result = compare(entry, naive)
        result["seconds_naive"] = round(seconds, 1)
        result["seconds_fast"] = round(sum(entry["provenance"].get("attack_seconds", {}).values()), 1)
        result["pgd20_tolerance_check"] = tolerance_check(trained.model.eval(), protocol)
        report["defenses"][name] = result
        print(name, json.dumps(result), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(table(report))
    print(table(report))


def table(report: dict[str, Any]) -> str:
    rows = [
        f"Fast (warm-started) against naive attacks, protocol {report['protocol']} v{report['protocol_version']},"
        " full protocol per defense\n",
        "| defense | n | robust fast | robust naive | differing examples |",
        "|---|---|---|---|---|",
    ]
    for name, r in report["defenses"].items():
        diffs = (
            "; ".join(
                f"#{d['test_index']}: broken by {d['broken_by_fast'] or '-'} (fast) / {d['broken_by_naive'] or '-'}"
                f" (naive), {d['right']} right"
                for d in r["differing"]
            )
            or "none"
        )
        rows.append(f"| {name} | {r['n_examples']} | {r['robust_fast']} | {r['robust_naive']} | {diffs} |")
    rows += [
        "",
        "PGD-20 (IFT) naive against warm, at the defense's solver tolerances and at 1e-6:",
        "",
        "| defense | tolerance | robust naive | robust warm | differing verdicts | rows apart | max gap |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in report["defenses"].items():
        for label, t in r["pgd20_tolerance_check"].items():
            cells = [name, label, t["robust_naive"], t["robust_warm"], t["differing_verdicts"] or "none"]
            rows.append("| " + " | ".join(str(c) for c in [*cells, t["rows_apart"], f"{t['max_gap']:.2g}"]) + " |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    main()
