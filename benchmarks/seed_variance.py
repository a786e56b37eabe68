"""Training variance: the same defenses trained with several seeds, each evaluated with the full protocol.

The leaderboard's 95% Wilson intervals cover the sampling of test examples. Retraining moves
the numbers too: another seed, or the same seed on other hardware (training is not
bit-reproducible across CPUs, and adversarial training amplifies rounding differences). This
benchmark trains each defense with each seed through the library's own pipeline
(:func:`robustdeq.pipeline.run_defenses`: the manifest's training recipe with only the training
seed replaced, then the protocol's full evaluation), and reports per defense the min, mean,
max and standard deviation of clean and robust accuracy across seeds next to the Wilson
half-width at the protocol's n.

    python benchmarks/seed_variance.py                                   # deq-pgd-at, cnn-pgd-at; seeds 0, 1, 2
    python benchmarks/seed_variance.py --defenses deq-pgd-at --seeds 0,1,2,3,4 --jobs 2

Entries and checkpoints go to ``--work`` (``runs/seed_variance/seed-<s>/<protocol>/``, not
committed); the summary to ``benchmarks/results/seed_variance.{json,md}`` and, per defense with the
protocol version it was measured under, into the leaderboard's ``<protocol>/seeds.json``
(``--leaderboard``; other defenses there are kept), from which the tables and the site show the
robust accuracy's spread across seeds beside its interval. ``--record`` records an earlier summary
there without training:

    python benchmarks/seed_variance.py --record benchmarks/results/seed_variance.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from robustdeq.leaderboard.stats import wilson
from robustdeq.records.defense import DefenseSpec
from robustdeq.records.store import record_seeds

RESULTS = Path(__file__).parent / "results"
ACCURACIES = ("clean_accuracy", "robust_accuracy")


def committed(root: Path | None, defense: DefenseSpec, protocol: str, protocol_hash: str) -> dict[str, Any] | None:
    """The committed entry of ``defense`` under ``protocol`` in ``root`` (None without a root, or
    when it is missing or of another protocol version)."""
    if root is None or not (root / protocol / f"{defense.id}.json").is_file():
        return None
    entry: dict[str, Any] = json.loads((root / protocol / f"{defense.id}.json").read_text())
    return entry if entry["protocol_hash"] == protocol_hash else None


def seeded(defense: DefenseSpec, seed: int) -> DefenseSpec:
    """``defense`` with its training seed replaced (model initialisation, batches, attack starts)."""
    return dataclasses.replace(defense, train=dataclasses.replace(defense.train, seed=seed))


def spread(accuracies: list[float], n: int) -> dict[str, float]:
    """min, mean, max and sample standard deviation (0 for one value) of accuracies measured on
    ``n`` examples, with the 95% Wilson half-width at the mean (what one evaluation's interval is)."""
    if not accuracies:
        raise ValueError("no accuracies")
    mean = statistics.fmean(accuracies)
    low, high = wilson(round(mean * n), n)
    return {
        "min": min(accuracies),
        "mean": mean,
        "max": max(accuracies),
        "std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
        "wilson_half_width": (high - low) / 2,
    }


def summarise(runs: dict[str, dict[int, dict[str, Any]]]) -> dict[str, Any]:
    """``runs``: defense -> seed -> entry. Per defense: the seeds, each seed's accuracies, and
    :func:`spread` of clean and robust accuracy."""
    out: dict[str, Any] = {}
    for defense, by_seed in runs.items():
        n = {e["n_examples"] for e in by_seed.values()}
        if len(n) != 1:
            raise ValueError(f"{defense}: seeds evaluated on different numbers of examples {sorted(n)}")
        examples = n.pop()
        out[defense] = {
            "n_examples": examples,
            "seeds": sorted(by_seed),
            "per_seed": {str(s): {k: e[k] for k in ACCURACIES} for s, e in sorted(by_seed.items())},
            **{k: spread([e[k] for e in by_seed.values()], examples) for k in ACCURACIES},
        }
    return out


def markdown(summary: dict[str, Any], protocol: str, header: str) -> str:
    lines = [
        "# Training variance across seeds",
        "",
        header,
        "",
        f"Protocol `{protocol}`. Accuracies in percent; std: sample standard deviation across seeds; "
        "Wilson ±: half-width of one evaluation's 95% Wilson interval at the mean, at this n. "
        "A std comparable to the Wilson half-width means retraining moves a number about as much as "
        "the choice of test examples does.",
        "",
        "| defense | seeds | n | clean min / mean / max | clean std | clean Wilson ± | "
        "robust min / mean / max | robust std | robust Wilson ± |",
        "|:--|:--|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for defense, s in summary.items():
        c, r = s["clean_accuracy"], s["robust_accuracy"]

        def triple(x: dict[str, float]) -> str:
            return f"{100 * x['min']:.1f} / {100 * x['mean']:.1f} / {100 * x['max']:.1f}"

        lines.append(
            f"| {defense} | {', '.join(map(str, s['seeds']))} | {s['n_examples']} | {triple(c)} | "
            f"{100 * c['std']:.1f} | {100 * c['wilson_half_width']:.1f} | {triple(r)} | {100 * r['std']:.1f} | "
            f"{100 * r['wilson_half_width']:.1f} |"
        )
    lines += ["", "Per seed (clean / robust %):", ""]
    for defense, s in summary.items():
        per = ", ".join(
            f"seed {seed}: {100 * v['clean_accuracy']:.1f} / {100 * v['robust_accuracy']:.1f}"
            for seed, v in s["per_seed"].items()
        )
        lines.append(f"- {defense}: {per}")
    return "\n".join(lines) + "\n"


def leaderboard_spreads(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The summary file's defenses as ``seeds.json`` records them: each with the protocol version and
    hash it was measured under (the entries may be re-evaluated under a newer one since)."""
    measured = {"protocol_version": results["protocol_version"], "protocol_hash": results["protocol_hash"]}
    return {defense: {**measured, **spread} for defense, spread in results["defenses"].items()}


def record(results: dict[str, Any], leaderboard: Path) -> Path:
    """Record the summary ``results`` in ``<leaderboard>/<protocol>/seeds.json``; returns its path."""
    return record_seeds(leaderboard / results["protocol"], leaderboard_spreads(results))


def parse_ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--defenses", default="deq-pgd-at,cnn-pgd-at", help="comma-separated defense ids")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (default: 0,1,2)")
    parser.add_argument("--protocol", default="digits-linf", help="protocol id or path (default: digits-linf)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes per seed (as robustdeq bench --jobs)")
    parser.add_argument("--data-dir", type=Path, default=None, help="data folder (default: the library's)")
    parser.add_argument("--work", type=Path, default=Path("runs") / "seed_variance", help="entries and checkpoints")
    parser.add_argument("--out", type=Path, default=RESULTS / "seed_variance", help="summary (.json and .md)")
    parser.add_argument(
        "--committed",
        type=Path,
        default=None,
        help="a leaderboard root (e.g. leaderboards) whose entries stand for the manifest's own seed instead of "
        "retraining it: only when they were trained on this machine with this code (same protocol hash checked)",
    )
    parser.add_argument(
        "--leaderboard",
        type=Path,
        default=Path("leaderboards"),
        help="leaderboard root: the spread goes into <root>/<protocol>/seeds.json, which the tables read",
    )
    parser.add_argument(
        "--record",
        type=Path,
        default=None,
        metavar="SUMMARY_JSON",
        help="record an earlier run's summary (its .json) in the leaderboard, and train nothing",
    )
    args = parser.parse_args(argv)
    if args.record is not None:
        print(f"wrote {record(json.loads(args.record.read_text()), args.leaderboard)}")
        return

    # The heavy imports only once there is something to run (--help stays instant).
    from robustdeq.pipeline import run_defenses
    from robustdeq.progress import Progress
    from robustdeq.records.defense import find_defense
    from robustdeq.records.protocol import find_protocol

    protocol = find_protocol(args.protocol)
    defenses = [find_defense(name) for name in args.defenses.split(",") if name]
    seeds = parse_ints(args.seeds)
    runs: dict[str, dict[int, dict[str, Any]]] = {d.id: {} for d in defenses}
    started = time.time()
    for seed in seeds:
        out = args.work / f"seed-{seed}"
        own = [d for d in defenses if d.train.seed == seed]
        reused = {d.id: committed(args.committed, d, protocol.id, protocol.hash) for d in own}
        train = [seeded(d, seed) for d in defenses if reused.get(d.id) is None]
        trained = run_defenses(
            train, protocol, args.data_dir, False, out, progress=Progress.quiet(), jobs=args.jobs
        ) if train else []  # fmt: skip
        fresh = dict(zip([d.id for d in train], trained, strict=True))
        entries = [reused.get(d.id) or fresh[d.id] for d in defenses]
        for defense, entry in zip(defenses, entries, strict=True):
            runs[defense.id][seed] = entry
            print(
                f"{defense.id} seed {seed}: clean {100 * entry['clean_accuracy']:.1f}%, "
                f"robust {100 * entry['robust_accuracy']:.1f}%",
                file=sys.stderr,
            )
    summary = summarise(runs)
    header = (
        f"`python benchmarks/seed_variance.py --defenses {args.defenses} --seeds {args.seeds} "
        f"--protocol {args.protocol}{f' --committed {args.committed}' if args.committed else ''}`: "
        f"{math.ceil((time.time() - started) / 60)} minutes; "
        f"protocol version {protocol.version}, hash `{protocol.hash[:12]}`."
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results = {
        "protocol": protocol.id,
        "protocol_version": protocol.version,
        "protocol_hash": protocol.hash,
        "defenses": summary,
    }
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(summary, protocol.id, header))
    spread = record(results, args.leaderboard)
    print(f"wrote {args.out.with_suffix('.json')}, {args.out.with_suffix('.md')} and {spread}")


if __name__ == "__main__":
    main()
