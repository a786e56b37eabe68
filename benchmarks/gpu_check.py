"""GPU check, in stages, each with its own time limit, each writing its results as it finishes.

    python benchmarks/gpu_check.py --device cuda --data-dir DIR      # on a GPU machine (about 5 minutes)
    python benchmarks/gpu_check.py --device cpu --ci --out /tmp/gc   # the CPU path in CI size (the test suite runs it)

Stages (``--stages 1,2,3,4``):

1. ``tests``: the device-parametrised tests (marker ``device``) on ``--device``
   (``ROBUSTDEQ_TEST_DEVICE=<device> python -m pytest -q -m device``).
2. ``cpu-vs-device``: one trained ``deq-pgd-at`` checkpoint (the zoo's when the package has one,
   else trained here on the CPU) evaluated under ``digits-linf`` with ``--device cpu`` and with
   ``--device <device>`` on this host; every example whose clean or robust outcome, or any attack's
   outcome, differs is listed.
3. ``mnist``: ``robustdeq bench --protocol mnist-linf-0.3 --defenses deq-pgd-at,cnn-pgd-at`` with a
   reduced budget (``--n-examples``, ``--epochs``, ``--train-subset``), on ``--device`` and on the
   CPU of the same host: training images per second and AutoAttack examples per second.
4. ``mnist-zoo``: the zoo's MNIST checkpoints (``--zoo-defenses``) evaluated under ``mnist-linf-0.3``
   on ``--device`` for the first ``--zoo-examples`` test images (250, the protocol's batch, leaves
   the attacks' random draws as in the committed entry, so any example whose outcome differs from
   the entry's differs through the device's arithmetic): seconds per test example for the protocol
   and for AutoAttack alone; and each of those defenses trained on ``--device`` for one epoch of
   ``--mnist-train`` images: training images per second.

Every stage runs in its own process under its own timeout, so a stage that runs out still leaves
the others' figures; after each stage ``gpu.md`` and ``gpu.json`` in ``--out`` are rewritten with
everything measured so far. ``--data-dir`` is a folder holding ``MNIST/raw/`` (uncompressed IDX
files, or the four ``.gz`` files, which are unpacked into a temporary folder first).
``benchmarks/gpu_prepare.sh`` packs the wheels and the compressed MNIST files that travel to a
GPU machine; ``benchmarks/gpu_check.sh`` installs them there and runs this script.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def run(command: list[str], deadline: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``command`` until ``deadline`` (a ``time.monotonic()`` value) at the latest; its exit code,
    wall time and the tail of its output."""
    start = time.perf_counter()
    timeout = max(1.0, deadline - time.monotonic())
    try:
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False)
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        code = None
        output = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
    return {
        "command": " ".join(command),
        "exit_code": code,
        "timed_out": code is None,
        "seconds": round(time.perf_counter() - start, 1),
        "tail": output[-1500:],
    }


def robustdeq(*args: str) -> list[str]:
    return [sys.executable, "-m", "robustdeq", *args]


def mnist_root(data_dir: Path, scratch: Path) -> Path:
    """A folder holding MNIST/raw/ with the uncompressed files (unpacking ``.gz`` files if needed)."""
    raw = data_dir / "MNIST" / "raw"
    if all((raw / name).is_file() for name in MNIST_FILES):
        return data_dir
    if not all((raw / f"{name}.gz").is_file() for name in MNIST_FILES):
        raise SystemExit(f"{raw}: neither the four MNIST IDX files nor their .gz files")
    target = scratch / "data" / "MNIST" / "raw"
    target.mkdir(parents=True, exist_ok=True)
    for name in MNIST_FILES:
        with gzip.open(raw / f"{name}.gz", "rb") as source, open(target / name, "wb") as sink:
            shutil.copyfileobj(source, sink)
    return scratch / "data"


def stage_tests(args: argparse.Namespace, scratch: Path, deadline: float) -> dict[str, Any]:
    env = {**os.environ, "ROBUSTDEQ_TEST_DEVICE": args.device}
    selection = ["-m", "device"] + (["-k", "resolver or every_family"] if args.ci else [])
    result = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *selection], deadline, env)
    result["passed"] = result["exit_code"] == 0
    return result


def per_example(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def stage_cpu_vs_device(args: argparse.Namespace, scratch: Path, deadline: float) -> dict[str, Any]:
    zoo = REPO / "leaderboards" / "digits-linf" / "deq-pgd-at.safetensors"
    result: dict[str, Any] = {}
    if zoo.is_file() and not args.ci:  # the shipped checkpoint: nothing to train
        checkpoint: Path | str = "zoo:digits-linf/deq-pgd-at"
    else:
        budget = ["--epochs", "1", "--train-subset", "200"] if args.ci else []
        runs = scratch / "runs"
        command = robustdeq("train", "deq-pgd-at", "--device", "cpu", "--out", str(runs), "--quiet", *budget)
        result["train"] = run(command, deadline)
        checkpoint = runs / "digits-linf" / "deq-pgd-at"
    files = {}
    for device in ("cpu", args.device):
        name = f"{device.replace(':', '-')}.json"
        files[device] = scratch / name
        n = ["--n-examples", str(args.digits_examples)]
        out = scratch / f"lb-{name}"
        command = robustdeq("evaluate", str(checkpoint), "--device", device, "--out", str(out), "--quiet", *n)
        result[f"evaluate_{device}"] = run([*command, "--per-example", str(files[device])], deadline)
    if not all(path.is_file() for path in files.values()):
        result["compared"] = False
        return result
    first, second = (per_example(files[d]) for d in ("cpu", args.device))
    pair = (("cpu", first), (args.device, second))
    differing = []
    for i, index in enumerate(first["indices"]):
        what = [k for k in ("clean_correct", "robust") if first[k][i] != second[k][i]]
        what += [a for a, c in first["attacks"].items() if second["attacks"].get(a, c)[i] != c[i]]
        if what:
            differing.append({"test_index": index, "differs_in": what})
    result.update(
        compared=True,
        n_examples=len(first["indices"]),
        clean_accuracy={d: sum(p["clean_correct"]) / len(p["indices"]) for d, p in pair},
        robust_accuracy={d: sum(p["robust"]) / len(p["indices"]) for d, p in pair},
        differing_examples=differing,
    )
    return result


def stage_mnist(args: argparse.Namespace, scratch: Path, deadline: float) -> dict[str, Any]:
    if args.data_dir is None:
        return {"skipped": "no --data-dir with MNIST"}
    root = mnist_root(args.data_dir, scratch)
    result: dict[str, Any] = {"data_dir": str(root)}
    budget = ["--n-examples", str(args.mnist_examples), "--epochs", "1", "--train-subset", str(args.mnist_train)]
    devices = [args.device] if args.device == "cpu" else [args.device, "cpu"]
    for i, device in enumerate(devices):  # each device gets an equal share of what is left
        out = scratch / f"mnist-{device.replace(':', '-')}"
        command = robustdeq(
            "bench", "--protocol", "mnist-linf-0.3", "--defenses", "deq-pgd-at,cnn-pgd-at", "--data-dir", str(root),
            "--device", device, "--jobs", "1", "--quiet", "--out", str(out), *budget,
        )  # fmt: skip
        share = (deadline - time.monotonic()) / (len(devices) - i)
        record = run(command, time.monotonic() + share)
        entries = sorted((out / "mnist-linf-0.3").glob("*.json"))
        for entry_path in [p for p in entries if not p.name.startswith(".")]:  # not a killed run's state file
            entry = json.loads(entry_path.read_text())
            provenance = entry["provenance"]
            training = provenance["training"]
            images = training["epochs"] * (training["train_subset"] or 60000)
            attacked = round(entry["clean_accuracy"] * entry["n_examples"])
            aa = provenance.get("attack_seconds", {}).get("autoattack")
            record[entry["defense"]] = {
                "clean_accuracy": entry["clean_accuracy"],
                "robust_accuracy": entry["robust_accuracy"],
                "train_seconds": provenance["train_seconds"],
                "train_images_per_second": round(images / max(provenance["train_seconds"], 1e-9), 1),
                "autoattack_seconds": aa,
                "autoattack_examples": attacked,
                "autoattack_examples_per_second": round(attacked / aa, 3) if aa else None,
                "eval_seconds": provenance["eval_seconds"],
                "device": provenance.get("device"),
            }
        result[device] = record
    return result


def stage_mnist_zoo(args: argparse.Namespace, scratch: Path, deadline: float) -> dict[str, Any]:
    if args.data_dir is None:
        return {"skipped": "no --data-dir with MNIST"}
    root = mnist_root(args.data_dir, scratch)
    defenses = [d for d in args.zoo_defenses.split(",") if d]
    result: dict[str, Any] = {"n_examples": args.zoo_examples, "train_images": args.mnist_train, "defenses": {}}
    # Training first (short, bounded by the subset), then evaluation, each in the order given (name
    # the cheapest first): a defense that runs out of time still leaves the figures of the ones before it.
    for i, defense in enumerate(defenses):
        share = (deadline - time.monotonic()) / (2 * len(defenses) - i)
        command = robustdeq(
            "train", defense, "--protocol", "mnist-linf-0.3", "--data-dir", str(root), "--device", args.device,
            "--epochs", "1", "--train-subset", str(args.mnist_train), "--out", str(scratch / "zoo-train"), "--quiet",
        )  # fmt: skip
        record = run(command, time.monotonic() + share)
        if record["exit_code"] == 0:  # includes start-up and data loading: a lower bound on the rate
            record["train_images_per_second"] = round(args.mnist_train / record["seconds"], 1)
        result["defenses"][defense] = {"train": record}
    for i, defense in enumerate(defenses):
        share = (deadline - time.monotonic()) / (len(defenses) - i)
        out = scratch / f"zoo-{defense}"
        command = robustdeq(
            "evaluate", f"zoo:mnist-linf-0.3/{defense}", "--data-dir", str(root), "--device", args.device,
            "--n-examples", str(args.zoo_examples), "--out", str(out), "--quiet",
        )  # fmt: skip
        record = run(command, time.monotonic() + share)
        entry_path = out / "mnist-linf-0.3" / f"{defense}.json"
        committed_path = REPO / "leaderboards" / "mnist-linf-0.3" / f"{defense}.json"
        if record["exit_code"] == 0 and entry_path.is_file():
            entry = json.loads(entry_path.read_text())
            n = entry["n_examples"]
            provenance = entry["provenance"]
            aa = provenance.get("attack_seconds", {}).get("autoattack")
            record.update(
                clean_accuracy=entry["clean_accuracy"],
                robust_accuracy=entry["robust_accuracy"],
                eval_seconds=provenance["eval_seconds"],
                seconds_per_example=round(provenance["eval_seconds"] / n, 3),
                autoattack_seconds_per_example=round(aa / n, 3) if aa is not None else None,
                device=provenance.get("device"),
            )
            if committed_path.is_file():
                committed = json.loads(committed_path.read_text())
                ours, theirs = entry["per_example"], committed["per_example"]
                keys = ("clean_correct", "robust", "broken_by")
                record["differing_from_committed"] = [
                    {"test_index": i, "differs_in": [k for k in keys if ours[k][i] != theirs[k][i]]}
                    for i in range(n)
                    if any(ours[k][i] != theirs[k][i] for k in keys)
                ]
                record["committed_seconds_per_example"] = round(
                    committed["provenance"]["eval_seconds"] / committed["n_examples"], 3
                )
        result["defenses"][defense]["evaluate"] = record
    return result


STAGES = {
    "1": ("tests", stage_tests),
    "2": ("cpu-vs-device", stage_cpu_vs_device),
    "3": ("mnist", stage_mnist),
    "4": ("mnist-zoo", stage_mnist_zoo),
}


def markdown(results: dict[str, Any]) -> str:
    """The figures of every stage run so far, as a reader wants them; the raw record is gpu.json."""
    lines = [f"# GPU check: --device {results['device']}", "", f"Host: {results['host']}.", ""]
    stages = results["stages"]
    if "tests" in stages:
        t = stages["tests"]
        last = t["tail"].strip().splitlines()[-1] if t["tail"].strip() else ""
        verdict = "timed out" if t["timed_out"] else ("passed" if t["passed"] else "FAILED")
        lines += ["## 1. Device-parametrised tests", "", f"`{t['command']}`: {verdict} ({last}), {t['seconds']} s.", ""]
    if "cpu-vs-device" in stages:
        c = stages["cpu-vs-device"]
        lines += ["## 2. One digits checkpoint, CPU against the device", ""]
        if not c.get("compared"):
            lines += ["Not compared (a run failed or timed out; see gpu.json).", ""]
        else:
            for key in ("clean_accuracy", "robust_accuracy"):
                shown = ", ".join(f"{d} {100 * v:.1f}%" for d, v in c[key].items())
                lines.append(f"- {key.replace('_', ' ')} on {c['n_examples']} examples: {shown}")
            listed = "; ".join(
                f"test digit {d['test_index']} ({', '.join(d['differs_in'])})" for d in c["differing_examples"]
            )
            lines += [
                f"- examples whose outcome differs: {len(c['differing_examples'])}" + (f": {listed}" if listed else ""),
                "",
            ]
    if "mnist" in stages:
        m = stages["mnist"]
        lines += ["## 3. MNIST bench, reduced budget", ""]
        if "skipped" in m:
            lines += [f"Skipped: {m['skipped']}.", ""]
        else:
            lines += [
                "| defense | device | train images/s | AutoAttack examples/s | clean % | robust % | exit |",
                "|---|---|---|---|---|---|---|",
            ]
            for device, record in m.items():
                if not isinstance(record, dict):
                    continue
                for defense, r in record.items():
                    if isinstance(r, dict) and "train_images_per_second" in r:
                        exit_code = "timed out" if record["timed_out"] else record["exit_code"]
                        cells = [defense, device, r["train_images_per_second"], r["autoattack_examples_per_second"]]
                        cells += [f"{100 * r['clean_accuracy']:.1f}", f"{100 * r['robust_accuracy']:.1f}", exit_code]
                        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
            lines.append("")
    if "mnist-zoo" in stages:
        z = stages["mnist-zoo"]
        lines += [f"## 4. The zoo's MNIST checkpoints on --device {results['device']}", ""]
        if "skipped" in z:
            lines += [f"Skipped: {z['skipped']}.", ""]
        else:
            lines += [
                f"First {z['n_examples']} test images under mnist-linf-0.3; training: one epoch of "
                f"{z['train_images']} images (start-up included).",
                "",
                "| defense | train images/s | s / test example (protocol) | s / test example (AutoAttack) "
                "| committed entry's s / test example (its CPU) | clean % | robust % "
                "| outcomes differing from the entry |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for defense, r in z["defenses"].items():
                t, e = r.get("train", {}), r.get("evaluate", {})
                train = t.get("train_images_per_second", "timed out" if t.get("timed_out") else "failed")
                if "seconds_per_example" in e:
                    differing = e.get("differing_from_committed")
                    shown = "n/a" if differing is None else str(len(differing))
                    if differing:
                        shown += ": " + "; ".join(
                            f"{d['test_index']} ({', '.join(d['differs_in'])})" for d in differing
                        )
                    cells = [e["seconds_per_example"], e["autoattack_seconds_per_example"]]
                    cells += [e.get("committed_seconds_per_example", "n/a")]
                    cells += [f"{100 * e['clean_accuracy']:.1f}", f"{100 * e['robust_accuracy']:.1f}", shown]
                else:
                    verdict = f"did not finish in {e.get('seconds')} s" if e.get("timed_out") else "failed"
                    cells = [verdict, "", "", "", "", ""]
                lines.append("| " + " | ".join(str(c) for c in [defense, train, *cells]) + " |")
            lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="the device under test (cuda, cuda:N; cpu for CI)")
    parser.add_argument("--data-dir", type=Path, default=None, help="folder with MNIST/raw/ (files or .gz)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="where gpu.md/json go")
    parser.add_argument("--stages", default="1,2,3,4")
    parser.add_argument("--timeout", default="100,80,120,300", help="seconds per stage, comma-separated")
    parser.add_argument("--digits-examples", type=int, default=100)
    parser.add_argument("--mnist-examples", type=int, default=200)
    parser.add_argument("--mnist-train", type=int, default=10000)
    parser.add_argument("--zoo-defenses", default="cnn-pgd-at,deq-pgd-at", help="zoo MNIST checkpoints (stage 4)")
    parser.add_argument("--zoo-examples", type=int, default=250, help="test images per zoo checkpoint (stage 4)")
    parser.add_argument("--ci", action="store_true", help="CI size: a few tests, tiny budgets")
    args = parser.parse_args()
    args.timeout = [float(t) for t in args.timeout.split(",")]
    if args.ci:
        args.digits_examples, args.mnist_examples, args.mnist_train, args.zoo_examples = 8, 4, 100, 4
        args.zoo_defenses = "cnn-standard"

    import torch

    results: dict[str, Any] = {
        "device": args.device,
        "host": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"CUDA {torch.version.cuda}, GPUs: {[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}",
        "ci": args.ci,
        "stages": {},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for number in args.stages.split(","):
            name, stage = STAGES[number.strip()]
            began = time.perf_counter()
            print(f"stage {number} ({name}) ...", flush=True)
            outcome = stage(args, Path(tmp), time.monotonic() + args.timeout[int(number) - 1])
            outcome["stage_seconds"] = round(time.perf_counter() - began, 1)
            results["stages"][name] = outcome
            (args.out / "gpu.json").write_text(json.dumps(results, indent=2) + "\n")
            (args.out / "gpu.md").write_text(markdown(results) + "\n")
            print(f"stage {number} ({name}) done in {outcome['stage_seconds']} s", flush=True)


if __name__ == "__main__":
    main()
