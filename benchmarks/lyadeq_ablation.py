"""LyaDEQ on digits: does the Lyapunov module act, what does each part contribute, and the paper's claims.

    python benchmarks/lyadeq_ablation.py                 # trains the eight ablation arms (six took 11 min on 2 cores)
    python benchmarks/lyadeq_ablation.py --out /tmp/abl  # where the arms' entries go (resumable: kept if current)

1. **The arms.** benchmarks/ablations/lyadeq-{plain,lyapunov-only,orthogonal-only,unconstrained-only}-
   {standard,trades} are trained and evaluated under digits-linf (every attack, checks and the eps
   sweep); the arm with both parts is the committed reference entry (defenses/lyadeq-standard,
   lyadeq-trades). Every arm has the same cell (bound 0.9), solver budget (12 steps), training,
   epochs and seed. The orthogonal layer adds a 256x256 layer (71,642 parameters against the plain
   arm's 5,850), so the unconstrained-only arm puts a plain 256x256 linear layer of the same size in
   its place: orthogonal-only against unconstrained-only is the effect of orthogonality at equal
   capacity. An arm's entry in --out is reused only if its key matches (:func:`arm_key`: the
   protocol's hash, the arm's manifest and the source of the robustdeq code that builds, trains and
   evaluates it), so a changed model, recipe or manifest retrains the arm.
2. **The module acts**, measured on the zoo's trained lyadeq-standard, lyadeq-pgd-at and lyadeq-trades
   (the committed checkpoints): how far the module moves the states the head reads from the plain
   cell's fixed point and from the plain cell's 12-step state (same weights, module off), how close
   together it draws them, V's task-loss gradient and how far V moved from its initialisation, V's
   decrease along the solver's steps on clean and PGD-20 inputs, the predictions with the module
   switched off, and the share of readouts that are equilibria (residual <= 1e-3).
3. **The paper's claims**, with 95% intervals and exact McNemar p-values on the paired examples:
   (1) LyaDEQ without adversarial training is more robust than the DEQ; (2) the gain grows with eps;
   (3) LyaDEQ with TRADES is more robust than the DEQ with TRADES. Each against the ablation's plain
   arm (same cell, budget, training) and against the reference DEQ (deq-standard / deq-trades: the
   same cell solved to its equilibrium). Beside them, orthogonality at equal size: orthogonal-only
   against unconstrained-only, under each training.

Results: benchmarks/results/lyadeq_ablation.md and .json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from robustdeq.data import load
from robustdeq.leaderboard.stats import paired_difference, unpaired_difference, wilson
from robustdeq.models.lyadeq import LyaDEQClassifier
from robustdeq.pipeline import Budget, load_trained, run_defenses
from robustdeq.progress import Progress
from robustdeq.records.defense import DefenseSpec, load_defense
from robustdeq.records.outcomes import unbits
from robustdeq.records.protocol import ProtocolSpec, find_protocol
from robustdeq.records.store import read_entry
from robustdeq.threat import pgd
from robustdeq.training import build_model

REPO = Path(__file__).resolve().parent.parent
LEADERBOARD = REPO / "leaderboards" / "digits-linf"
ARMS = ("plain", "lyapunov-only", "orthogonal-only", "unconstrained-only")
RECIPES = ("standard", "trades")
# The robustdeq source an arm's entry depends on: what builds the model (models/, deq/), trains it
# (training/, threat.py, data.py), evaluates it (evaluation/, validate.py) and writes the entry
# (pipeline.py, checkpoint.py, records/, device.py). The readers (tables, report, site) are left out.
CODE = ("models", "deq", "training", "evaluation", "records", "threat.py", "data.py", "validate.py", "device.py",
        "pipeline.py", "checkpoint.py")  # fmt: skip
PACKAGE = REPO / "robustdeq"


def code_hash(package: Path = PACKAGE) -> str:
    """SHA-256 of the :data:`CODE` modules' source (every ``.py`` file, by path and content)."""
    digest = hashlib.sha256()
    for name in CODE:
        target = package / name
        files = sorted(target.rglob("*.py")) if target.is_dir() else [target]
        for path in files:
            digest.update(path.relative_to(package).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def arm_key(defense: DefenseSpec, protocol: ProtocolSpec, code: str) -> str:
    """What an arm's cached entry must have been computed with: the protocol (its hash), the arm's
    manifest (its text) and the code (:func:`code_hash`); the torch version too."""
    parts = (protocol.hash, defense.manifest, code, torch.__version__)
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def key_path(out: Path, protocol: ProtocolSpec, name: str) -> Path:
    return out / protocol.id / f".{name}.ablation-key"


def cached_entry(out: Path, defense: DefenseSpec, protocol: ProtocolSpec, code: str) -> dict[str, Any] | None:
    """The arm's entry in ``out`` if it was computed with this protocol, manifest and code, else None."""
    path, key = out / protocol.id / f"{defense.id}.json", key_path(out, protocol, defense.id)
    if not (path.is_file() and key.is_file()) or key.read_text().strip() != arm_key(defense, protocol, code):
        return None
    entry = read_entry(path)
    return entry if entry["protocol_hash"] == protocol.hash else None


def remember(out: Path, defense: DefenseSpec, protocol: ProtocolSpec, code: str) -> None:
    """Record the key of the arm's entry just written to ``out``."""
    key_path(out, protocol, defense.id).write_text(arm_key(defense, protocol, code) + "\n")


def arm_entries(out: Path, jobs: int) -> dict[str, dict[str, Any]]:
    """Every arm's entry: the eight ablation arms (trained here unless current) and the reference 'both'."""
    protocol = find_protocol("digits-linf")
    code = code_hash()
    entries: dict[str, dict[str, Any]] = {}
    todo = []
    for recipe in RECIPES:
        for arm in ARMS:
            defense = load_defense(REPO / "benchmarks" / "ablations" / f"lyadeq-{arm}-{recipe}")
            cached = cached_entry(out, defense, protocol, code)
            if cached is not None:
                entries[defense.id] = cached
            else:
                todo.append(defense)
        entries[f"lyadeq-both-{recipe}"] = read_entry(LEADERBOARD / f"lyadeq-{recipe}.json")
        entries[f"deq-{recipe}"] = read_entry(LEADERBOARD / f"deq-{recipe}.json")
    ran = run_defenses(todo, protocol, None, False, out, Budget(), Progress(), jobs)
    for defense, entry in zip(todo, ran, strict=True):
        remember(out, defense, protocol, code)
        entries[entry["defense"]] = entry
    return entries


def plain_fixed_point(model: LyaDEQClassifier, x: Tensor) -> Tensor:
    """The plain cell's fixed point z* = relu(W z* + U x) with the model's weights (to 1e-6)."""
    from torchdeq.solver import get_solver

    u, weight = model.inject(x), model.cell.effective_weight()
    z, _, info = get_solver("anderson")(
        lambda z: model.f(z, u, weight), torch.zeros(len(x), *model.state_shape), max_iter=200, tol=1e-6,
        stop_mode="rel", lam=1e-8,
    )  # fmt: skip
    return z


def module_acts(name: str) -> dict[str, Any]:
    """The measurements of item 2 on the zoo's trained ``name``."""
    defense, trained = load_trained(f"zoo:digits-linf/{name}")
    model = trained.model
    assert isinstance(model, LyaDEQClassifier)
    test = load("digits", "test")
    x, y = test.x, test.y
    protocol = find_protocol("digits-linf")
    out: dict[str, Any] = {"defense": name}
    with torch.no_grad():
        readout = model.trajectory(x)[-1]
        z_star = plain_fixed_point(model, x)
        model.use_lyapunov = False
        plain_state = model.trajectory(x)[-1]
        plain_logits = model(x)
        model.use_lyapunov = True
        logits = model(x)

    def relative(a: Tensor, b: Tensor) -> float:
        return float(((a - b).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1)).mean())

    out["relative_distance_to_plain_fixed_point"] = relative(readout, z_star)
    out["relative_distance_to_plain_12_step_state"] = relative(readout, plain_state)
    out["mean_pairwise_distance"] = {
        "readout": float(torch.pdist(readout.flatten(1)).mean()),
        "plain_fixed_point": float(torch.pdist(z_star.flatten(1)).mean()),
    }
    out["predictions_changed_by_switching_the_module_off"] = float(
        (logits.argmax(1) != plain_logits.argmax(1)).float().mean()
    )
    out["clean_accuracy_with_module"] = float((logits.argmax(1) == y).float().mean())
    out["clean_accuracy_module_off"] = float((plain_logits.argmax(1) == y).float().mean())
    out["readouts_that_are_equilibria"] = float((model.readout_residual(x) <= 1e-3).float().mean())
    out["mean_readout_residual"] = float(model.readout_residual(x).mean())
    out["projection_rate"] = model.projection_rate(x)
    # V's gradient from the task loss, and how far training moved V from its initialisation.
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x[:256]), y[:256]).backward()
    out["v_gradient_norms"] = {
        n: float(p.grad.norm()) for n, p in model.lyapunov.named_parameters() if p.grad is not None
    }
    torch.manual_seed(defense.train.seed)
    initial = build_model(defense, "digits")
    assert isinstance(initial, LyaDEQClassifier)
    moved = {}
    for (n, p), (_, p0) in zip(model.lyapunov.named_parameters(), initial.lyapunov.named_parameters(), strict=True):
        moved[n] = float((p.detach() - p0.detach()).norm() / p0.detach().norm())
    out["v_relative_change_from_initialisation"] = moved
    # V along the solver's steps, on clean and on PGD-20 inputs.
    x_adv = pgd(model, x, y, protocol.threat, 20, protocol.threat.eps / 4, True, torch.Generator().manual_seed(0))
    factor = math.exp(-model.alpha)
    for label, inputs in (("clean", x), ("pgd20", x_adv)):
        with torch.no_grad():
            v = torch.stack([model.lyapunov(z) for z in model.trajectory(inputs)], 1)
        steps = v[:, 1:] <= factor * v[:, :-1] * (1 + 1e-5)
        out[f"v_decreases_by_exp_minus_alpha_on_{label}"] = float(steps.float().mean())
        out[f"v_last_over_first_{label}"] = float((v[:, -1] / v[:, 0]).mean())
    return out


def claim(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """first's robust accuracy minus second's, paired by example."""
    d = paired_difference(unbits(first["per_example"]["robust"]), unbits(second["per_example"]["robust"]))
    verdict = {"higher": "supported", "lower": "contradicted"}.get(d.verdict(), "inconclusive at this n")
    return {"first": first["defense"], "second": second["defense"], "difference": d.estimate, "low": d.low,
            "high": d.high, "p": d.p, "verdict": verdict}  # fmt: skip


def eps_gains(first: dict[str, Any], second: dict[str, Any]) -> list[dict[str, Any]]:
    """first minus second at every eps of the sweep (independent-sample intervals: the sweep keeps counts only)."""
    n = first["n_examples"]
    rows = []
    for a, b in zip(first["eps_sweep"]["points"], second["eps_sweep"]["points"], strict=True):
        d = unpaired_difference(round(a["robust_accuracy"] * n), n, round(b["robust_accuracy"] * n), n)
        rows.append({"eps": a["eps"], "first": a["robust_accuracy"], "second": b["robust_accuracy"],
                     "difference": d.estimate, "low": d.low, "high": d.high})  # fmt: skip
    return rows


def percent(value: float) -> str:
    return f"{100 * value:.1f}"


def markdown(results: dict[str, Any]) -> str:
    entries = results["entries"]
    lines = ["# LyaDEQ on digits: the module, the ablation, the paper's claims", ""]
    lines += [
        "Protocol `digits-linf` (all its attacks, checks and eps sweep), one seed; intervals are 95% Wilson;",
        "differences are paired by example (Newcombe's interval, exact McNemar p). docs/lyadeq.md says which",
        "reading of the paper this is. Reproduce: `python benchmarks/lyadeq_ablation.py`.",
        "",
        "## The arms, under standard training and TRADES",
        "",
        "| arm | training | clean % | robust % [95%] | AutoAttack % | PGD % | transfer % | flags |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for recipe in RECIPES:
        for arm in ("plain", "lyapunov-only", "orthogonal-only", "unconstrained-only", "both"):
            e = entries[f"lyadeq-{arm}-{recipe}"]
            n = e["n_examples"]
            low, high = wilson(round(e["robust_accuracy"] * n), n)
            a = e["attacks"]
            lines.append(
                f"| {arm} | {recipe} | {percent(e['clean_accuracy'])} | {percent(e['robust_accuracy'])} "
                f"[{percent(low)}, {percent(high)}] | {percent(a['autoattack'])} | {percent(a['pgd'])} | "
                f"{percent(a.get('transfer', float('nan')))} | {', '.join(e['flags']) or '-'} |"
            )
        e = entries[f"deq-{recipe}"]
        a = e["attacks"]
        cells = ["reference DEQ (equilibrium)", recipe, percent(e["clean_accuracy"]), percent(e["robust_accuracy"])]
        cells += [percent(a["autoattack"]), percent(a["pgd"]), percent(a["transfer"]), ", ".join(e["flags"]) or "-"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Does the module act? (the zoo's trained models)", ""]
    keys = [k for k in results["module"][0] if k != "defense"]
    lines += ["| measurement | " + " | ".join(m["defense"] for m in results["module"]) + " |"]
    lines += ["|---|" + "---|" * len(results["module"])]
    for k in keys:
        cells = []
        for m in results["module"]:
            v = m[k]
            cells.append(", ".join(f"{kk} {vv:.3g}" for kk, vv in v.items()) if isinstance(v, dict) else f"{v:.3g}")
        lines.append(f"| {k.replace('_', ' ')} | " + " | ".join(cells) + " |")
    lines += ["", "## Orthogonality at equal size (orthogonal-only against unconstrained-only)", ""]
    for c in results["orthogonality_at_equal_size"]:
        lines.append(
            f"- **{c['recipe']}** ({c['first']} vs {c['second']}): {100 * c['difference']:+.1f} points "
            f"[{100 * c['low']:+.1f}, {100 * c['high']:+.1f}], p = {c['p']:.3g}: **{c['verdict']}**"
        )
    lines += ["", "## The paper's claims", ""]
    for c in results["claims"]:
        lines.append(
            f"- **{c['claim']}** ({c['first']} vs {c['second']}): {100 * c['difference']:+.1f} points "
            f"[{100 * c['low']:+.1f}, {100 * c['high']:+.1f}], p = {c['p']:.3g}: **{c['verdict']}**"
        )
    for label, rows in results["eps_gains"].items():
        lines += ["", f"Gain with eps ({label}, robust accuracy under the eps sweep's PGD):", ""]
        lines += ["| eps | first % | second % | difference [95%] |", "|---|---|---|---|"]
        for r in rows:
            lines.append(
                f"| {r['eps']:g} | {percent(r['first'])} | {percent(r['second'])} | {100 * r['difference']:+.1f} "
                f"[{100 * r['low']:+.1f}, {100 * r['high']:+.1f}] |"
            )
    lines += ["", f"Verdict on (2), the gain growing with eps: **{results['gain_grows_with_eps']}**", ""]
    return "\n".join(lines) + "\n"


def gain_verdict(rows: list[dict[str, Any]]) -> str:
    """Supported if the gain at some larger eps is above the gain at the protocol's eps with
    non-overlapping intervals; contradicted if it is below them; else inconclusive (eps < 1 only)."""
    informative = [r for r in rows if r["eps"] < 1.0]
    base = next(r for r in informative if r["eps"] == 0.2)
    larger = [r for r in informative if r["eps"] > 0.2]
    if any(r["low"] > base["high"] for r in larger):
        return "supported"
    if any(r["high"] < base["low"] for r in larger):
        return "contradicted"
    return "inconclusive at this n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/lyadeq-ablation"))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "lyadeq_ablation")
    args = parser.parse_args()
    torch.set_num_threads(1)
    entries = arm_entries(args.out, args.jobs)
    module = [module_acts(name) for name in ("lyadeq-standard", "lyadeq-pgd-at", "lyadeq-trades")]
    claims = []
    for label, recipe in (("(1) LyaDEQ without adversarial training is more robust than the DEQ", "standard"),
                          ("(3) LyaDEQ with TRADES is more robust than the DEQ with TRADES", "trades")):  # fmt: skip
        both = entries[f"lyadeq-both-{recipe}"]
        for other in (entries[f"lyadeq-plain-{recipe}"], entries[f"deq-{recipe}"]):
            claims.append({"claim": label, **claim(both, other)})
    gains = {
        "lyadeq-standard vs deq-standard": eps_gains(entries["lyadeq-both-standard"], entries["deq-standard"]),
        "lyadeq-trades vs deq-trades": eps_gains(entries["lyadeq-both-trades"], entries["deq-trades"]),
    }
    verdicts = {gain_verdict(rows) for rows in gains.values()}
    # The orthogonal layer against an unconstrained layer of the same size (no Lyapunov module in either).
    equal_size = [
        {
            "recipe": recipe,
            **claim(entries[f"lyadeq-orthogonal-only-{recipe}"], entries[f"lyadeq-unconstrained-only-{recipe}"]),
        }
        for recipe in RECIPES
    ]
    results = {
        "entries": entries,
        "module": module,
        "claims": claims,
        "orthogonality_at_equal_size": equal_size,
        "eps_gains": gains,
        "gain_grows_with_eps": verdicts.pop() if len(verdicts) == 1 else "inconclusive (the two pairs disagree)",
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    kept = ("defense", "clean_accuracy", "robust_accuracy", "attacks", "flags", "eps_sweep")
    slim = {**results, "entries": {k: {kk: e[kk] for kk in kept} for k, e in entries.items()}}
    args.results.with_suffix(".json").write_text(json.dumps(slim, indent=1) + "\n")
    args.results.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
