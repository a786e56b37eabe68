"""``docs/fidelity.md`` and the README's table of methods: the reference defenses, rendered from the manifests.

Each reference defense's manifest carries a ``[fidelity]`` table (:class:`robustdeq.records.defense.Fidelity`):
the paper, what it did (data, architecture, training, evaluation, reported numbers), the ways the
entry departs from it and why, and the paper's own evaluation when robustdeq runs it beside the
protocol's. A defense with settings of its own on a data set (``[datasets.<name>]``, e.g. MNIST's
sizes and budgets) gets a sub-section per data set: its model and training there, what changed from
the manifest's defaults, and that data set's deviations, which replace the defaults' there.
``robustdeq fidelity`` writes the page, and the README's block between :data:`METHODS_START` and
:data:`METHODS_END`: one row per reference defense with its suite, model family and settings,
solver, recipe and settings (the manifest's defaults), read from the manifest so that it cannot go
stale. Tests keep the committed page and block in step.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from robustdeq.errors import RobustdeqError
from robustdeq.records.defense import DefenseSpec, Fidelity, find_defense, list_defenses
from robustdeq.records.paths import DEFENSES_DIR, repo_folder

PAGE_PATH = repo_folder("docs") / "fidelity.md"
README_PATH = repo_folder("docs").parent / "README.md"
METHODS_START = "<!-- methods:start -->"
METHODS_END = "<!-- methods:end -->"

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
        "A defense with settings of its own on a data set (`[datasets.<name>]` in its manifest) has a sub-section",
        "per data set: its model and training there, what changed from the defaults, and that data set's",
        "deviations (they replace the defaults' on that data set).",
        "",
        "| defense | paper | venue | deviations (defaults; own data sets) | own settings on |",
        "|---|---|---|---|---|",
    ]
    for d in defenses:
        assert d.fidelity is not None  # load_defense requires it of reference defenses
        f = d.fidelity
        paper = f"[{_cell(f.title)}](https://arxiv.org/abs/{f.arxiv})" if f.arxiv else _cell(f.title)
        on = ", ".join(f"[{name}](#{_anchor(d, name)})" for name in d.datasets) or "-"
        counts = [str(len(f.deviations))] + [f"{name} {len(_fidelity(d.on(name)).deviations)}" for name in d.datasets]
        lines.append(f"| [`{d.id}`](#{d.id}) | {paper} | {_cell(f.venue)} | {'; '.join(counts)} | {on} |")
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
    if defense.datasets:  # the defaults next to each data set's own settings, for comparison
        lines += [
            "",
            f"Our settings (the manifest's defaults) on every data set but {', '.join(defense.datasets)} "
            "(its own below):",
            "",
            f"- **Model:** {_model(defense)}",
            f"- **Training:** {_training(defense)}",
        ]
    lines += _deviations(f.deviations)
    for evaluation in f.paper_evaluation:
        lines += ["", f"As the paper evaluated (`{evaluation.label}`, outside the worst case): "
                  f"{evaluation.description}."]  # fmt: skip
    lines.append("")
    for name in defense.datasets:
        lines += _variant(defense, name)
    return lines


def _fidelity(defense: DefenseSpec) -> Fidelity:
    assert defense.fidelity is not None  # load_defense requires it of reference defenses, variants keep it
    return defense.fidelity


def _anchor(defense: DefenseSpec, dataset: str) -> str:
    """The Markdown anchor of a defense's sub-section for one data set (``### <id> on <data set>``)."""
    return f"{defense.id}-on-{dataset}".replace(".", "")


def _deviations(deviations: list[Any]) -> list[str]:
    if not deviations:
        return ["", "No deviations."]
    lines = ["", "| deviation | kind | why |", "|---|---|---|"]
    return lines + [f"| {_cell(x.what)} | {KINDS[x.kind]} | {_cell(x.why)} |" for x in deviations]


def _variant(defense: DefenseSpec, dataset: str) -> list[str]:
    """The sub-section of one ``[datasets.<name>]`` variant: its description where it has its own, its
    model and training, what changed from the defaults, and its deviations."""
    variant = defense.on(dataset)
    lines = [f"### {defense.id} on {dataset}", ""]
    if variant.description != defense.description:
        lines += [variant.description.replace("\n", " "), ""]
    lines += [
        f"Our settings on {dataset} (`[datasets.{dataset}]` in the manifest, merged over the defaults above):",
        "",
        f"- **Model:** {_model(variant)}",
        f"- **Training:** {_training(variant)}",
        f"- **Changed from the defaults:** {_changes(defense, variant) or 'nothing but the deviations'}",
    ]
    lines += _deviations(_fidelity(variant).deviations)
    lines.append("")
    return lines


def _flat(prefix: str, values: Any) -> dict[str, Any]:
    """Nested settings as ``{"train.pgd_at.steps": 7, ...}``."""
    if not isinstance(values, dict):
        return {prefix: values}
    out: dict[str, Any] = {}
    for key, value in values.items():
        out.update(_flat(f"{prefix}.{key}", value))
    return out


def _settings_of(defense: DefenseSpec) -> dict[str, Any]:
    """Every setting of a defense's model, solver and training, flattened (the keys of :func:`_changes`)."""
    train = asdict(defense.train)
    recipe_settings = train.pop("recipe_settings")
    train.pop("stray_tables")
    out = {**_flat("model", defense.model.settings), **_flat("train", train)}
    out.update(_flat(f"train.{defense.train.recipe}", recipe_settings))
    if defense.solver is not None:
        out.update(_flat("solver", defense.solver.model_dump()))
    return out


def _changes(defaults: DefenseSpec, variant: DefenseSpec) -> str:
    """``train.epochs 15 -> 3, ...``: each setting the variant changes, adds or drops."""
    before, after = _settings_of(defaults), _settings_of(variant)
    changed = [k for k in sorted(before.keys() | after.keys()) if before.get(k) != after.get(k)]
    return ", ".join(
        f"`{k}` {_value(before[k]) if k in before else '(unset)'} -> {_value(after[k]) if k in after else '(unset)'}"
        for k in changed
    )


def write_page(path: Path, root: Path = DEFENSES_DIR) -> Path:
    from robustdeq.records.store import atomic_write_text

    atomic_write_text(path, render_page(root))
    return path


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "/".join(_value(v) for v in value)
    return str(value)


def _settings(settings: dict[str, Any], skip: tuple[str, ...] = ()) -> str:
    """``key value, ...`` for the plain settings; a nested table as ``key (its settings)``, and after
    the setting that names it (``local_recipe pgd_at (steps 7, ...)``) when there is one."""
    tables = {k: v for k, v in settings.items() if isinstance(v, dict) and k not in skip}
    named = {v for v in settings.values() if isinstance(v, str) and v in tables}
    parts = []
    for key, value in settings.items():
        if key in skip or key in named:
            continue
        if key in tables:
            parts.append(f"{key} ({_settings(value)})")
        elif isinstance(value, str) and value in tables:
            parts.append(f"{key} {value} ({_settings(tables[value])})")
        else:
            parts.append(f"{key} {_value(value)}")
    return ", ".join(parts)


def _entropy_reduction(table: dict[str, Any]) -> str:
    """``[model.entropy_reduction]``: rounds x (cell steps + sign steps of a size), radius, readout."""
    known = ("rounds", "solver_steps", "input_steps", "step_size", "radius", "readout")
    text = "input entropy reduction at inference"
    if all(k in table for k in known[:4]):
        text += (
            f": {_value(table['rounds'])} rounds x ({_value(table['solver_steps'])} cell steps + "
            f"{_value(table['input_steps'])} sign steps of {_value(table['step_size'])})"
        )
        rest = {k: v for k, v in table.items() if k not in known[:4]}
    else:
        rest = dict(table)
    if "radius" in rest:
        text += f", radius {_value(rest.pop('radius'))}"
    if "readout" in rest:
        text += f", {_value(rest.pop('readout'))} readout"
    return text + (f", {_settings(rest)}" if rest else "")


def _model(defense: DefenseSpec) -> str:
    model = defense.model
    head = f"`{model.factory}`" if model.factory else f"`{model.family}`"
    settings = dict(model.settings)
    entropy = settings.pop("entropy_reduction", None)
    text = head + (f": {_settings(settings)}" if settings else "")
    solver = defense.solver
    if solver is not None:
        text += (
            f"; {solver.f_solver} solver, {solver.f_max_iter} iterations, tol {_value(solver.f_tol)}, "
            f"{solver.train_grad} gradient in training, {solver.attack_grad} in attacks"
        )
        if solver.jac_reg > 0:
            text += f", Jacobian penalty {_value(solver.jac_reg)}"
    if isinstance(entropy, dict):
        text += f"; {_entropy_reduction(entropy)}"
    return text


def _training(defense: DefenseSpec) -> str:
    train = defense.train
    if train.checkpoint is not None:
        return f"shipped checkpoint `{train.checkpoint}`"
    settings = dict(train.recipe_settings)
    steps = ("min_steps", "max_steps")
    if train.recipe == "ris" and all(k in settings for k in ("base", *steps)):
        # Random intermediate states: the base recipe and its settings, then the solver-step range.
        base = str(settings["base"])
        inner = settings.get(base)
        text = f"`ris` on `{base}`" + (f" ({_settings(inner)})" if isinstance(inner, dict) and inner else "")
        low, high = (_value(settings[k]) for k in steps)
        text += f": random intermediate states after {low}..{high} solver steps"
        rest = _settings(settings, skip=("base", base, *steps))
        text += f" ({rest})" if rest else ""
    else:
        text = f"`{train.recipe}`" + (f": {_settings(settings)}" if settings else "")
    length = f"{train.epochs} rounds" if train.recipe == "federated" else f"{train.epochs} epochs"
    text = f"{text}; {length}, batch {train.batch_size}, lr {_value(train.lr)}"
    if train.train_subset is not None:
        text += f", on the first {train.train_subset:,} training examples"
    if train.eps_warmup_epochs:
        warmup = train.eps_warmup_epochs
        text += ", the training attack's eps ramped up from 0 over the first " + (
            "epoch" if warmup == 1 else f"{_value(warmup)} epochs"
        )
    return text


def render_methods(root: Path = DEFENSES_DIR) -> str:
    """The README's table of the reference defenses, between the markers (both included)."""
    lines = [
        METHODS_START,
        "<!-- Rendered by `robustdeq fidelity` from defenses/*/defense.toml; do not edit by hand. -->",
        "",
        "| defense | suite | name | paper | model (family, settings, solver) | training (recipe, settings, budget) |",
        "|---|---|---|---|---|---|",
    ]
    for name in list_defenses(root):
        d = find_defense(name, root)
        arxiv = d.fidelity.arxiv if d.fidelity is not None else ""
        paper = f"[arXiv {arxiv}](https://arxiv.org/abs/{arxiv})" if arxiv else "-"
        cells = [f"[`{d.id}`](docs/fidelity.md#{d.id})", d.suite, d.name, paper, _model(d), _training(d)]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines += ["", METHODS_END]
    return "\n".join(lines)


def _methods_span(text: str, where: str) -> tuple[int, int]:
    start, end = text.find(METHODS_START), text.find(METHODS_END)
    if start < 0 or end < start or text.count(METHODS_START) != 1 or text.count(METHODS_END) != 1:
        raise RobustdeqError(f"{where}: needs one {METHODS_START} line and, after it, one {METHODS_END} line")
    return start, end + len(METHODS_END)


def readme_methods(path: Path = README_PATH) -> str:
    """The block between the markers in ``path`` (the markers included), as committed."""
    text = path.read_text(encoding="utf-8")
    start, end = _methods_span(text, str(path))
    return text[start:end]


def write_readme(path: Path = README_PATH, root: Path = DEFENSES_DIR) -> Path:
    """Replace the README's block between the markers with :func:`render_methods`."""
    from robustdeq.records.store import atomic_write_text

    if not path.is_file():
        raise RobustdeqError(f"{path}: no such file (the README whose table of methods is rendered)")
    text = path.read_text(encoding="utf-8")
    start, end = _methods_span(text, str(path))
    atomic_write_text(path, text[:start] + render_methods(root) + text[end:])
    return path
