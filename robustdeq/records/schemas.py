"""The JSON Schemas of the records, generated from their pydantic models: ``docs/schema/*.schema.json``.

``defense.schema.json`` describes ``defense.toml``, ``protocol.schema.json`` a protocol file,
``entry.schema.json`` a leaderboard entry, ``seeds.schema.json`` a protocol folder's training-seed
spread and ``published.schema.json`` a leaderboard folder's numbers published elsewhere
(``published.toml``). An editor that reads JSON Schemas checks a manifest as it is typed (README,
"Contributing a defense"); other tools can read the entry format without reading robustdeq's code. A
test keeps the committed files current; regenerate them with ``python -m robustdeq.records.schemas``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from robustdeq.records.defense import DefenseFile
from robustdeq.records.entry import EntryRecord
from robustdeq.records.paths import repo_folder
from robustdeq.records.protocol import ProtocolFile
from robustdeq.records.published import PublishedFile
from robustdeq.records.seeds import SeedsFile
from robustdeq.records.store import atomic_write_text

SCHEMA_DIR = repo_folder("docs") / "schema"
DIALECT = "https://json-schema.org/draft/2020-12/schema"

SCHEMAS: dict[str, tuple[type[BaseModel], str, str]] = {
    "defense": (
        DefenseFile,
        "robustdeq defense manifest (defense.toml)",
        "A defense folder's manifest: the model (a registered family or a model.py factory) and its settings, "
        "the DEQ solver, the training recipe and its settings, and a reference defense's record of its paper.",
    ),
    "protocol": (
        ProtocolFile,
        "robustdeq evaluation protocol (attacks/<id>.toml)",
        "A threat model, a test subset and an attack suite, with reliability checks and an eps sweep.",
    ),
    "entry": (
        EntryRecord,
        "robustdeq leaderboard entry (leaderboards/<protocol>/<defense>.json)",
        "One defense evaluated under one protocol: accuracies, every attack run, flags, checks, solver "
        "statistics, per-example outcomes and provenance (docs/entry.md explains each key).",
    ),
    "seeds": (
        SeedsFile,
        "robustdeq training-seed spread (leaderboards/<protocol>/seeds.json)",
        "Defenses of one protocol retrained with several seeds (benchmarks/seed_variance.py): per defense the "
        "protocol version it was measured under, each seed's clean and robust accuracy, and their spread.",
    ),
    "published": (
        PublishedFile,
        "robustdeq published numbers (leaderboards/<protocol>/published.toml)",
        "Numbers published elsewhere under a protocol's threat model, each with its source: shown beside the "
        "leaderboard's entries, never ranked with them.",
    ),
}


def schema(name: str) -> dict[str, Any]:
    model, title, description = SCHEMAS[name]
    generated = model.model_json_schema()
    return {"$schema": DIALECT, "$id": f"{name}.schema.json", **generated, "title": title, "description": description}


def schema_text(name: str) -> str:
    return json.dumps(schema(name), indent=2) + "\n"


def write_schemas(folder: Path = SCHEMA_DIR) -> list[Path]:
    paths = []
    for name in SCHEMAS:
        path = folder / f"{name}.schema.json"
        atomic_write_text(path, schema_text(name))
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write_schemas(Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_DIR):
        print(written)
