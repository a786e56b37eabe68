"""Build a report from leaderboard entries (never retrains or re-evaluates anything)."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from robustdeq.errors import RobustdeqError  # noqa: E402
from robustdeq.leaderboard import read_entries, table  # noqa: E402
from robustdeq.leaderboard.render import markdown  # noqa: E402
from robustdeq.leaderboard.store import atomic_write_text, protocol_folders  # noqa: E402


def accuracy_figure(entries: list[dict[str, Any]]) -> Figure:
    """Grouped bars per defense (one x tick each): clean, each attack's own accuracy, the worst case."""
    frame = table(entries)
    names: list[str] = []
    for e in entries:
        names.extend(name for name in e["attacks"] if name not in names)
    attack_cols = [f"{name} %" for name in names]
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
    return fig


def save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def cost_figure(entries: list[dict[str, Any]]) -> Figure:
    """Robust accuracy against forward cost (block evaluations) and against parameter count;
    one series (a labelled point) per defense."""
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 3.8))
    for e in sorted(entries, key=lambda e: e["defense"]):
        robust = 100 * e["robust_accuracy"]
        axes[0].scatter([e["forward_cost"] or 0.0], [robust], label=e["defense"])
        axes[1].scatter([e["n_parameters"]], [robust], label=e["defense"])
    axes[0].set_xlabel("forward cost (block evaluations per example)")
    axes[1].set_xlabel("parameters")
    for ax in axes:
        ax.set_ylabel("robust accuracy (%)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="best")
    fig.suptitle(f"{entries[0]['protocol']}: robustness against cost")
    fig.tight_layout()
    return fig


def eps_figure(entries: list[dict[str, Any]]) -> Figure | None:
    """Robust accuracy against eps (the protocol's eps sweep), one line per defense."""
    swept = [e for e in entries if e["eps_sweep"] and len(e["eps_sweep"]["points"]) >= 2]
    if not swept:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    for e in sorted(swept, key=lambda e: e["defense"]):
        points = e["eps_sweep"]["points"]
        ax.plot(
            [p["eps"] for p in points], [100 * p["robust_accuracy"] for p in points], marker="o", label=e["defense"]
        )
    ax.axvline(entries[0]["threat_model"]["eps"], color="grey", linestyle=":", linewidth=1)
    attacks = ", ".join(swept[0]["eps_sweep"]["attacks"])
    ax.set_xlabel(f"eps ({entries[0]['threat_model']['norm']}; dotted: the protocol's eps)")
    ax.set_ylabel(f"robust accuracy under {attacks} (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"{entries[0]['protocol']}: robust accuracy against eps")
    fig.tight_layout()
    return fig


def residual_figure(entries: list[dict[str, Any]]) -> Figure | None:
    """Mean relative solver residual against solver step, clean versus adversarial inputs; one
    line per DEQ entry in each panel (None when no entry has a solver)."""
    deqs = [e for e in entries if e["solver"] is not None and e["solver"]["residual_trace_clean"]]
    if not deqs:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 3.8), sharey=True)
    for ax, key, title in (
        (axes[0], "residual_trace_clean", "clean inputs"),
        (axes[1], "residual_trace_adversarial", "adversarial inputs"),
    ):
        for e in sorted(deqs, key=lambda e: e["defense"]):
            trace = e["solver"][key]
            ax.semilogy(range(1, len(trace) + 1), trace, label=e["defense"])
        ax.axhline(deqs[0]["solver"]["settings"]["f_tol"], color="grey", linestyle=":", linewidth=1)
        ax.set_title(title)
        ax.set_xlabel("solver step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean relative residual |f(z) - z| / |f(z)|")
    axes[1].legend(fontsize=7)
    fig.suptitle(f"{entries[0]['protocol']}: forward solver convergence (dotted: f_tol)")
    fig.tight_layout()
    return fig


def federated_figure(entries: list[dict[str, Any]]) -> Figure | None:
    """The federated entries over communication rounds: the fused model's monitored clean and
    PGD accuracy, and the bytes sent so far (None when no entry is federated)."""
    federated = [e for e in entries if e.get("federated")]
    if not federated:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 3.8))
    for e in sorted(federated, key=lambda e: e["defense"]):
        rounds = e["federated"]["rounds"]
        steps = [r["round"] for r in rounds]
        line = axes[0].plot(steps, [100 * (r["clean_accuracy"] or 0.0) for r in rounds], marker="o", label=e["defense"])
        axes[0].plot(
            steps,
            [100 * (r["pgd_accuracy"] or 0.0) for r in rounds],
            marker="x",
            linestyle="--",
            color=line[0].get_color(),
        )
        sent, total = [], 0
        for r in rounds:
            total += r["bytes_to_clients"] + r["bytes_to_server"]
            sent.append(total / 1e6)
        axes[1].plot(steps, sent, marker="o", label=e["defense"])
    axes[0].set_ylabel("fused model accuracy (%): clean solid, PGD dashed")
    axes[0].set_ylim(0, 100)
    axes[1].set_ylabel("bytes sent, both directions, cumulative (MB)")
    for ax in axes:
        ax.set_xlabel("communication round")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{entries[0]['protocol']}: federated training ({federated[0]['federated']['monitor']})", fontsize=9)
    fig.tight_layout()
    return fig


KNOB_SETTINGS = ("depth", "channels", "density")


def knob_figure(entries: list[dict[str, Any]]) -> Figure | None:
    """Clean and robust accuracy against each model setting that varies within a family (sweeps).

    Each point averages the entries that share that knob value; None when nothing varies.
    """
    panels = []
    for family in sorted({e["model_family"] for e in entries}):
        group = [e for e in entries if e["model_family"] == family]
        for knob in KNOB_SETTINGS:
            values = sorted({e["model_settings"].get(knob) for e in group if knob in e["model_settings"]})
            if len(values) >= 2:
                panels.append((family, knob, values, group))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 3.4), squeeze=False)
    for ax, (family, knob, values, group) in zip(axes[0], panels, strict=True):
        for key, label in (("clean_accuracy", "clean"), ("robust_accuracy", "robust (worst case)")):
            means = []
            for value in values:
                picked = [e[key] for e in group if e["model_settings"].get(knob) == value]
                means.append(100 * sum(picked) / len(picked))
            ax.plot(values, means, marker="o", label=label)
        ax.set_xlabel(f"{knob} ({family})")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{entries[0]['protocol']}: accuracy against each knob (mean over the other knobs)")
    fig.tight_layout()
    return fig


def write_report(root: Path, out: Path, protocols: list[str] | None = None) -> list[Path]:
    """Write ``report.md``, ``report.html`` and one PNG per protocol into ``out``."""
    folders = [root / p for p in protocols] if protocols else protocol_folders(root)
    if not folders:
        raise RobustdeqError(f"{root}: no entries (no <protocol>/ folder holding a <defense>.json)")
    md = ["# robustdeq report", ""]
    body = ["<h1>robustdeq report</h1>"]
    written = []
    for folder in folders:
        entries = read_entries(folder)
        frame = table(entries)
        figures = [
            save(accuracy_figure(entries), out / f"{folder.name}-accuracy.png"),
            save(cost_figure(entries), out / f"{folder.name}-cost.png"),
        ]
        optional_figures = (
            ("eps", eps_figure(entries)),
            ("residual", residual_figure(entries)),
            ("knobs", knob_figure(entries)),
            ("federated", federated_figure(entries)),
        )
        for name, optional in optional_figures:
            if optional is not None:
                figures.append(save(optional, out / f"{folder.name}-{name}.png"))
        written.extend(figures)
        first = entries[0]
        tm = first["threat_model"]
        caption = (
            f"{len(entries)} defenses, data set {first['dataset']}, {tm['norm']} eps = {tm['eps']}, "
            f"{first['n_examples']} examples, protocol version {first['protocol_version']}."
        )
        md += [f"## {folder.name}", "", caption, "", markdown(frame), ""]
        md += [f"![{figure.stem}]({figure.name})\n" for figure in figures]
        body += [f"<h2>{html.escape(folder.name)}</h2>", f"<p>{html.escape(caption)}</p>"]
        body.append(frame.to_html(index=False, border=0))
        for figure in figures:
            encoded = base64.b64encode(figure.read_bytes()).decode("ascii")
            body.append(f'<p><img alt="{figure.stem}" src="data:image/png;base64,{encoded}"></p>')
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>robustdeq report</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
        "table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #ddd}</style>"
        "</head><body>" + "\n".join(body) + "</body></html>\n"
    )
    atomic_write_text(out / "report.md", "\n".join(md))
    atomic_write_text(out / "report.html", page)
    return [out / "report.md", out / "report.html", *written]
