"""``bench --train-only``: train now, evaluate later (the MNIST tier trains before its evaluation code is
final): the first run writes no entry and keeps the finished training; the same command without the
flag evaluates that model without training it again."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from typer.testing import CliRunner

from robustdeq.cli import app
from robustdeq.pipeline import training_state_file
from robustdeq.training.resume import TrainingState

runner = CliRunner()


def bench(out: Path, *extra: str) -> str:
    args = ["bench", "--defenses", "cnn-standard", "--epochs", "1", "--train-subset", "64", "--n-examples", "4"]
    result = runner.invoke(app, [*args, "--jobs", "1", "--out", str(out), "--force", *extra])
    assert result.exit_code == 0, result.output
    return result.output


def test_train_only_keeps_the_training_and_the_next_run_evaluates_without_retraining(tmp_path: Path) -> None:
    said = bench(tmp_path, "--train-only")
    state = training_state_file(tmp_path, "digits-linf", "cnn-standard")
    assert state.is_file() and "without --train-only evaluates them" in said
    assert not (tmp_path / "digits-linf" / "cnn-standard.json").exists()

    said = bench(tmp_path)
    assert "resumed training of cnn-standard after epoch 1 of 1" in said
    assert (tmp_path / "digits-linf" / "cnn-standard.json").is_file() and not state.exists()


def test_a_run_that_cannot_resume_the_saved_training_says_so_before_training(tmp_path: Path) -> None:
    bench(tmp_path, "--train-only")
    said = bench(tmp_path, "--train-only", "--epochs", "2").replace("\n", " ")
    assert "holds 1 finished epochs of another training" in said
    assert "its defense, training settings or data differ" in said


def test_a_training_of_one_process_is_named_when_torchrun_would_start_it_over(tmp_path: Path) -> None:
    path = tmp_path / "state.safetensors"
    model = nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters())
    TrainingState(path, "one", {"device": "cpu", "processes": 1}).save(3, model, optimizer, {}, 0.5)
    assert TrainingState(path, "one", {"device": "cpu", "processes": 1}).foreign() is None
    said = TrainingState(path, "two", {"device": "cpu", "processes": 2}).foreign()
    assert said is not None and "holds 3 finished epochs" in said and "processes 1 there, 2 in this run" in said
    assert TrainingState(tmp_path / "none.safetensors", "two").foreign() is None
