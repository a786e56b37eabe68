"""The Python API, the zoo, and torchdeq-built models evaluated honestly."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import robustdeq
from robustdeq import zoo
from robustdeq.checkpoint import read_meta, save_checkpoint, sha256
from robustdeq.cli import app
from robustdeq.deq import equilibria
from robustdeq.errors import RobustdeqError
from robustdeq.pipeline import load_trained

REPO = Path(__file__).resolve().parent.parent
TORCHDEQ_EXAMPLE = REPO / "examples" / "torchdeq-submission"
TINY = ["--epochs", "1", "--train-subset", "200", "--quiet"]
runner = CliRunner()


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_python_evaluate_gives_the_cli_numbers(tiny_protocol: Path, tmp_path: Path) -> None:
    code, out = run("train", "deq-pgd-at", "--protocol", str(tiny_protocol), "--out", str(tmp_path / "runs"), *TINY)
    assert code == 0, out
    checkpoint = tmp_path / "runs" / "tiny-digits" / "deq-pgd-at"
    code, out = run("evaluate", str(checkpoint), "--protocol", str(tiny_protocol), "--out", str(tmp_path), "--quiet")
    assert code == 0, out
    cli = json.loads((tmp_path / "tiny-digits" / "deq-pgd-at.json").read_text())
    _, trained = load_trained(checkpoint)
    entry = robustdeq.evaluate(trained.model, str(tiny_protocol), progress=False, name="deq-pgd-at")
    assert isinstance(entry, robustdeq.Entry)
    assert entry.clean_accuracy == cli["clean_accuracy"] and entry.robust_accuracy == cli["robust_accuracy"]
    assert entry.attacks == cli["attacks"] and entry.per_example == cli["per_example"]
    assert entry.solver is not None and entry.solver["nonconverged_clean"] == cli["solver"]["nonconverged_clean"]
    # A bare model has no training provenance and says so; the entry is a valid leaderboard entry.
    data = json.loads(entry.to_json())
    assert data["provenance"]["training"] is None and data["provenance"]["checkpoint"] is None
    assert data["provenance"]["command"].startswith("robustdeq.evaluate(")
    assert entry.save(tmp_path / "api").is_file()


def test_python_evaluate_refuses_bad_models_in_one_line() -> None:
    class Probabilities(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(x.flatten(1)[:, :10], 1)

    class WrongShape(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)

    with pytest.raises(RobustdeqError, match="probabilities"):
        robustdeq.evaluate(Probabilities(), progress=False)
    with pytest.raises(RobustdeqError, match="output shape"):
        robustdeq.evaluate(WrongShape(), progress=False)
    with pytest.raises(RobustdeqError, match="plain lowercase name"):
        robustdeq.evaluate(WrongShape(), name="My Model", progress=False)


def bench_into(tmp_path: Path, protocol: Path, defense: str = "cnn-standard") -> Path:
    code, out = run("bench", "--protocol", str(protocol), "--defenses", defense, "--out", str(tmp_path), *TINY)
    assert code == 0, out
    return tmp_path


def test_bench_writes_each_checkpoint_beside_its_entry_and_the_zoo_reproduces_it(
    tiny_protocol: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = bench_into(tmp_path / "lb", tiny_protocol)
    folder = root / "tiny-digits"
    entry = json.loads((folder / "cnn-standard.json").read_text())
    checkpoint = entry["provenance"]["checkpoint"]
    assert checkpoint["file"] == "cnn-standard.safetensors" and checkpoint["url"] is None
    assert checkpoint["sha256"] == sha256(folder / "cnn-standard.safetensors")
    meta = read_meta(folder / "cnn-standard.safetensors")
    assert meta["defense"] == "cnn-standard" and 'family = "explicit"' in meta["manifest"]
    index = json.loads((root / "zoo.json").read_text())
    assert [m["name"] for m in index["models"]] == ["cnn-standard"]
    assert index["models"][0]["sha256"] == checkpoint["sha256"] and index["models"][0]["entry"].endswith(".json")

    monkeypatch.setattr(zoo, "LEADERBOARDS_DIR", root)
    assert [m.name for m in robustdeq.list_models()] == ["cnn-standard"]
    model = robustdeq.load_model("cnn-standard")
    assert not model.training
    code, out = run("zoo", "--json")
    assert code == 0, out
    (listed,) = json.loads(out)
    assert listed["name"] == "cnn-standard" and listed["sha256"] == checkpoint["sha256"]
    assert run("zoo")[0] == 0
    code, out = run("evaluate", "zoo:cnn-standard", "--protocol", str(tiny_protocol), "--out", str(tmp_path / "re"))
    assert code == 0, out
    assert "reproduces" in out and "exactly" in out, out
    again = json.loads((tmp_path / "re" / "tiny-digits" / "cnn-standard.json").read_text())
    assert again["per_example"] == entry["per_example"] and again["attacks"] == entry["attacks"]
    assert (tmp_path / "re" / "tiny-digits" / "cnn-standard.safetensors").read_bytes() == (
        folder / "cnn-standard.safetensors"
    ).read_bytes()


def test_zoo_errors_name_what_is_known_and_refuse_a_bad_checksum(
    tiny_protocol: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = bench_into(tmp_path / "lb", tiny_protocol)
    monkeypatch.setattr(zoo, "LEADERBOARDS_DIR", root)
    with pytest.raises(RobustdeqError, match=r"unknown zoo model 'resnet' \(known: cnn-standard\)"):
        robustdeq.load_model("resnet")
    code, out = run("evaluate", "zoo:resnet", "--out", str(tmp_path / "x"))
    assert code == 1 and "known: cnn-standard" in out and len(out.strip().splitlines()) == 1
    weights = root / "tiny-digits" / "cnn-standard.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"abcd")
    with pytest.raises(RobustdeqError, match="checksum mismatch"):
        robustdeq.load_model("cnn-standard")


def test_a_checkpoint_too_large_for_the_repository_is_fetched_from_its_url_and_verified(
    tiny_protocol: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = bench_into(tmp_path / "lb", tiny_protocol)
    folder = root / "tiny-digits"
    hosted = tmp_path / "hosted" / "cnn-standard.safetensors"
    hosted.parent.mkdir()
    shutil.move(folder / "cnn-standard.safetensors", hosted)
    entry_path = folder / "cnn-standard.json"
    entry = json.loads(entry_path.read_text())
    entry["provenance"]["checkpoint"] = {"file": None, "url": hosted.as_uri(), "sha256": sha256(hosted)}
    entry_path.write_text(json.dumps(entry))
    monkeypatch.setattr(zoo, "LEADERBOARDS_DIR", root)
    monkeypatch.setenv("ROBUSTDEQ_CACHE", str(tmp_path / "cache"))
    model = robustdeq.load_model("tiny-digits/cnn-standard")
    cached = list((tmp_path / "cache" / "tiny-digits").glob("*.safetensors"))
    assert len(cached) == 1 and sha256(cached[0]) == entry["provenance"]["checkpoint"]["sha256"]
    assert model is not None
    # A hosted file that does not match its entry is refused, and not kept in the cache.
    cached[0].unlink()
    hosted.write_bytes(hosted.read_bytes() + b"\0")
    with pytest.raises(RobustdeqError, match="checksum mismatch"):
        robustdeq.load_model("cnn-standard")
    assert not list((tmp_path / "cache" / "tiny-digits").glob("*.safetensors"))


def test_a_checkpoint_carries_its_manifest_and_says_when_the_folder_changed(
    tiny_protocol: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "mine"
    shutil.copytree(REPO / "defenses" / "deq-standard", folder)
    code, out = run("train", str(folder), "--protocol", str(tiny_protocol), "--out", str(tmp_path / "runs"), *TINY)
    assert code == 0, out
    manifest = (folder / "defense.toml").read_text()
    (folder / "defense.toml").write_text(manifest.replace("channels = 16", "channels = 8"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    checkpoint = tmp_path / "runs" / "tiny-digits" / "mine"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(elsewhere)
        code, out = run("evaluate", str(checkpoint), "--protocol", str(tiny_protocol), "--out", "lb", "--quiet")
    assert code == 0, out
    assert "has changed since this checkpoint was trained" in out
    entry = json.loads((elsewhere / "lb" / "tiny-digits" / "mine.json").read_text())
    assert entry["model_settings"]["channels"] == 16


def test_submit_inside_the_folder_takes_the_folders_name_and_refuses_odd_ids(
    tiny_protocol: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "my-defense"
    shutil.copytree(REPO / "examples" / "mlp-submission", folder)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        code, out = run("submit", ".", "--protocol", str(tiny_protocol), "--out", str(tmp_path / "lb"), *TINY[-1:])
    assert code == 0, out
    assert (tmp_path / "lb" / "tiny-digits" / "my-defense.json").is_file()
    assert not (tmp_path / "lb" / "tiny-digits" / ".json").exists()
    odd = tmp_path / "My Defense"
    shutil.copytree(REPO / "examples" / "mlp-submission", odd)
    code, out = run("submit", str(odd), "--protocol", str(tiny_protocol), "--out", str(tmp_path / "lb2"))
    assert code == 1 and "plain lowercase name" in out and not (tmp_path / "lb2").exists()


def torchdeq_example(**settings: Any) -> nn.Module:
    spec = importlib.util.spec_from_file_location("torchdeq_example", TORCHDEQ_EXAMPLE / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model: nn.Module = module.make_model(in_shape=(1, 8, 8), num_classes=10, **settings)
    return model


def test_adapted_torchdeq_model_has_exact_input_gradients_in_eval_mode() -> None:
    torch.manual_seed(0)
    model = torchdeq_example(width=4).double().eval()
    model.deq.f_tol = 1e-12  # solve to machine precision, so finite differences see the fixed point
    model.deq.f_max_iter = model.deq.eval_f_max_iter = 200
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        before = model(x)
    probe = x.clone().requires_grad_(True)
    assert torch.autograd.grad(model(probe).sum(), probe, allow_unused=True)[0] is None  # torchdeq: blind
    adapted = robustdeq.from_torchdeq(model)
    (layer,) = equilibria(adapted)
    layer.spec = layer.spec.__class__(**{**layer.spec.to_dict(), "b_tol": 1e-12, "b_max_iter": 200})
    with torch.no_grad():
        assert torch.equal(adapted(x), before)  # the user's fixed point, untouched
    weights = torch.randn(2, 10, dtype=torch.float64)
    probe = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad((adapted(probe) * weights).sum(), probe)
    direction = torch.randn_like(x)
    step = 1e-5
    with torch.no_grad():
        plus = (adapted(x + step * direction) * weights).sum()
        minus = (adapted(x - step * direction) * weights).sum()
    assert float((grad * direction).sum()) == pytest.approx(float((plus - minus) / (2 * step)), rel=1e-6)
    assert adapted.state_dict().keys() == model.state_dict().keys()


def test_torchdeq_model_without_the_adapter_is_flagged_and_with_it_is_attacked_honestly(
    tiny_protocol: Path,
) -> None:
    torch.manual_seed(0)
    blind = robustdeq.evaluate(torchdeq_example(), str(tiny_protocol), progress=False, adapt_torchdeq=False)
    assert "zero_gradients" in blind.flags
    torch.manual_seed(0)
    honest = robustdeq.evaluate(torchdeq_example(), str(tiny_protocol), progress=False)
    assert "zero_gradients" not in honest.flags and honest.solver is not None
    assert {"pgd", "pgd@unroll"} <= set(honest.attacks)


def test_the_torchdeq_example_submits_with_true_gradients(tiny_protocol: Path, tmp_path: Path) -> None:
    folder = tmp_path / "torchdeq-submission"
    shutil.copytree(TORCHDEQ_EXAMPLE, folder)
    code, out = run("submit", str(folder), "--protocol", str(tiny_protocol), "--out", str(tmp_path / "lb"), "--quiet")
    assert code == 0, out
    entry = json.loads((tmp_path / "lb" / "tiny-digits" / "torchdeq-submission.json").read_text())
    assert "zero_gradients" not in entry["flags"] and entry["solver"] is not None
    assert entry["attacks"]["pgd"] <= entry["attacks"]["autoattack"] + 0.1
    # A checkpoint of a submitted model carries its model.py too, and stands on its own.
    weights = tmp_path / "lb" / "tiny-digits" / "torchdeq-submission.safetensors"
    assert "get_deq" in read_meta(weights)["files"]["model.py"]
    shutil.rmtree(folder)
    _, trained = load_trained(weights)
    assert trained.model(torch.rand(2, 1, 8, 8)).shape == (2, 10)


def test_save_checkpoint_files_are_readable_by_others(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_checkpoint(nn.Linear(2, 2), path, {"x": 1})
    assert path.stat().st_mode & 0o044 == 0o044
