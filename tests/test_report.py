"""`robustdeq report`: figures read only from entries, one series (or tick) per defense."""

import copy
from pathlib import Path

from robustdeq.leaderboard import write_entry
from robustdeq.report.build import (
    PANEL_SERIES,
    accuracy_figure,
    attacks_figure,
    cost_figure,
    eps_figure,
    federated_figure,
    knob_figure,
    residual_figure,
    styles,
    write_report,
)
from tests.test_schema import entry


def entries() -> list[dict]:  # type: ignore[type-arg]
    out = []
    for i, (depth, density) in enumerate([(4, 0.5), (4, 1.0), (8, 0.5), (8, 1.0)]):
        e = copy.deepcopy(entry(f"wtm-{i}", 0.9, 0.3 + 0.05 * i))
        e["model_family"] = "weight_tied"
        e["model_settings"] = {"depth": depth, "density": density}
        e["forward_cost"] = float(depth)
        out.append(e)
    return out


def test_each_figure_has_one_series_or_tick_per_defense() -> None:
    data = entries()
    bars = accuracy_figure(data)
    best_first = [e["defense"] for e in sorted(data, key=lambda e: -e["robust_accuracy"])]
    ticks = bars.axes[0].get_yticks()
    assert [t.get_text() for t in bars.axes[0].get_yticklabels()] == best_first
    assert list(ticks) == sorted(ticks, reverse=True)  # the best on top
    for ax in bars.axes[:2]:
        assert len(ax.containers) == len(data)  # one point with its Wilson error bar per defense
    assert [t.get_text() for t in bars.legends[0].get_texts()] == ["weight_tied"]  # outside the axes
    cost = cost_figure(data)
    for ax in cost.axes:
        assert len(ax.containers) == len(data)
    knobs = knob_figure(data)
    assert knobs is not None and len(knobs.axes) == 2  # depth and density vary
    for ax in knobs.axes:
        assert [line.get_label() for line in ax.get_lines()] == ["clean", "robust (worst case)"]


def test_colour_is_the_model_family_and_marker_the_recipe() -> None:
    a, b, c = copy.deepcopy(entry("a")), copy.deepcopy(entry("b")), copy.deepcopy(entry("c"))
    b["model_family"] = "deq"
    c["provenance"]["training"]["recipe"] = "pgd_at"
    style = styles([a, b, c])
    assert style["a"].colour != style["b"].colour and style["a"].colour == style["c"].colour
    assert style["a"].marker == style["b"].marker != style["c"].marker


def test_attacks_figure_is_one_grid_cell_per_defense_and_attack_run() -> None:
    figure = attacks_figure([deq_entry("deq-a", 1.0), entry("cnn")])
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["pgd", "autoattack"]
    assert ax.get_images()[0].get_array().shape == (2, 2)


def test_no_knob_figure_when_nothing_varies() -> None:
    assert knob_figure([entry("a"), entry("b")]) is None


def test_write_report_writes_markdown_html_and_pngs(tmp_path: Path) -> None:
    for e in entries():
        write_entry(tmp_path / "lb", e)
    paths = write_report(tmp_path / "lb", tmp_path / "report")
    names = sorted(p.name for p in paths)
    assert names == ["p-accuracy.png", "p-attacks.png", "p-cost.png", "p-knobs.png", "report.html", "report.md"]
    for path in paths:
        assert path.stat().st_size > 500
    md = (tmp_path / "report" / "report.md").read_text()
    assert "![p-knobs](p-knobs.png)" in md and "| wtm-3 " in md


def deq_entry(defense: str, scale: float) -> dict:  # type: ignore[type-arg]
    e = copy.deepcopy(entry(defense))
    e["model_family"] = "deq"
    e["solver"] = {
        "settings": {
            "f_solver": "anderson", "f_max_iter": 5, "f_tol": 1e-3, "f_stop_mode": "rel", "b_solver": "anderson",
            "b_max_iter": 5, "b_tol": 1e-3, "b_stop_mode": "rel", "train_grad": "ift", "attack_grad": "ift",
            "phantom_steps": 5, "phantom_tau": 0.5, "anderson_lam": 1e-8, "jac_reg": 0.0,
        },
        "attack_grad_modes": ["ift"],
        "nonconverged_clean": 0.0,
        "nonconverged_adversarial": 0.0,
        "mean_steps_clean": 3.0,
        "mean_steps_adversarial": 4.0,
        "spectral_radius": 0.8,
        "residual_trace_clean": [scale * 0.1**k for k in range(5)],
        "residual_trace_adversarial": [scale * 0.2**k for k in range(5)],
    }  # fmt: skip
    return e


def test_residual_figure_has_one_line_per_deq_in_each_panel(tmp_path: Path) -> None:
    data = [deq_entry("deq-a", 1.0), deq_entry("deq-b", 2.0), entry("cnn")]
    figure = residual_figure(data)
    assert figure is not None
    for ax in figure.axes:
        assert ax.get_legend_handles_labels()[1] == ["deq-a", "deq-b"]
    assert residual_figure([entry("cnn")]) is None
    for e in data:
        write_entry(tmp_path / "lb", e)
    paths = write_report(tmp_path / "lb", tmp_path / "report")
    assert (tmp_path / "report" / "p-residual.png") in paths


def test_eps_figure_has_one_line_per_defense_with_a_sweep() -> None:
    swept = []
    for name, accs in (("a", [0.9, 0.5, 0.0]), ("b", [0.8, 0.6, 0.1])):
        e = copy.deepcopy(entry(name))
        e["eps_sweep"] = {
            "attacks": ["pgd"],
            "points": [{"eps": eps, "robust_accuracy": a} for eps, a in zip([0.1, 0.2, 1.0], accs, strict=True)],
        }
        swept.append(e)
    figure = eps_figure([*swept, entry("no-sweep")])
    assert figure is not None
    assert figure.axes[0].get_legend_handles_labels()[1] == ["a", "b"]
    assert eps_figure([entry("no-sweep")]) is None


def test_figures_facet_when_a_family_has_more_series_than_a_panel_shows() -> None:
    many = []
    for i in range(PANEL_SERIES + 2):
        e = copy.deepcopy(entry(f"e{i:02d}"))
        e["eps_sweep"] = {"attacks": ["pgd"], "points": [{"eps": 0.1, "robust_accuracy": 0.5},
                                                         {"eps": 0.2, "robust_accuracy": 0.3}]}  # fmt: skip
        many.append(e)
    figure = eps_figure(many)
    assert figure is not None
    shown = [ax for ax in figure.axes if ax.get_visible()]
    assert [len(ax.get_legend_handles_labels()[1]) for ax in shown] == [PANEL_SERIES, 2]


def test_federated_figure_plots_each_federated_entry_over_rounds(tmp_path: Path) -> None:
    federated = []
    for name, clean in (("fed-a", [0.5, 0.7]), ("fed-b", [0.4, 0.8])):
        e = copy.deepcopy(entry(name))
        e["federated"] = {
            "fusion": "fedavg",
            "clients": 2,
            "client_examples": [10, 10],
            "client_labels": [[0, 1], [0, 1]],
            "monitor": "clean and PGD-20 accuracy",
            "rounds": [
                {
                    "round": r + 1,
                    "weights": [0.5, 0.5],
                    "client_quality": [None, None],
                    "client_max_iter": [40, 4],
                    "client_evals_per_forward": [12.0, 6.0],
                    "bytes_to_clients": 1000,
                    "bytes_to_server": 1000,
                    "clean_accuracy": c,
                    "pgd_accuracy": c / 2,
                }
                for r, c in enumerate(clean)
            ],
        }
        federated.append(e)
    figure = federated_figure([*federated, entry("central")])
    assert figure is not None
    accuracy, volume = figure.axes
    assert [line.get_label() for line in volume.get_lines()] == ["fed-a", "fed-b"]
    assert list(volume.get_lines()[0].get_ydata()) == [0.002, 0.004]  # MB sent, cumulative
    assert [list(line.get_ydata()) for line in accuracy.get_lines()[:2]] == [[50.0, 70.0], [25.0, 35.0]]
    assert federated_figure([entry("central")]) is None
    for e in [*federated, entry("central")]:
        write_entry(tmp_path / "lb", e)
    assert (tmp_path / "report" / "p-federated.png") in write_report(tmp_path / "lb", tmp_path / "report")


def test_cost_figure_labels_every_point_once_without_overlaps() -> None:
    """Many defenses at one cost and one size (the digits zoo: 15 at 5,034 parameters) stay readable:
    each point's table-row number is in exactly one label per panel, and no two labels overlap."""
    data = []
    for i in range(12):
        e = copy.deepcopy(entry(f"d{i:02d}", 0.9, 0.40 + 0.01 * (i % 6)))
        e["forward_cost"] = 12.0 + (i % 3)
        data.append(e)
    figure = cost_figure(data)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    for ax in figure.axes[:2]:
        labels = [t for t in ax.texts if t.get_text()]
        numbers = [n for t in labels for n in t.get_text().split(", ")]
        assert sorted(numbers, key=int) == [str(i + 1) for i in range(len(data))]
        boxes = [t.get_window_extent(renderer) for t in labels]
        assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    key = [t.get_text() for t in figure.texts if t.get_text().startswith("point labels")]
    assert len(key) == 1 and all(e["defense"] in key[0] for e in data)


def test_eps_axis_is_ticked_where_the_sweep_measured() -> None:
    e = copy.deepcopy(entry("a"))
    swept = [0.05, 0.1, 0.3, 1.0]
    e["eps_sweep"] = {"attacks": ["pgd"], "points": [{"eps": x, "robust_accuracy": 0.5} for x in swept]}
    figure = eps_figure([e])
    assert figure is not None
    ax = figure.axes[0]
    assert ax.get_xscale() == "log" and list(ax.get_xticks()) == swept  # no ticks between 0.3 and 1.0


def test_unranked_entries_are_set_apart_in_the_accuracy_figure() -> None:
    good, flagged = copy.deepcopy(entry("good", 0.9, 0.2)), copy.deepcopy(entry("flagged", 0.9, 0.6))
    flagged["flags"] = ["zero_gradients"]  # potentially unreliable: not ranked, whatever its number
    figure = accuracy_figure([good, flagged])
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["good", "flagged (not ranked)"]
    rules = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(rules) == 1  # the rule between the ranked rows and the rest
