from pathlib import Path

import pytest
import torch

from robustdeq.data import DATASETS, load
from robustdeq.errors import RobustdeqError


def test_digits_split_is_fixed_and_in_unit_range() -> None:
    train, test = load("digits", "train"), load("digits", "test")
    assert (len(train), len(test)) == (1347, 450)
    assert train.x.shape[1:] == (1, 8, 8) and train.x.dtype == torch.float32
    assert float(train.x.min()) == 0.0 and float(train.x.max()) == 1.0
    assert set(test.y.tolist()) == set(range(10))
    again = load("digits", "test")
    assert torch.equal(test.x, again.x) and torch.equal(test.y, again.y)
    # Train and test are disjoint halves of one permutation: no image is in both with its label.
    train_keys = {(tuple(x.flatten().tolist()), int(y)) for x, y in zip(train.x, train.y, strict=True)}
    overlap = sum((tuple(x.flatten().tolist()), int(y)) in train_keys for x, y in zip(test.x, test.y, strict=True))
    assert overlap < 5  # digits has a few exact duplicate images; the split itself is disjoint by index


def test_mnist_reads_from_data_dir(shared_data: Path) -> None:
    test = load("mnist", "test", shared_data)
    assert test.x.shape == (10000, 1, 28, 28)
    assert 0.0 <= float(test.x.min()) and float(test.x.max()) <= 1.0
    assert test.y[:5].tolist() == [7, 2, 1, 0, 4]


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "svhn", "cifar10"])
def test_missing_torchvision_data_is_a_one_line_error(name: str, tmp_path: Path) -> None:
    with pytest.raises(RobustdeqError, match="--download") as info:
        load(name, "test", tmp_path / "nowhere")
    assert "\n" not in str(info.value)


def test_unknown_dataset_lists_known_ones() -> None:
    with pytest.raises(RobustdeqError, match="known: cifar10, digits"):
        load("imagenet", "test")


def test_every_dataset_declares_shape_and_classes() -> None:
    for name in DATASETS:
        info = DATASETS.get(name)
        assert len(info.shape) == 3 and info.num_classes == 10
