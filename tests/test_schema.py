import copy
import json
from pathlib import Path
from typing import Any

import pytest

from robustdeq.errors import RobustdeqError
from robustdeq.leaderboard import read_entry, validate_entry, write_entry
from robustdeq.leaderboard.render import render, table


def entry(defense: str = "d", clean: float = 0.9, robust: float = 0.5) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "defense": defense,
        "defense_name": "A defense",
        "paper": "",
        "model_family": "explicit",
        "model_settings": {"channels": 16},
        "protocol": "p",
        "protocol_version": 1,
        "protocol_hash": "ab" * 32,
        "dataset": "digits",
        "threat_model": {"norm": "Linf", "eps": 0.2},
        "n_examples": 10,
        "clean_accuracy": clean,
        "robust_accuracy": robust,
        "attacks": {"pgd": robust + 0.1, "autoattack": robust},
        "flags": [],
        "checks": {},
        "eps_sweep": None,
        "n_parameters": 100,
        "forward_cost": 2.0,
        "solver": None,
        "provenance": {
            "robustdeq_version": "0.1.0",
            "torch_version": "2",
            "python_version": "3.11",
            "git_commit": None,
            "hardware": "cpu",
            "seed": 0,
            "training": {
                "recipe": "standard",
                "epochs": 1,
                "batch_size": 8,
                "lr": 0.001,
                "weight_decay": 0.0,
                "seed": 0,
                "train_subset": None,
                "recipe_settings": {},
            },
            "attack_settings": {"pgd": {"steps": 5}},
            "reduced_budget": False,
            "train_seconds": 1.0,
            "eval_seconds": 1.0,
        },
    }


def test_valid_entry_round_trips(tmp_path: Path) -> None:
    path = write_entry(tmp_path, entry())
    assert path == tmp_path / "p" / "d.json"
    assert read_entry(path) == entry()
    assert not list(path.parent.glob(".*.tmp"))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda e: e.update(extra=1), "unknown key 'extra'"),
        (lambda e: e.pop("flags"), "missing key 'flags'"),
        (lambda e: e.update(clean_accuracy="0.9"), "entry.clean_accuracy: expected number"),
        (lambda e: e.update(n_examples=True), "entry.n_examples: expected integer"),
        (lambda e: e.update(n_examples=10.0), "entry.n_examples: expected integer"),
        (lambda e: e["threat_model"].update(eps=None), "entry.threat_model.eps"),
        (lambda e: e["attacks"].update(pgd="x"), "entry.attacks.pgd"),
        (lambda e: e["provenance"].update(when="now"), "unknown key 'when'"),
        (lambda e: e.update(robust_accuracy=0.95), "above clean_accuracy"),
        (lambda e: e.update(clean_accuracy=float("nan")), "expected number"),
        (lambda e: e["attacks"].update(pgd=0.2), "between robust and clean"),
    ],
)
def test_schema_rejects(mutate: Any, message: str) -> None:
    bad = copy.deepcopy(entry())
    mutate(bad)
    with pytest.raises(RobustdeqError, match=message):
        validate_entry(bad)


def test_invalid_entry_is_never_written(tmp_path: Path) -> None:
    bad = entry()
    bad["flags"] = "oops"
    with pytest.raises(RobustdeqError):
        write_entry(tmp_path, bad)
    assert not (tmp_path / "p").exists()


def test_corrupt_file_is_an_error_on_read(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"defense": "x"}))
    with pytest.raises(RobustdeqError, match="missing key"):
        read_entry(path)


def test_render_ranks_by_worst_case_and_sets_other_protocol_versions_apart(tmp_path: Path) -> None:
    entries = [entry("weak", 0.95, 0.1), entry("strong", 0.9, 0.6)]
    frame = table(entries)
    assert frame["defense"].tolist() == ["strong", "weak"]
    assert frame["rank"].tolist() == ["1", "2"]  # 6/10 against 1/10: significantly apart
    md, csv, page = render(entries, tmp_path)
    rows = [line for line in md.read_text().splitlines() if "](#strong)" in line or "](#weak)" in line]
    assert "[strong](#strong)" in rows[0] and "[weak](#weak)" in rows[1]  # ranked first in the table too
    assert csv.read_text().startswith("rank,letters,defense")
    assert page.read_text().startswith("<!doctype html>") and "<td>strong</td>" in page.read_text()
    other = entry("other")
    other["protocol_hash"] = "cd" * 32
    assert table([*entries, other])["rank"].tolist() == ["1", "2", "apart"]
    render([*entries, other], tmp_path)
    text = md.read_text()
    headline, rest = text.split("## Not ranked with the table above")
    assert "[other]" not in headline and "| [other](#other)" in rest and "### other" in rest


def test_flagged_entry_renders_as_potentially_unreliable() -> None:
    flagged = entry("f")
    flagged["flags"] = ["zero_gradients"]
    frame = table([flagged])
    assert frame["status"][0] == "potentially unreliable: zero_gradients"


def test_an_entry_computed_on_a_gpu_is_labelled_in_the_table() -> None:
    cpu, gpu = entry("on-cpu"), entry("on-gpu")
    cpu["provenance"]["device"] = {
        "type": "cpu",
        "name": "cpu",
        "cuda_version": None,
        "cudnn_version": None,
        "deterministic_algorithms": False,
        "cudnn_deterministic": None,
        "cublas_workspace_config": None,
    }
    gpu["provenance"]["device"] = {
        **cpu["provenance"]["device"],
        "type": "cuda",
        "name": "NVIDIA H200",
        "cuda_version": "12.8",
        "cudnn_version": 91000,
        "deterministic_algorithms": True,
        "cudnn_deterministic": True,
        "cublas_workspace_config": ":4096:8",
    }
    for e in (cpu, gpu):
        validate_entry(e)
    status = dict(zip(*(table([cpu, gpu])[c].tolist() for c in ("defense", "status")), strict=True))
    assert status == {"on-cpu": "ok", "on-gpu": "ok (GPU: NVIDIA H200)"}


def test_the_legend_says_each_row_is_a_single_training_seed(tmp_path: Path) -> None:
    md, _, _ = render([entry("a", 0.9, 0.5), entry("b", 0.8, 0.4)], tmp_path)  # the site shows the same legend
    assert "one training run from one seed" in md.read_text() and "seed_variance" in md.read_text()
