"""`robustdeq submit`: a new user's folder goes in; every bad input is a one-line error, nothing written."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from robustdeq.cli import app
from robustdeq.data import load

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "mlp-submission"
runner = CliRunner()

MANIFEST = """name = "t"
[model]
factory = "model.py:make_model"
[train]
epochs = 1
train_subset = 200
"""

GOOD_MODEL = """
from torch import nn
def make_model(in_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_shape[0] * in_shape[1] * in_shape[2], num_classes))
"""


def submit(folder: Path, out: Path, *extra: str) -> tuple[int, str]:
    result = runner.invoke(app, ["submit", str(folder), "--out", str(out), "--quiet", *extra])
    return result.exit_code, result.output


def folder_with(tmp_path: Path, manifest: str = MANIFEST, model: str | None = GOOD_MODEL) -> Path:
    folder = tmp_path / "sub"
    folder.mkdir(exist_ok=True)
    (folder / "defense.toml").write_text(manifest)
    if model is not None:
        (folder / "model.py").write_text(model)
    return folder


def test_the_worked_example_goes_through_and_appears_in_the_leaderboard(tiny_protocol: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mlp-submission"
    shutil.copytree(EXAMPLE, folder)
    manifest = (folder / "defense.toml").read_text().replace("epochs = 10", "epochs = 1")
    (folder / "defense.toml").write_text(manifest)
    code, out = submit(folder, tmp_path / "lb", "--protocol", str(tiny_protocol))
    assert code == 0, out
    entry = json.loads((tmp_path / "lb" / "tiny-digits" / "mlp-submission.json").read_text())
    assert entry["model_family"] == "model.py" and entry["model_settings"] == {"hidden": 64}
    assert "mlp-submission" in (tmp_path / "lb" / "tiny-digits" / "leaderboard.md").read_text()
    code, out = submit(folder, tmp_path / "lb", "--protocol", str(tiny_protocol))
    assert code == 1 and "--force" in out
    code, out = submit(folder, tmp_path / "lb", "--protocol", str(tiny_protocol), "--force")
    assert code == 0, out


def test_a_shipped_checkpoint_is_loaded_not_trained(tiny_protocol: Path, tmp_path: Path) -> None:
    manifest = MANIFEST.replace("epochs = 1\ntrain_subset = 200\n", 'checkpoint = "weights.safetensors"\n')
    folder = folder_with(tmp_path, manifest)
    save_file({"1.weight": torch.zeros(10, 64), "1.bias": torch.arange(10.0)}, str(folder / "weights.safetensors"))
    code, out = submit(folder, tmp_path / "lb", "--protocol", str(tiny_protocol))
    assert code == 0, out
    entry = json.loads((tmp_path / "lb" / "tiny-digits" / "sub.json").read_text())
    assert entry["provenance"]["training"]["recipe"] == "checkpoint"
    # Zero weights and bias 0..9: the loaded model always says 9, whatever it was "trained" on.
    labels = load("digits", "test").y[:24]
    assert entry["clean_accuracy"] == pytest.approx(float((labels == 9).float().mean()))


BAD = [
    ("missing manifest", None, GOOD_MODEL, "missing manifest defense.toml"),
    ("malformed TOML", "name = [", GOOD_MODEL, "malformed TOML"),
    ("unknown family", 'name = "t"\n[model]\nfamily = "resnet-9000"\n[train]\n', None, "unknown model family"),
    ("model.py raises", MANIFEST, "raise RuntimeError('boom')\n", "importing it raised RuntimeError: boom"),
    (
        "factory raises",
        MANIFEST,
        "def make_model(in_shape, num_classes):\n    raise ValueError('no')\n",
        "make_model() raised ValueError: no",
    ),
    (
        "wrong output shape",
        MANIFEST,
        "from torch import nn\ndef make_model(in_shape, num_classes):\n    return nn.Flatten()\n",
        "output shape (4, 64), expected (batch, classes) = (4, 10)",
    ),
    (
        "softmax outputs",
        MANIFEST,
        GOOD_MODEL.replace("num_classes))", "num_classes), nn.Softmax(dim=1))"),
        "look like probabilities",
    ),
    (
        "NaN outputs",
        MANIFEST,
        "import torch\nfrom torch import nn\nclass M(nn.Module):\n    def forward(self, x):\n"
        "        return torch.full((x.shape[0], 10), float('nan'))\ndef make_model(in_shape, num_classes):\n"
        "    return M()\n",
        "not finite",
    ),
    ("unknown protocol", MANIFEST + 'protocols = ["nope"]\n', GOOD_MODEL, "unknown protocol 'nope'"),
]


@pytest.mark.parametrize("label, manifest, model, message", BAD, ids=[b[0] for b in BAD])
def test_bad_submissions_fail_with_one_line_and_write_nothing(
    label: str, manifest: str | None, model: str | None, message: str, tmp_path: Path
) -> None:
    folder = tmp_path / "sub"
    folder.mkdir()
    if manifest is not None:
        # a top-level key must come before the first table
        if "protocols" in manifest:
            manifest = 'protocols = ["nope"]\n' + manifest.replace('protocols = ["nope"]\n', "")
        (folder / "defense.toml").write_text(manifest)
    if model is not None:
        (folder / "model.py").write_text(model)
    code, out = submit(folder, tmp_path / "lb")
    assert code == 1
    assert message in out.replace("\n", " ")
    assert out.strip().startswith("error:") and len(out.strip().splitlines()) <= 2
    assert not (tmp_path / "lb").exists()


def test_checkpoint_with_wrong_shapes_is_refused_before_training(tmp_path: Path) -> None:
    manifest = MANIFEST.replace("epochs = 1\ntrain_subset = 200\n", 'checkpoint = "weights.safetensors"\n')
    folder = folder_with(tmp_path, manifest)
    save_file({"1.weight": torch.zeros(10, 32), "1.bias": torch.zeros(10)}, str(folder / "weights.safetensors"))
    for target in (folder, folder / "defense.toml"):  # the folder or its manifest
        code, out = submit(target, tmp_path / "lb")
        assert code == 1 and "has shape (10, 32), the model expects (10, 64)" in out.replace("\n", " ")
    assert not (tmp_path / "lb").exists()


def test_a_quick_try_is_flagged_reduced_and_replaces_no_full_entry(tiny_protocol: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mlp-submission"
    shutil.copytree(EXAMPLE, folder)
    manifest = (folder / "defense.toml").read_text().replace("epochs = 10", "epochs = 1")  # a cheap full run
    (folder / "defense.toml").write_text(manifest)
    lb, protocol = tmp_path / "lb", ("--protocol", str(tiny_protocol))
    path = lb / "tiny-digits" / "mlp-submission.json"
    quick = ("--epochs", "0", "--train-subset", "100", "--n-examples", "8")

    code, out = submit(folder, lb, *protocol, *quick)
    assert code == 0, out
    entry = json.loads(path.read_text())
    assert "reduced_budget" in entry["flags"] and entry["provenance"]["reduced_budget"]
    assert entry["n_examples"] == 8
    assert (entry["provenance"]["training"]["epochs"], entry["provenance"]["training"]["train_subset"]) == (0, 100)

    code, out = submit(folder, lb, *protocol, "--force")  # the full run replaces the quick one
    assert code == 0, out
    full = path.read_bytes()
    assert "reduced_budget" not in json.loads(full)["flags"]

    code, out = submit(folder, lb, *protocol, *quick)
    assert code == 1 and "is a full entry and this run is not" in out.replace("\n", " ")
    assert path.read_bytes() == full


def test_an_interrupted_submit_resumes_training_and_attacks(
    tiny_protocol: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from robustdeq.evaluation.state import EvalState
    from robustdeq.training.recipes import Standard

    folder = folder_with(tmp_path, MANIFEST.replace("epochs = 1", "epochs = 3"))  # 200 examples: 4 batches an epoch
    args = ("--protocol", str(tiny_protocol))
    code, out = submit(folder, tmp_path / "a", *args)  # the uninterrupted run
    assert code == 0, out

    batches, interrupt_at = [0], [5]  # Ctrl-C in the first batch of epoch 2
    loss = Standard.loss

    def counted(self: Standard, *a: object, **k: object) -> object:
        batches[0] += 1
        if batches[0] == interrupt_at[0]:
            raise KeyboardInterrupt
        return loss(self, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(Standard, "loss", counted)
    code, out = submit(folder, tmp_path / "b", *args)
    assert code == 130 and "running the same command again resumes" in out.replace("\n", " ")

    batches[0], interrupt_at[0] = 0, 0
    saves, put = [0], EvalState.put

    def put_then_stop(self: EvalState, name: str, record: dict) -> None:  # type: ignore[type-arg]
        put(self, name, record)
        saves[0] += 1
        if saves[0] == 2:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(EvalState, "put", put_then_stop)  # Ctrl-C once two attack batches are saved
        code, out = submit(folder, tmp_path / "b", *args)
    assert code == 130 and "running the same command again resumes" in out.replace("\n", " ")
    assert batches[0] == 2 * 4  # epochs 2 and 3 only: epoch 1 was done

    batches[0] = 0
    code, out = submit(folder, tmp_path / "b", *args)
    assert code == 0, out
    assert batches[0] == 0 and "resumed training of sub after epoch 3 of 3" in out.replace("\n", " ")
    assert "resumed 2 attack batches" in out.replace("\n", " ")
    a, b = (tmp_path / run / "tiny-digits" for run in ("a", "b"))
    entries = [json.loads((f / "sub.json").read_text()) for f in (a, b)]
    for entry in entries:
        entry.pop("provenance")
    assert entries[0] == entries[1]
    weights = [load_file(f / "sub.safetensors") for f in (a, b)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # the weights of an uninterrupted run
    assert [p.name for p in b.iterdir() if p.name.startswith(".")] == []  # no state or waiting model left
