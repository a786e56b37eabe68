"""``[datasets.<name>]`` in a defense manifest: one defense, its sizes and budgets per data set (MNIST's
differ from the 8x8 digits'), applied wherever the defense is trained, built, evaluated or reloaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from robustdeq.checkpoint import save_checkpoint
from robustdeq.errors import RobustdeqError
from robustdeq.pipeline import checkpoint_meta, load_trained
from robustdeq.records.defense import load_defense
from robustdeq.records.protocol import find_protocol
from robustdeq.training.trainer import build_model

MANIFEST = """
name = "variants"
description = "digits description"
[model]
family = "deq"
channels = 8
bound = 0.9
[train]
recipe = "pgd_at"
epochs = 15
lr = 3e-3
[train.pgd_at]
steps = 7
random_start = true
[fidelity]
title = "t"
arxiv = ""
venue = "v"
[[fidelity.deviations]]
what = "8x8 digits"
kind = "cpu-budget"
why = "cpu"

[datasets.mnist]
description = "mnist description"
model = { channels = 4 }
train = { epochs = 2, pgd_at = { steps = 3 } }
[[datasets.mnist.deviations]]
what = "MNIST, 2 epochs"
kind = "cpu-budget"
why = "cpu"
"""


def defense_folder(tmp_path: Path, text: str = MANIFEST) -> Path:
    folder = tmp_path / "variants"
    folder.mkdir()
    (folder / "defense.toml").write_text(text, encoding="utf-8")
    return folder


def test_a_variant_merges_key_by_key_and_replaces_description_and_deviations(tmp_path: Path) -> None:
    spec = load_defense(defense_folder(tmp_path))
    mnist, digits = spec.on("mnist"), spec.on("digits")
    assert spec.datasets == ("mnist",)
    assert (mnist.train.epochs, mnist.train.lr, mnist.train.recipe) == (2, 3e-3, "pgd_at")
    assert mnist.train.recipe_settings == {"steps": 3, "random_start": True}  # the recipe table merged too
    assert mnist.model.settings == {"channels": 4, "bound": 0.9}
    assert mnist.description == "mnist description" and mnist.dataset == "mnist"
    assert mnist.fidelity is not None and [d.what for d in mnist.fidelity.deviations] == ["MNIST, 2 epochs"]
    assert (digits.train.epochs, digits.model.settings["channels"], digits.description) == (15, 8, "digits description")
    assert mnist.on("digits") == digits and mnist.on("mnist") == mnist  # picking again from a variant
    assert mnist.manifest == spec.manifest  # a checkpoint carries the whole manifest


def test_a_defense_without_variants_is_the_same_everywhere(tmp_path: Path) -> None:
    spec = load_defense(defense_folder(tmp_path, MANIFEST.split("[datasets.mnist]")[0]))
    assert spec.on("mnist") is spec and spec.datasets == ()


def test_a_bad_variant_is_a_one_line_error_naming_its_table(tmp_path: Path) -> None:
    with pytest.raises(RobustdeqError, match=r"\[datasets.mnist\].*epochs") as error:
        load_defense(defense_folder(tmp_path, MANIFEST.replace("epochs = 2", 'epochs = "2"')))
    assert "\n" not in str(error.value)


def test_a_variant_for_an_unknown_data_set_is_refused_where_the_model_is_built(tmp_path: Path) -> None:
    spec = load_defense(defense_folder(tmp_path, MANIFEST.replace("datasets.mnist", "datasets.mnsit")))
    with pytest.raises(RobustdeqError, match="mnsit"):
        build_model(spec, "digits")


def test_the_variant_is_built_saved_and_reloaded_for_its_data_set(tmp_path: Path) -> None:
    spec = load_defense(defense_folder(tmp_path))
    channels = {p.shape[0] for name, p in build_model(spec, "mnist").named_parameters() if name == "inject.weight"}
    assert channels == {4}
    protocol = find_protocol("mnist-linf-0.3")
    model = build_model(spec, "mnist")
    file = tmp_path / "model.safetensors"
    save_checkpoint(model, file, checkpoint_meta(spec, protocol, spec.on("mnist").train.to_dict(), 0.0))
    reloaded, trained = load_trained(file)
    assert reloaded.dataset == "mnist" and reloaded.train.epochs == 2
    for a, b in zip(model.state_dict().values(), trained.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_the_fidelity_page_shows_each_data_sets_settings_and_deviations(tmp_path: Path) -> None:
    from robustdeq.fidelity import render_methods, render_page

    defense_folder(tmp_path)
    page = render_page(tmp_path)
    assert "| [`variants`](#variants) | t | v | 1; mnist 1 | [mnist](#variants-on-mnist) |" in page
    defaults, mnist = page.split("### variants on mnist")
    assert "- **Training:** `pgd_at`: steps 7, random_start true; 15 epochs, batch 64, lr 0.003" in defaults
    assert "| 8x8 digits |" in defaults and "MNIST, 2 epochs" not in defaults
    assert mnist.startswith("\n\nmnist description\n")
    assert "- **Model:** `deq`: channels 4, bound 0.9" in mnist
    assert "- **Training:** `pgd_at`: steps 3, random_start true; 2 epochs, batch 64, lr 0.003" in mnist
    changed = (
        "- **Changed from the defaults:** `model.channels` 8 -> 4, `train.epochs` 15 -> 2, `train.pgd_at.steps` 7 -> 3"
    )
    assert changed in mnist
    assert "| MNIST, 2 epochs | scaled down for the CPU | cpu |" in mnist and "8x8 digits" not in mnist
    assert "channels 8" in render_methods(tmp_path) and "channels 4" not in render_methods(tmp_path)  # the defaults
    # without a variant: no sub-section, as before
    (tmp_path / "variants" / "defense.toml").write_text(MANIFEST.split("[datasets.mnist]")[0])
    page = render_page(tmp_path)
    assert "### " not in page and "Our settings" not in page and "| 1 | - |" in page


def test_a_checkpoint_is_noted_as_trained_otherwise_only_when_its_data_sets_model_or_training_changed(
    tmp_path: Path,
) -> None:
    from robustdeq.pipeline import defense_from_meta

    folder = defense_folder(tmp_path)
    carried = MANIFEST.split("[datasets.mnist]")[0]  # trained before the MNIST table was added
    meta = {"manifest": carried, "defense": "variants", "defense_path": str(folder), "dataset": "digits", "files": {}}
    assert defense_from_meta(meta, folder)[1] == []  # another data set's table: the digits model is the same
    assert defense_from_meta({**meta, "dataset": "mnist"}, folder)[1]  # MNIST's training changed
    (folder / "defense.toml").write_text(MANIFEST.replace("epochs = 15", "epochs = 14"))
    assert defense_from_meta(meta, folder)[1]


def test_what_was_changed_after_reading_is_carried_over_to_the_variant(tmp_path: Path) -> None:
    """A sweep replaces model settings and the seed study the training seed before the pipeline picks the
    data set's variant: picking it must not undo them."""
    from dataclasses import replace

    spec = load_defense(defense_folder(tmp_path))
    changed = replace(
        spec,
        id="variants-swept",
        train=replace(spec.train, seed=3),
        model=replace(spec.model, settings={**spec.model.settings, "bound": 0.5}),
    )
    mnist = changed.on("mnist")
    assert (mnist.train.seed, mnist.train.epochs, mnist.model.settings) == (3, 2, {"channels": 4, "bound": 0.5})
    digits = changed.on("digits")
    assert (digits.train.seed, digits.train.epochs, digits.model.settings["bound"]) == (3, 15, 0.5)
    assert mnist.on("digits").train.seed == 3 and mnist.on("digits").train.epochs == 15
    assert mnist.id == digits.id == "variants-swept"
