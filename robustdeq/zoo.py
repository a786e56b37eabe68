"""The model zoo: the trained checkpoint of every leaderboard entry, found through the entry itself.

Every entry that ``robustdeq bench``, ``submit``, ``sweep`` or ``evaluate`` writes has its
checkpoint beside it (``leaderboards/<protocol>/<defense>.safetensors``) and names it in
``provenance.checkpoint``: ``file`` (beside the entry), ``url`` (where a checkpoint too large for
the repository lives; fetched on request into the cache folder) and ``sha256`` (checked before
every use). The entries are the index; ``robustdeq leaderboard`` also writes them out as
``leaderboards/zoo.json`` (name, protocol, family, recipe, accuracies, sha256, where the file is,
the commit and command that produced it, the entry). Checkpoints carry the manifest they were
trained from (:mod:`robustdeq.checkpoint`), so a zoo model is rebuilt without its defense folder.

The cache folder is ``$ROBUSTDEQ_CACHE``, else ``~/.cache/robustdeq``; a fetched checkpoint is
kept there under its protocol, name and hash, and verified again on every use.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustdeq.checkpoint import sha256
from robustdeq.errors import RobustdeqError
from robustdeq.records.paths import repo_folder
from robustdeq.records.store import atomic_write_bytes, atomic_write_text, protocol_folders, read_entries

LEADERBOARDS_DIR = repo_folder("leaderboards")
INDEX = "zoo.json"


def cache_dir() -> Path:
    return Path(os.environ.get("ROBUSTDEQ_CACHE") or Path.home() / ".cache" / "robustdeq")


@dataclass(frozen=True)
class ZooModel:
    """One trained model of the zoo, as its entry describes it."""

    name: str
    protocol: str
    family: str
    recipe: str
    clean_accuracy: float
    robust_accuracy: float
    sha256: str
    file: Path | None  # the checkpoint beside the entry (None when only a URL is known)
    url: str | None
    entry: Path
    commit: str | None
    command: str | None

    def to_dict(self, root: Path) -> dict[str, Any]:
        def rel(path: Path | None) -> str | None:
            return None if path is None else str(path.relative_to(root) if path.is_relative_to(root) else path)

        return {
            "name": self.name,
            "protocol": self.protocol,
            "family": self.family,
            "recipe": self.recipe,
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": self.robust_accuracy,
            "sha256": self.sha256,
            "file": rel(self.file),
            "url": self.url,
            "entry": rel(self.entry),
            "commit": self.commit,
            "command": self.command,
        }


def list_models(protocol: str | None = None, root: Path | None = None) -> list[ZooModel]:
    """Every entry under ``root`` (one folder per protocol; default the repository's leaderboards)
    that names a checkpoint."""
    root = root or LEADERBOARDS_DIR
    models = []
    for folder in protocol_folders(root) if root.is_dir() else []:
        if protocol is not None and folder.name != protocol:
            continue
        for entry in read_entries(folder):
            checkpoint = entry["provenance"].get("checkpoint")
            if not checkpoint:
                continue
            training = entry["provenance"]["training"]
            models.append(
                ZooModel(
                    name=entry["defense"],
                    protocol=entry["protocol"],
                    family=entry["model_family"],
                    recipe=training["recipe"] if training else "unknown",
                    clean_accuracy=entry["clean_accuracy"],
                    robust_accuracy=entry["robust_accuracy"],
                    sha256=checkpoint["sha256"],
                    file=folder / checkpoint["file"] if checkpoint["file"] else None,
                    url=checkpoint["url"],
                    entry=folder / f"{entry['defense']}.json",
                    commit=entry["provenance"]["git_commit"],
                    command=entry["provenance"].get("command"),
                )
            )
    return models


def find_model(name: str, root: Path | None = None, prefer: str | None = None) -> ZooModel:
    """``NAME`` or ``PROTOCOL/NAME``; a plain ``NAME`` under several protocols is the one under
    ``prefer`` when it has one (the protocol a command evaluates under); an unknown or ambiguous
    name is a one-line error."""
    protocol, _, model = name.rpartition("/")
    models = list_models(protocol or None, root)
    found = [m for m in models if m.name == model]
    if len(found) > 1 and prefer is not None:
        found = [m for m in found if m.protocol == prefer] or found
    if not found:
        known = ", ".join(sorted({m.name if not protocol else f"{m.protocol}/{m.name}" for m in models})) or "none"
        raise RobustdeqError(f"unknown zoo model {name!r} (known: {known})")
    if len(found) > 1:
        options = ", ".join(f"{m.protocol}/{m.name}" for m in found)
        raise RobustdeqError(f"zoo model {name!r} exists under several protocols; name one of {options}")
    return found[0]


def fetch(model: ZooModel) -> Path:
    """A local, verified copy of ``model``'s checkpoint: the file beside its entry, else the cached
    download of its URL (fetched now if missing). A SHA-256 mismatch is an error."""
    if model.file is not None and model.file.is_file():
        _verify(model.file, model)
        return model.file
    if model.url is None:
        raise RobustdeqError(f"zoo model {model.name}: its checkpoint {model.file} is missing and it has no URL")
    cached = cache_dir() / model.protocol / f"{model.name}-{model.sha256[:16]}.safetensors"
    if not cached.is_file():
        try:
            with urllib.request.urlopen(model.url, timeout=60) as response:  # noqa: S310 (the entry's URL)
                data = response.read()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise RobustdeqError(f"zoo model {model.name}: could not fetch {model.url}: {exc}") from None
        atomic_write_bytes(cached, data)
    try:
        _verify(cached, model)
    except RobustdeqError:
        cached.unlink(missing_ok=True)  # never keep a file that failed its check
        raise
    return cached


def _verify(path: Path, model: ZooModel) -> None:
    digest = sha256(path)
    if digest != model.sha256:
        raise RobustdeqError(
            f"zoo model {model.name}: checksum mismatch for {path} (sha256 {digest[:16]}..., "
            f"its entry says {model.sha256[:16]}...)"
        )


def write_index(root: Path) -> Path | None:
    """Write ``<root>/zoo.json`` from the entries under ``root`` (nothing when none has a checkpoint)."""
    models = list_models(None, root)
    if not models:
        return None
    path = root / INDEX
    rows = [m.to_dict(root) for m in sorted(models, key=lambda m: (m.protocol, m.name))]
    atomic_write_text(path, json.dumps({"models": rows}, indent=1) + "\n")
    return path
