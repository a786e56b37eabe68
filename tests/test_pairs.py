"""A run killed at any instant leaves every entry naming a checkpoint on disk with the SHA-256 it records."""

import dataclasses
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from robustdeq import pipeline, zoo
from robustdeq.checkpoint import sha256
from robustdeq.pipeline import load_splits, load_trained, run_defense
from robustdeq.records.defense import DefenseSpec, load_defense
from robustdeq.records.protocol import find_protocol
from robustdeq.records.store import read_entry
from tests.test_submit import GOOD_MODEL

MANIFEST = """name = "t"
[model]
factory = "model.py:make_model"
[train]
epochs = 1
train_subset = 64
"""


class Killed(BaseException):
    """The process dies here (a BaseException: no handler on the way recovers from it)."""


def killed_at(k: int) -> Callable[..., None]:
    """``os.replace`` that kills the run instead of making its ``k``-th rename."""
    calls = [0]
    replace = os.replace

    def fake(*args: Any, **kwargs: Any) -> None:
        calls[0] += 1
        if calls[0] == k:
            raise Killed
        replace(*args, **kwargs)

    return fake


def assert_every_pair_loads(root: Path) -> None:
    models = zoo.list_models(None, root)
    assert [m.name for m in models] == ["sub"]
    for model in models:
        load_trained(zoo.fetch(model))  # zoo.fetch checks the SHA-256 against the entry


def test_a_kill_at_any_rename_leaves_the_zoo_loadable(
    tiny_protocol: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "sub"
    folder.mkdir()
    (folder / "defense.toml").write_text(MANIFEST)
    (folder / "model.py").write_text(GOOD_MODEL)
    old = load_defense(folder)
    new = dataclasses.replace(old, train=dataclasses.replace(old.train, seed=1))  # other weights
    protocol = find_protocol(str(tiny_protocol))
    splits = load_splits(protocol, None, False)

    # One real evaluation; every later run reuses its result (what is written, and when, is the point here).
    real, results = pipeline.evaluate, []

    def evaluate_once(*args: Any, **kwargs: Any) -> Any:
        if not results:
            results.append(real(*args, **kwargs))
        return results[0]

    monkeypatch.setattr(pipeline, "evaluate", evaluate_once)
    shipped = tmp_path / "shipped"
    run_defense(old, protocol, splits, shipped)
    assert_every_pair_loads(shipped)

    def run(defense: DefenseSpec, out: Path, kill: int | None = None) -> bool:
        with monkeypatch.context() as patch:
            if kill is not None:
                patch.setattr(os, "replace", killed_at(kill))
            try:
                run_defense(defense, protocol, splits, out)
            except Killed:
                return False
        return True

    finished = False
    k = 0
    while not finished:
        k += 1
        out = tmp_path / f"kill{k}"
        shutil.copytree(shipped, out)
        finished = run(new, out, kill=k)
        assert_every_pair_loads(out)
        assert run(new, out)  # the same command again completes the new pair
        assert_every_pair_loads(out)
        entry = read_entry(out / "tiny-digits" / "sub.json")
        record = entry["provenance"]["checkpoint"]
        assert record["file"] == "sub.safetensors" and record["sha256"] == sha256(out / "tiny-digits" / record["file"])
        assert record["sha256"] != sha256(shipped / "tiny-digits" / "sub.safetensors")
        assert not list((out / "tiny-digits").glob(".*.safetensors"))  # nothing staged or waiting is left
    assert k > 4  # the kills fell between the renames of the checkpoint and of the entry
