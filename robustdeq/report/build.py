"""Build a report from leaderboard entries (never retrains or re-evaluates anything)."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from robustdeq.leaderboard import read_entries, table  # noqa: E402
from robustdeq.leaderboard.render import markdown  # noqa: E402
from robustdeq.leaderboard.store import atomic_write_text, protocol_folders  # noqa: E402


def accuracy_figure(entries: list[dict[str, Any]], path: Path) -> Path:
    """Grouped bars per defense: clean, each attack's own accuracy, and the worst case."""
    frame = table(entries)
    attack_cols = [c for c in frame.columns if c.endswith(" %") and c not in ("clean %", "robust %")]
    series = ["clean %", *attack_cols, "robust %"]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(frame)), 4.0))
    width = 0.8 / len(series)
    for i, column in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(frame))]
        ax.bar(xs, frame[column].fillna(0.0), width, label=column.replace(" %", ""))
    ax.set_xticks(range(len(frame)), frame["defense"], rotation=20, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{entries[0]['protocol']}: accuracy after each attack (robust = worst case)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(root: Path, out: Path, protocols: list[str] | None = None) -> list[Path]:
    """Write ``report.md``, ``report.html`` and one PNG per protocol into ``out``."""
    folders = [root / p for p in protocols] if protocols else protocol_folders(root)
    md = ["# robustdeq report", ""]
    body = ["<h1>robustdeq report</h1>"]
    written = []
    for folder in folders:
        entries = read_entries(folder)
        frame = table(entries)
        png = accuracy_figure(entries, out / f"{folder.name}-accuracy.png")
        written.append(png)
        first = entries[0]
        tm = first["threat_model"]
        caption = (
            f"{len(entries)} defenses, data set {first['dataset']}, {tm['norm']} eps = {tm['eps']}, "
            f"{first['n_examples']} examples, protocol version {first['protocol_version']}."
        )
        md += [f"## {folder.name}", "", caption, "", markdown(frame), "", f"![accuracy]({png.name})", ""]
        encoded = base64.b64encode(png.read_bytes()).decode("ascii")
        body += [
            f"<h2>{html.escape(folder.name)}</h2>",
            f"<p>{html.escape(caption)}</p>",
            frame.to_html(index=False, border=0),
            f'<img alt="accuracy" src="data:image/png;base64,{encoded}">',
        ]
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>robustdeq report</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
        "table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #ddd}</style>"
        "</head><body>" + "\n".join(body) + "</body></html>\n"
    )
    atomic_write_text(out / "report.md", "\n".join(md))
    atomic_write_text(out / "report.html", page)
    return [out / "report.md", out / "report.html", *written]
