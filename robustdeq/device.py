"""The one place that turns ``--device`` into a :class:`torch.device` (no device literal lives elsewhere).

Everything else follows the tensors it is given: models are built on the CPU (so their random
initialisation does not depend on the device) and moved, data batches are moved once, and every
tensor the package creates is created on the device of the tensor it belongs with
(``device=x.device``, ``x.new_*`` or a ``*_like`` factory). Random draws that robustdeq makes
itself come from CPU ``torch.Generator`` objects and are moved afterwards, so training noise,
data splits and test subsets do not depend on the device. pyautoattack (APGD, FAB, Square) also
draws on the CPU and moves its draws; torchattacks' PGD draws its random start on the attacked
tensors' device, so PGD's starts on CUDA differ from those on the CPU.

Determinism on CUDA (:func:`configure`): cuDNN's autotuner is off and cuDNN is asked for
deterministic algorithms, ``torch.use_deterministic_algorithms(True, warn_only=True)`` picks the
deterministic variant of every op that has one (a few have none on CUDA: they warn once and stay
nondeterministic; of those robustdeq's models use one, the backward of the heads' adaptive average
pooling, so gradients can differ in the last bits between two CUDA runs), and
``CUBLAS_WORKSPACE_CONFIG`` is set to ``:4096:8`` when the environment does not set it (older
torch releases required it for deterministic cuBLAS; harmless where it is no longer needed). A
CUDA run therefore repeats itself on the same GPU, torch and CUDA versions up to that op; it does
not reproduce a CPU run bit for bit (other kernels, other rounding, PGD's random starts).
:func:`describe` records all of it in every entry's provenance. CPU runs are left exactly as
torch runs them.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from robustdeq.errors import RobustdeqError

DEVICE_HELP = "Where to compute: auto (CUDA when available, else CPU), cpu, cuda or cuda:N."
CPU = torch.device("cpu")
CUBLAS_WORKSPACE = ":4096:8"


def resolve(spec: str | torch.device | None = "auto") -> torch.device:
    """``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` (or a torch.device) -> a usable torch.device.

    ``auto`` and ``cuda`` mean the process's own GPU under torchrun (``cuda:LOCAL_RANK``), else
    ``cuda:0``. A CUDA device on a machine without CUDA, a GPU index that does not exist, or any
    other string is a :class:`RobustdeqError` (one line). A CUDA device gets the determinism
    settings of :func:`configure` before it is returned.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    text = (spec or "auto").strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return CPU
    head, _, index = text.partition(":")
    if head != "cuda" or (index and not index.isdigit()):
        raise RobustdeqError(f"unknown device {spec!r} (known: auto, cpu, cuda, cuda:N)")
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA support"
        raise RobustdeqError(
            f"device {spec!r}: CUDA is not available here (torch {torch.__version__}, {build}, "
            f"{torch.cuda.device_count()} GPUs); use --device cpu"
        )
    count = torch.cuda.device_count()
    number = int(index) if index else int(os.environ.get("LOCAL_RANK", "0")) % count
    if number >= count:
        raise RobustdeqError(f"device {spec!r}: there are only {count} CUDA devices (cuda:0 .. cuda:{count - 1})")
    device = torch.device("cuda", number)
    configure(device)
    return device


def configure(device: torch.device) -> None:
    """Determinism settings for ``device`` (module docstring); nothing changes for the CPU."""
    if device.type != "cuda":
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.cuda.set_device(device)


def describe(device: torch.device) -> dict[str, Any]:
    """What an entry records about where it was computed (schema: ``provenance.device``)."""
    cuda = device.type == "cuda"
    return {
        "type": device.type,
        "name": torch.cuda.get_device_name(device) if cuda else "cpu",
        "cuda_version": torch.version.cuda if cuda else None,
        "cudnn_version": torch.backends.cudnn.version() if cuda else None,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic) if cuda else None,
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG") if cuda else None,
    }


def on_gpu(description: dict[str, Any]) -> bool:
    """Whether an entry's ``provenance.device`` (:func:`describe`) says it was computed on a GPU."""
    return description["type"] == "cuda"


def of(module: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter or buffer (the CPU for a model with neither)."""
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return CPU
