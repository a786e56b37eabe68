"""A zoo model's plain name under several protocols (deq-pgd-at on the digits and on MNIST): an error
that names the options, unless the command says which protocol it evaluates under."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from robustdeq.errors import RobustdeqError
from robustdeq.records.paths import LEADERBOARDS_DIR
from robustdeq.zoo import find_model


def zoo_with_two(tmp_path: Path) -> Path:
    for protocol in ("digits-linf", "digits-l2"):
        folder = tmp_path / protocol
        folder.mkdir()
        entry = json.loads((LEADERBOARDS_DIR / "digits-linf" / "deq-pgd-at.json").read_text())
        entry["protocol"] = protocol
        (folder / "deq-pgd-at.json").write_text(json.dumps(entry))
        shutil.copy(LEADERBOARDS_DIR / "digits-linf" / "deq-pgd-at.safetensors", folder)
    return tmp_path


def test_a_name_under_two_protocols_is_ambiguous_without_a_preference(tmp_path: Path) -> None:
    root = zoo_with_two(tmp_path)
    with pytest.raises(RobustdeqError, match="several protocols.*digits-l2/deq-pgd-at"):
        find_model("deq-pgd-at", root)


def test_the_protocol_a_command_evaluates_under_picks_one(tmp_path: Path) -> None:
    root = zoo_with_two(tmp_path)
    assert find_model("deq-pgd-at", root, prefer="digits-l2").protocol == "digits-l2"
    assert find_model("digits-linf/deq-pgd-at", root, prefer="digits-l2").protocol == "digits-linf"
    with pytest.raises(RobustdeqError, match="several protocols"):
        find_model("deq-pgd-at", root, prefer="mnist-linf-0.3")  # a preference that matches neither
