"""Data sets as tensors in [0, 1] with fixed, documented splits.

The embedded default is scikit-learn's handwritten digits (1,797 images, 8x8, 16 grey
levels), shipped inside scikit-learn, so nothing is downloaded. Its split is fixed: a
permutation drawn by ``numpy.random.RandomState(0)`` (stable across NumPy versions); the
first 1,347 examples train, the last 450 test. Pixel values are divided by 16.

MNIST, Fashion-MNIST, SVHN and CIFAR-10 are read through torchvision from ``data_dir``;
they are downloaded only when ``download`` is true. A missing data set raises a
one-line :class:`RobustdeqError` that says how to get it.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from robustdeq.device import CPU
from robustdeq.errors import RobustdeqError
from robustdeq.registry import Registry

DIGITS_N_TRAIN = 1347
DIGITS_SPLIT_SEED = 0


@dataclass(frozen=True)
class Split:
    """One split of a data set: images (N, C, H, W) float32 in [0, 1], labels (N,) int64."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    shape: tuple[int, int, int]
    num_classes: int
    needs_data_dir: bool
    load: Callable[[str, Path | None, bool], Split]


DATASETS: Registry[DatasetInfo] = Registry("data set")


def _register(info: DatasetInfo) -> None:
    DATASETS.register(info.name)(info)


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise RobustdeqError(f"unknown split {split!r} (known: train, test)")


def _load_digits(split: str, data_dir: Path | None, download: bool) -> Split:
    from sklearn.datasets import load_digits

    _check_split(split)
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32, device=CPU).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.int64, device=CPU)
    order = torch.from_numpy(np.random.RandomState(DIGITS_SPLIT_SEED).permutation(len(y)))
    idx = order[:DIGITS_N_TRAIN] if split == "train" else order[DIGITS_N_TRAIN:]
    return Split(x[idx].contiguous(), y[idx].contiguous())


def _torchvision_loader(name: str, cls_name: str) -> Callable[[str, Path | None, bool], Split]:
    def load(split: str, data_dir: Path | None, download: bool) -> Split:
        import torchvision.datasets as tvd

        _check_split(split)
        if data_dir is None:
            raise RobustdeqError(f"data set {name!r} needs --data-dir (add --download to fetch it there)")
        cls = getattr(tvd, cls_name)
        train = split == "train"
        kwargs = {"split": split} if cls_name == "SVHN" else {"train": train}
        if not download and not Path(data_dir).is_dir():
            raise RobustdeqError(_missing(name, data_dir))
        before = _paths(Path(data_dir)) if download else set()
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # torchvision prints each mirror it tries
                ds = cls(root=str(data_dir), download=download, **kwargs)
        except (RuntimeError, FileNotFoundError, OSError) as exc:
            if download:
                _remove_new(Path(data_dir), before)
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise RobustdeqError(f"could not download {name} to {data_dir}: {reason}") from None
            raise RobustdeqError(_missing(name, data_dir)) from None
        data = ds.data
        data = torch.as_tensor(np.asarray(data), device=CPU)
        if data.ndim == 3:  # MNIST-like: (N, H, W)
            data = data.unsqueeze(1)
        elif data.shape[-1] == 3:  # CIFAR: (N, H, W, C)
            data = data.permute(0, 3, 1, 2)
        labels = ds.labels if cls_name == "SVHN" else ds.targets
        x = data.to(torch.float32).div_(255.0).contiguous()
        y = torch.as_tensor(np.asarray(labels), dtype=torch.int64, device=CPU)
        return Split(x, y)

    return load


def _paths(root: Path) -> set[Path]:
    """Every file and folder under ``root`` (and ``root`` itself), as they are now."""
    return {root, *root.rglob("*")} if root.exists() else set()


def _remove_new(root: Path, before: set[Path]) -> None:
    """Remove what a failed download left under ``root`` that was not there before it: partial
    files and the folders made for them (deepest first). Nothing that was there before is touched."""
    for path in sorted(_paths(root) - before, key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not path.is_symlink():
            if not any(path.iterdir()):
                path.rmdir()
        else:
            path.unlink(missing_ok=True)


def _missing(name: str, data_dir: Path) -> str:
    return (
        f"data set {name!r} not found under {data_dir}; run again with --download, "
        f"or `robustdeq data download {name} --data-dir {data_dir}`"
    )


_register(DatasetInfo("digits", (1, 8, 8), 10, False, _load_digits))
_register(DatasetInfo("mnist", (1, 28, 28), 10, True, _torchvision_loader("mnist", "MNIST")))
_register(DatasetInfo("fashion-mnist", (1, 28, 28), 10, True, _torchvision_loader("fashion-mnist", "FashionMNIST")))
_register(DatasetInfo("svhn", (3, 32, 32), 10, True, _torchvision_loader("svhn", "SVHN")))
_register(DatasetInfo("cifar10", (3, 32, 32), 10, True, _torchvision_loader("cifar10", "CIFAR10")))


def load(name: str, split: str, data_dir: Path | None = None, download: bool = False) -> Split:
    """Load one split of a registered data set as tensors in [0, 1]."""
    return DATASETS.get(name).load(split, data_dir, download)
