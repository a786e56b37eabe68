"""Sharded evaluation under torchrun: the digits protocol on one DEQ with 1 and 2 processes.

On a trained reference DEQ (defenses/deq-pgd-at, trained here unless ``--checkpoint`` names a
``robustdeq train`` folder), runs the whole digits-linf protocol with the same attack batch size
three ways, each as a fresh process tree (start-up included in the wall time):

- ``1x2``: one process with 2 torch threads (the machine's 2 cores);
- ``2x1``: ``torchrun --nproc-per-node 2``, one thread per process: the ranks share the attack batches;
- ``1x1``: one process with 1 thread, the single-process reference the 2x1 run must equal exactly
  (the thread count may change floating-point reduction order, so 1x2 need not).

Each run's per-example file is compared with the others, and the time of every attack batch
(job) is recorded. From the 1x1 job times the wall time with N ranks is predicted the way the
runner deals jobs (round-robin in the order they are first asked for, one synchronisation at the
end): serial part + the busiest rank's jobs. When training here, deq-pgd-at is trained twice,
1x2 and 2x1 (DDP), and the weights are compared.

    python benchmarks/distributed_eval.py                                   # ~12 min on 2 cores
    python benchmarks/distributed_eval.py --checkpoint runs/digits-linf/deq-pgd-at --batch-sizes 50,250
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
LAYOUTS = ((1, 2), (2, 1), (1, 1))  # (processes, threads per process)


def launch(args: list[str], processes: int, threads: int) -> float:
    """Run ``python ARGS`` (under torchrun with several processes); returns the wall time in seconds."""
    torchrun = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": path}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *(torchrun if processes > 1 else []), *args],
        cwd=REPO, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return seconds


def worker(checkpoint: Path, protocol_name: str, batch_size: int, out: Path) -> None:
    """One rank's evaluation (run through :func:`launch`): writes the entry, the per-example file
    and ``timing.rank<r>.json`` with the seconds of every attack batch this rank ran."""
    from robustdeq import distributed
    from robustdeq.evaluation.state import EvalState
    from robustdeq.pipeline import Budget, evaluate_and_write, load_splits, load_trained
    from robustdeq.progress import Progress
    from robustdeq.records.protocol import find_protocol

    distributed.init()
    started: dict[str, float] = {}
    jobs: dict[str, float] = {}
    get, put = EvalState.get, EvalState.put

    def timed_get(self: EvalState, name: str) -> dict[str, Any] | None:
        started.setdefault(name, time.perf_counter())
        return get(self, name)

    def timed_put(self: EvalState, name: str, record: dict[str, Any]) -> None:
        jobs[name] = time.perf_counter() - started[name]  # the attack, its verification and re-classification
        put(self, name, record)

    EvalState.get = timed_get  # type: ignore[method-assign]
    EvalState.put = timed_put  # type: ignore[method-assign]
    defense, trained = load_trained(checkpoint)
    protocol = find_protocol(protocol_name)
    _, test = load_splits(protocol, None, False)
    start = time.perf_counter()
    evaluate_and_write(
        defense, protocol, trained, test, out, Budget(batch_size=batch_size), Progress.quiet(), out / "per-example.json"
    )
    timing = {"evaluate_seconds": time.perf_counter() - start, "threads": torch.get_num_threads(), "jobs": jobs}
    (out / f"timing.rank{distributed.rank()}.json").write_text(json.dumps(timing, indent=1) + "\n")
    distributed.shutdown()


def predicted(timing: dict[str, Any], ranks: int) -> float:
    """Evaluate seconds with ``ranks`` ranks from a one-process run's job times (see the module docstring)."""
    times = list(timing["jobs"].values())
    serial = timing["evaluate_seconds"] - sum(times)
    return serial + max(sum(times[r::ranks]) for r in range(ranks))


def train(folder: Path) -> dict[str, Any]:
    """deq-pgd-at trained 1x2 and 2x1 (DDP): wall times and the largest weight difference."""
    out: dict[str, Any] = {}
    for processes, threads in ((1, 2), (2, 1)):
        args = ["train", "deq-pgd-at", "--out", str(folder / f"{processes}x{threads}"), "--quiet"]
        load = os.getloadavg()[0]
        out[f"{processes}x{threads}_seconds"] = round(launch(["-m", "robustdeq", *args], processes, threads), 1)
        out[f"{processes}x{threads}_load_average"] = [round(load, 2), round(os.getloadavg()[0], 2)]
    a, b = (load_file(str(folder / f / "digits-linf" / "deq-pgd-at" / "model.safetensors")) for f in ("1x2", "2x1"))
    out["max_abs_weight_difference"] = max(float((a[k] - b[k]).abs().max()) for k in a)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None, help="a `robustdeq train` folder of deq-pgd-at")
    parser.add_argument("--batch-sizes", default="50", help="comma-separated attack batch sizes (default 50)")
    parser.add_argument("--protocol", default="digits-linf", help="protocol id or TOML (default digits-linf)")
    parser.add_argument("--out", type=Path, default=RESULTS / "distributed_eval")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=50, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.checkpoint, args.protocol, args.batch_size, args.folder)
        return

    from robustdeq.checkpoint import read_meta
    from robustdeq.records.protocol import find_protocol

    protocol = find_protocol(args.protocol)
    scratch = Path(tempfile.mkdtemp(prefix="distributed-eval-"))
    result: dict[str, Any] = {"protocol": protocol.id, "machine": f"{os.cpu_count()} CPU cores"}
    result["torch"] = torch.__version__
    checkpoint = args.checkpoint
    if checkpoint is None:
        result["training"] = train(scratch / "runs")
        checkpoint = scratch / "runs" / "1x2" / "digits-linf" / "deq-pgd-at"
    result["runs"] = []
    for batch_size in [int(v) for v in args.batch_sizes.split(",")]:
        per_example = {}
        for processes, threads in LAYOUTS:
            name = f"{processes}x{threads}"
            folder = scratch / f"bs{batch_size}-{name}"
            load = os.getloadavg()[0]
            worker_args = [__file__, "--worker", "--checkpoint", str(checkpoint), "--protocol", args.protocol]
            worker_args += ["--batch-size", str(batch_size)]
            wall = launch([*worker_args, "--folder", str(folder)], processes, threads)
            timings = [json.loads((folder / f"timing.rank{r}.json").read_text()) for r in range(processes)]
            per_example[name] = json.loads((folder / "per-example.json").read_text())
            entry = json.loads((folder / protocol.id / f"{read_meta(checkpoint)['defense']}.json").read_text())
            result["runs"].append(
                {
                    "batch_size": batch_size,
                    "layout": name,
                    "wall_seconds": round(wall, 1),
                    "evaluate_seconds": round(timings[0]["evaluate_seconds"], 1),
                    "jobs": [len(t["jobs"]) for t in timings],
                    "busy_seconds": [round(sum(t["jobs"].values()), 1) for t in timings],
                    "load_average": [round(load, 2), round(os.getloadavg()[0], 2)],  # before, after
                    "clean_accuracy": entry["clean_accuracy"],
                    "robust_accuracy": entry["robust_accuracy"],
                    "job_seconds": {k: round(v, 2) for t in timings for k, v in t["jobs"].items()},
                    **(
                        {"predicted_evaluate_seconds": {n: round(predicted(timings[0], n), 1) for n in (2, 4, 8, 16)}}
                        if name == "1x1"
                        else {}
                    ),
                }
            )
        result["runs"][-3]["identical_to_1x1"] = per_example["1x2"] == per_example["1x1"]
        result["runs"][-2]["identical_to_1x1"] = per_example["2x1"] == per_example["1x1"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(render(result))
    print(render(result))


def render(result: dict[str, Any]) -> str:
    lines = [f"{result['protocol']} on deq-pgd-at, {result['machine']}, torch {result['torch']}", ""]
    if "training" in result:
        t = result["training"]
        lines += [
            f"training (15 epochs): 1x2 {t['1x2_seconds']} s, 2x1 (DDP) {t['2x1_seconds']} s, "
            f"speed-up {t['1x2_seconds'] / t['2x1_seconds']:.2f}x; largest weight difference "
            f"{t['max_abs_weight_difference']:.2g}",
            "",
        ]
    lines += [
        "| batch size | processes x threads | wall s | evaluate s | jobs per rank | busy s per rank "
        "| clean % | robust % | per-example = 1x1 | 1-min load before, after |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        same = {True: "yes", False: "no"}.get(r.get("identical_to_1x1"), "-")
        lines.append(
            f"| {r['batch_size']} | {r['layout']} | {r['wall_seconds']} | {r['evaluate_seconds']} | "
            f"{', '.join(map(str, r['jobs']))} | {', '.join(map(str, r['busy_seconds']))} | "
            f"{100 * r['clean_accuracy']:.0f} | {100 * r['robust_accuracy']:.0f} | {same} | "
            f"{', '.join(map(str, r['load_average']))} |"
        )
    lines.append("")
    for batch_size in sorted({r["batch_size"] for r in result["runs"]}):
        runs = {r["layout"]: r for r in result["runs"] if r["batch_size"] == batch_size}
        one, two, ref = runs["1x2"], runs["2x1"], runs["1x1"]
        guess = ref["predicted_evaluate_seconds"]
        lines.append(
            f"batch size {batch_size}: 2x1 over 1x2 wall speed-up {one['wall_seconds'] / two['wall_seconds']:.2f}x "
            f"(evaluate {one['evaluate_seconds'] / two['evaluate_seconds']:.2f}x), over 1x1 "
            f"{ref['wall_seconds'] / two['wall_seconds']:.2f}x; predicted evaluate seconds from the 1x1 jobs: "
            + ", ".join(f"{n} ranks {s}" for n, s in guess.items())
            + f" (1 rank {ref['evaluate_seconds']}; largest job {max(ref['job_seconds'].values())} s)"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
