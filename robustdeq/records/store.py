"""One JSON file per entry under ``<root>/<protocol>/<defense>.json``, written atomically, and the
checkpoint it names beside it (``<defense>.safetensors``), written as a pair with it; the protocol's
training-seed spread beside them (``seeds.json``, :mod:`robustdeq.records.seeds`)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from robustdeq.errors import RobustdeqError
from robustdeq.records.entry import entry_json, validate_entry
from robustdeq.records.seeds import SEEDS, seeds_json, validate_seeds


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``; the file is
    readable by others as the umask allows (0644 under the usual 022), like any file ``open`` makes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def copy_atomically(source: Path, target: Path) -> None:
    atomic_write_bytes(target, source.read_bytes())


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    current = os.umask(0)
    os.umask(current)
    return current


def entry_path(root: Path, protocol: str, defense: str) -> Path:
    return root / protocol / f"{defense}.json"


def write_entry(root: Path, entry: dict[str, Any]) -> Path:
    """Validate and write ``entry``; returns its path."""
    text = entry_json(entry, f"entry {entry.get('defense')!r}")
    path = entry_path(root, entry["protocol"], entry["defense"])
    atomic_write_text(path, text)
    return path


def checkpoint_path(root: Path, protocol: str, defense: str) -> Path:
    """Where an entry's checkpoint lies: beside it, ``<root>/<protocol>/<defense>.safetensors``."""
    return root / protocol / f"{defense}.safetensors"


def write_entry_and_checkpoint(root: Path, entry: dict[str, Any], checkpoint: Path) -> Path:
    """Validate and write ``entry`` and, beside it, a copy of the file ``checkpoint`` that its
    ``provenance.checkpoint`` names (``<defense>.safetensors``, with its SHA-256); returns the entry's path.

    A process killed at any instant leaves an entry on disk that names a checkpoint on disk with the
    SHA-256 it records (the old pair, the new one, or the new entry naming a staged copy). A rename
    replaces one file at a time, so the new checkpoint must not take the old one's name while the old
    entry names it: it is staged first under a name of its own (``.<defense>.<sha256[:16]>.safetensors``),
    the entry is switched to the staged copy, the usual file is replaced, the entry switched back to
    it, and only then the staged copy removed. Staged copies a killed earlier write left behind go too.
    """
    record = entry["provenance"]["checkpoint"]
    path = entry_path(root, entry["protocol"], entry["defense"])
    target = checkpoint_path(root, entry["protocol"], entry["defense"])
    if record is None or record["file"] != target.name or record["sha256"] != sha256(checkpoint):
        raise RobustdeqError(f"entry {entry['defense']!r}: its checkpoint record does not describe {checkpoint}")
    if not (target.is_file() and sha256(target) == record["sha256"]):  # else the file is in place already
        staged = target.with_name(f".{entry['defense']}.{record['sha256'][:16]}.safetensors")
        copy_atomically(checkpoint, staged)
        staging = {**entry, "provenance": {**entry["provenance"], "checkpoint": {**record, "file": staged.name}}}
        write_entry(root, staging)
        copy_atomically(staged, target)
    write_entry(root, entry)
    pattern = re.compile(rf"\.{re.escape(entry['defense'])}\.[0-9a-f]{{16}}\.safetensors")
    for leftover in target.parent.iterdir():
        if pattern.fullmatch(leftover.name):
            leftover.unlink(missing_ok=True)
    return path


def read_entry(path: Path) -> dict[str, Any]:
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise RobustdeqError(f"{path}: not a readable JSON entry: {exc}") from None
    validate_entry(entry, str(path))
    return entry


def entry_files(folder: Path) -> list[Path]:
    """The entry files of a protocol folder: ``*.json`` but not hidden files (resumable states), a
    zoo index (``zoo.json``, written at a leaderboard root such as ``leaderboards/sweeps``) nor the
    training-seed spread (``seeds.json``)."""
    return sorted(p for p in folder.glob("*.json") if not p.name.startswith(".") and p.name not in ("zoo.json", SEEDS))


def read_entries(folder: Path) -> list[dict[str, Any]]:
    """Every entry of one protocol folder (validated), sorted by defense id."""
    if not folder.is_dir():
        raise RobustdeqError(f"{folder}: no such leaderboard folder")
    entries: list[dict[str, Any]] = []
    seen: dict[str, Path] = {}
    for path in entry_files(folder):
        entry = read_entry(path)
        first = seen.setdefault(entry["defense"], path)
        if first != path:  # one defense, two rows: a copied or renamed file
            raise RobustdeqError(
                f"{folder}: {first.name!r} and {path.name!r} are both entries of defense {entry['defense']!r}; "
                "keep one (an entry's file is named <defense>.json)"
            )
        entries.append(entry)
    return entries


def protocol_folders(root: Path) -> list[Path]:
    """Sub-folders of ``root`` that hold entries."""
    if not root.is_dir():
        raise RobustdeqError(f"{root}: no such leaderboard folder")
    return sorted(p for p in root.iterdir() if p.is_dir() and entry_files(p))


def read_seeds(folder: Path) -> dict[str, Any] | None:
    """The training-seed spread of a protocol folder's defenses (``<folder>/seeds.json``, validated;
    its protocol must be the folder's), or None when the folder has none."""
    path = folder / SEEDS
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise RobustdeqError(f"{path}: not a readable JSON file: {exc}") from None
    validate_seeds(data, str(path))
    if data["protocol"] != folder.name:
        raise RobustdeqError(f"{path}: the seeds of protocol {data['protocol']!r} in the folder of {folder.name!r}")
    return data


def record_seeds(folder: Path, spreads: dict[str, dict[str, Any]]) -> Path:
    """Validate and write the seed spread of the defenses in ``spreads`` (defense -> spread) into
    ``<folder>/seeds.json`` (the folder is the protocol's); other defenses already there are kept."""
    kept = read_seeds(folder) or {"defenses": {}}
    data = {"protocol": folder.name, "defenses": {**kept["defenses"], **spreads}}
    path = folder / SEEDS
    atomic_write_text(path, seeds_json(data, str(path)))
    return path
