"""``docs/fidelity.md``: every reference defense's record of its paper, rendered from the manifests.

Each reference defense's manifest carries a ``[fidelity]`` table (:class:`robustdeq.records.defense.Fidelity`):
the paper, what it did (data, architecture, training, evaluation, reported numbers), the ways the
entry departs from it and why, and the paper's own evaluation when robustdeq runs it beside the
protocol's. ``robustdeq fidelity`` writes the page; a test keeps the committed page in step.
"""

from __future__ import annotations

from pathlib import Path

from robustdeq.records.defense import DefenseSpec, find_defense, list_defenses
from robustdeq.records.paths import DEFENSES_DIR, repo_folder

PAGE_PATH = repo_folder("docs") / "fidelity.md"

KINDS = {
    "cpu-budget": "scaled down for the CPU",
    "unknown-in-paper": "not stated in (or not retrievable from) the paper",
    "our-choice": "robustdeq's choice",
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") or "-"


def render_page(root: Path = DEFENSES_DIR) -> str:
    """The Markdown page for every defense under ``root``."""
    defenses = [find_defense(name, root) for name in list_defenses(root)]
    lines = [
        "# Fidelity: each reference defense against its paper",
        "",
        "Rendered by `robustdeq fidelity` from the `[fidelity]` table of every manifest in `defenses/`; do not",
        "edit by hand. A row named after a paper runs that paper's method; where an entry departs from the",
        "paper, the departure is listed here with its reason, and the leaderboard marks the entry (`†`).",
        "Kinds: " + "; ".join(f"`{k}`: {v}" for k, v in KINDS.items()) + ".",
        "",
        "| defense | paper | venue | deviations |",
        "|---|---|---|---|",
    ]
    for d in defenses:
        assert d.fidelity is not None  # load_defense requires it of reference defenses
        f = d.fidelity
        paper = f"[{_cell(f.title)}](https://arxiv.org/abs/{f.arxiv})" if f.arxiv else _cell(f.title)
        lines.append(f"| [`{d.id}`](#{d.id}) | {paper} | {_cell(f.venue)} | {len(f.deviations)} |")
    lines.append("")
    for d in defenses:
        lines += _section(d)
    return "\n".join(lines) + "\n"


def _section(defense: DefenseSpec) -> list[str]:
    f = defense.fidelity
    assert f is not None
    lines = [f"## {defense.id}", "", f"**{defense.name}.** {defense.description}".replace("\n", " "), ""]
    paper = f"{f.title}, {f.venue}" + (f", arXiv [{f.arxiv}](https://arxiv.org/abs/{f.arxiv})" if f.arxiv else "")
    lines.append(f"- **Paper:** {paper}" + (f"; code: {f.code}" if f.code else ""))
    for key in ("data", "architecture", "training", "evaluation", "reported"):
        lines.append(f"- **{key.capitalize()} in the paper:** {getattr(f, key) or '-'}")
    if f.deviations:
        lines += ["", "| deviation | kind | why |", "|---|---|---|"]
        lines += [f"| {_cell(x.what)} | {KINDS[x.kind]} | {_cell(x.why)} |" for x in f.deviations]
    else:
        lines += ["", "No deviations."]
    for evaluation in f.paper_evaluation:
        lines += ["", f"As the paper evaluated (`{evaluation.label}`, outside the worst case): "
                  f"{evaluation.description}."]  # fmt: skip
    lines.append("")
    return lines


def write_page(path: Path, root: Path = DEFENSES_DIR) -> Path:
    from robustdeq.records.store import atomic_write_text

    atomic_write_text(path, render_page(root))
    return path
