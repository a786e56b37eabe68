"""Render one protocol's entries as a ranked table (pandas): Markdown and CSV."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import pandas as pd

from robustdeq.device import on_gpu
from robustdeq.errors import RobustdeqError
from robustdeq.leaderboard.store import atomic_write_text

UNRELIABLE = "potentially unreliable"


def table(entries: list[dict[str, Any]]) -> pd.DataFrame:
    """Ranked by worst-case robust accuracy, then clean accuracy; accuracies in percent.

    Entries must share one protocol version (same content hash): numbers from different
    protocol versions are never ranked together.
    """
    if not entries:
        raise RobustdeqError("no leaderboard entries to render")
    hashes = {(e["protocol"], e["protocol_hash"]) for e in entries}
    if len(hashes) > 1:
        listed = ", ".join(f"{p}@{h[:8]}" for p, h in sorted(hashes))
        raise RobustdeqError(f"entries come from different protocol versions ({listed}); re-run them")
    attack_names: list[str] = []
    for e in entries:
        attack_names.extend(name for name in e["attacks"] if name not in attack_names)
    rows = []
    for e in entries:
        solver = e["solver"]
        flags = e["flags"]
        row: dict[str, Any] = {
            "defense": e["defense"],
            "model": e["model_family"],
            "recipe": e["provenance"]["training"]["recipe"],
            "clean %": round(100 * e["clean_accuracy"], 2),
            "robust %": round(100 * e["robust_accuracy"], 2),
        }
        for name in attack_names:
            acc = e["attacks"].get(name)
            row[f"{name} %"] = None if acc is None else round(100 * acc, 2)
        row["params"] = e["n_parameters"]
        row["block evals"] = None if e["forward_cost"] is None else round(e["forward_cost"], 1)
        row["not converged %"] = (
            None
            if solver is None
            else round(100 * max(solver["nonconverged_clean"], solver["nonconverged_adversarial"]), 2)
        )
        row["status"] = (f"{UNRELIABLE}: {', '.join(flags)}" if flags else "ok") + computed_on(e)
        row["paper"] = e["paper"]
        rows.append(row)
    frame = pd.DataFrame(rows).sort_values(["robust %", "clean %", "defense"], ascending=[False, False, True])
    frame.insert(0, "rank", range(1, len(frame) + 1))
    return frame.reset_index(drop=True)


def computed_on(entry: dict[str, Any]) -> str:
    """`` (GPU: <name>)`` for an entry computed on a GPU (CUDA numbers differ from CPU ones in the
    last bits and in PGD's random starts), else nothing."""
    device = entry["provenance"].get("device")
    return f" (GPU: {device['name']})" if device is not None and on_gpu(device) else ""


def markdown(frame: pd.DataFrame) -> str:
    """A Markdown table; missing values (not applicable, e.g. solver columns of a CNN) show as '-'."""
    return str(frame.astype(object).where(frame.notna(), "-").to_markdown(index=False))


def render(entries: list[dict[str, Any]], folder: Path) -> list[Path]:
    """Write ``leaderboard.md``, ``leaderboard.csv`` and a self-contained ``leaderboard.html``."""
    frame = table(entries)
    first = entries[0]
    tm = first["threat_model"]
    header = (
        f"# Leaderboard: {first['protocol']} (version {first['protocol_version']})\n\n"
        f"Data set `{first['dataset']}`, threat model {tm['norm']} eps = {tm['eps']}, "
        f"{first['n_examples']} test examples, protocol hash `{first['protocol_hash'][:12]}`.\n"
        "Robust accuracy is the per-example worst case over every attack; the per-attack columns "
        "give each attack's own accuracy. Rendered by `robustdeq leaderboard` from the JSON entries "
        "in this folder.\n\n"
    )
    md = folder / "leaderboard.md"
    csv = folder / "leaderboard.csv"
    page = folder / "leaderboard.html"
    atomic_write_text(md, header + markdown(frame) + "\n")
    atomic_write_text(csv, frame.to_csv(index=False))
    intro = "".join(f"<p>{html.escape(line)}</p>" for line in header.replace("# ", "").strip().split("\n") if line)
    atomic_write_text(
        page,
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(first['protocol'])} leaderboard</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}</style></head><body>"
        + intro
        + frame.to_html(index=False, border=0, na_rep="-")
        + "</body></html>\n",
    )
    return [md, csv, page]
