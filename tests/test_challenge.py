"""``robustdeq challenge``: an outside attack's adversarial examples verified as the protocol's own and
recorded in the entry; tables show the best known robust accuracy, marked; bad files change nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from robustdeq.cli import app
from robustdeq.data import load
from robustdeq.leaderboard.headline import BEST_KNOWN
from robustdeq.pipeline import load_trained
from robustdeq.records.entry import best_known, validate_entry
from robustdeq.records.outcomes import NOT_BROKEN, bits, decode_indices, unbits
from robustdeq.threat import ThreatModel, pgd

REPO = Path(__file__).resolve().parent.parent
NAME = "cnn-standard"  # no example survives PGD at eps 0.2: any clean-correct example can be broken


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    """A leaderboard with the committed cnn-standard checkpoint and an entry whose attacks "missed" one
    example: the entry counts as robust a clean-correct example its attacks in fact broke (as if the
    protocol had been weaker), which an outside attack should then break."""
    folder = tmp_path / "lb" / "digits-linf"
    folder.mkdir(parents=True)
    source = REPO / "leaderboards" / "digits-linf"
    shutil.copy(source / f"{NAME}.safetensors", folder)
    entry = json.loads((source / f"{NAME}.json").read_text())
    outcomes = entry["per_example"]
    clean = unbits(outcomes["clean_correct"])
    missed = clean.index(True)
    robust = unbits(outcomes["robust"])
    robust[missed] = True
    broken_by = list(outcomes["broken_by"])
    broken_by[missed] = NOT_BROKEN
    outcomes.update(robust=bits(robust), broken_by="".join(broken_by))
    n = entry["n_examples"]
    entry["robust_accuracy"] = sum(robust) / n
    entry["attacks"] = {k: max(v, entry["robust_accuracy"]) for k, v in entry["attacks"].items()}
    validate_entry(entry)
    (folder / f"{NAME}.json").write_text(json.dumps(entry, indent=2) + "\n")
    return tmp_path / "lb"


def entry_of(root: Path) -> dict:
    return json.loads((root / "digits-linf" / f"{NAME}.json").read_text())


def missed_index(root: Path) -> int:
    entry = entry_of(root)
    indices = decode_indices(entry["per_example"]["indices"])
    return next(i for i, r in zip(indices, unbits(entry["per_example"]["robust"]), strict=True) if r)


def attacked(root: Path, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    _, trained = load_trained(root / "digits-linf" / f"{NAME}.safetensors")
    test = load("digits", "test")
    x, y = test.x[indices], test.y[indices]
    torch.manual_seed(0)
    return torch.tensor(indices), pgd(trained.model.eval(), x, y, ThreatModel("Linf", 0.2), 40, 0.02, loss="margin")


def test_verified_breaks_are_recorded_and_shown_as_best_known(root: Path, tmp_path: Path) -> None:
    missed = missed_index(root)
    entry = entry_of(root)
    evaluated = decode_indices(entry["per_example"]["indices"])
    other = next(i for i in evaluated if i != missed)
    indices, x_adv = attacked(root, [missed, other])
    clean = load("digits", "test").x[[other]]
    x_adv[1] = clean[0]  # the clean input itself: submitted, but not a break if the model gets it right
    file = tmp_path / "outside.safetensors"
    save_file({"indices": indices, "x_adv": x_adv.contiguous()}, str(file))

    code, out = run("challenge", NAME, str(file), str(root), "--by", "a reviewer")  # ROOT, as in leaderboard ROOT
    assert code == 0, out
    after = entry_of(root)
    (record,) = after["challenges"]
    assert record["by"] == "a reviewer" and record["submitted"] == 2 and record["new"] == [missed]
    assert missed in record["broken"]
    assert after["robust_accuracy"] == entry["robust_accuracy"]  # the entry keeps the protocol's number
    shown = best_known(after)
    assert shown["best_known"] and shown["robust_accuracy"] == entry["robust_accuracy"] - 1 / entry["n_examples"]
    validate_entry(after)
    table = (root / "digits-linf" / "leaderboard.md").read_text()
    assert f"0.0 [0.0, 3.7] {BEST_KNOWN}" in table and "best known" in table
    assert "best known 0.0%" in " ".join(out.split())

    # the same file again is refused, and changes nothing
    before = (root / "digits-linf" / f"{NAME}.json").read_bytes()
    code, out = run("challenge", NAME, str(file), "--by", "someone", "--root", str(root))
    assert code == 1 and "already recorded" in out
    assert (root / "digits-linf" / f"{NAME}.json").read_bytes() == before


def bad_files(root: Path) -> dict[str, tuple[dict[str, torch.Tensor], str]]:
    missed = missed_index(root)
    indices, x_adv = attacked(root, [missed])
    x = load("digits", "test").x[[missed]]
    nan = x_adv.clone()
    nan[0, 0, 0, 0] = float("nan")
    return {
        "keys": ({"idx": indices, "x_adv": x_adv}, "expected exactly the tensors 'indices' and 'x_adv'"),
        "dtype": ({"indices": indices.int(), "x_adv": x_adv}, "'indices' must be a non-empty 1-D int64 tensor"),
        "twice": ({"indices": indices.repeat(2), "x_adv": x_adv.repeat(2, 1, 1, 1)}, "names an example twice"),
        "subset": ({"indices": torch.tensor([449]), "x_adv": x_adv}, "index 449 is not one of the 100 examples"),
        "shape": ({"indices": indices, "x_adv": x_adv[:, :, :4]}, "must be a float tensor of shape (1, 1, 8, 8)"),
        "eps": ({"indices": indices, "x_adv": (x + 0.3).clamp(0, 1)}, "is not a valid adversarial example"),
        "box": ({"indices": indices, "x_adv": x_adv + 2.0}, "is not a valid adversarial example"),
        "nan": ({"indices": indices, "x_adv": nan}, "is not a valid adversarial example"),
    }  # fmt: skip


def test_bad_files_are_one_line_errors_and_change_nothing(root: Path, tmp_path: Path) -> None:
    before = {p: p.read_bytes() for p in (root / "digits-linf").iterdir()}
    for name, (tensors, message) in bad_files(root).items():
        file = tmp_path / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(file))
        code, out = run("challenge", NAME, str(file), "--by", "x", "--root", str(root))
        assert code == 1 and out.startswith("error: ") and len(out.strip().splitlines()) == 1, (name, out)
        assert message in " ".join(out.split()), (name, out)
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    code, out = run("challenge", NAME, str(tmp_path / "junk.safetensors"), "--by", "x", "--root", str(root))
    assert code == 1 and "not a readable safetensors file" in out
    assert {p: p.read_bytes() for p in (root / "digits-linf").iterdir()} == before
