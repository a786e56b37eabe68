"""The records: pydantic models for manifests, protocols and entries, their published JSON Schemas,
and one-line errors."""

from __future__ import annotations

import copy
import json
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from robustdeq.errors import RobustdeqError
from robustdeq.records.entry import entry_json, validate_entry
from robustdeq.records.parse import Record, Settings, parse
from robustdeq.records.paths import ATTACKS_DIR, DEFENSES_DIR, LEADERBOARDS_DIR
from robustdeq.records.schemas import SCHEMA_DIR, SCHEMAS, schema, schema_text
from robustdeq.records.store import entry_files

ENTRIES = sorted(p for folder in LEADERBOARDS_DIR.rglob("*") if folder.is_dir() for p in entry_files(folder))
MANIFESTS = sorted(DEFENSES_DIR.glob("*/defense.toml")) + sorted(
    (Path(__file__).resolve().parent.parent / "examples").glob("*/defense.toml")
)
PROTOCOLS = sorted(ATTACKS_DIR.glob("*.toml"))


def validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema(name))


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_the_published_schemas_are_current(name: str) -> None:
    path = SCHEMA_DIR / f"{name}.schema.json"
    assert path.read_text() == schema_text(name), f"regenerate with: python -m robustdeq.records.schemas ({path})"
    jsonschema.Draft202012Validator.check_schema(json.loads(path.read_text()))


def test_every_committed_entry_validates_and_reserialises_byte_for_byte() -> None:
    assert len(ENTRIES) >= 20
    check = validator("entry")
    for path in ENTRIES:
        text = path.read_text()
        data = json.loads(text)
        check.validate(data)
        assert entry_json(data, str(path)) == text, path


def test_every_manifest_and_protocol_validates_against_its_schema() -> None:
    assert MANIFESTS and PROTOCOLS
    for name, files in (("defense", MANIFESTS), ("protocol", PROTOCOLS)):
        check = validator(name)
        for path in files:
            check.validate(tomllib.loads(path.read_text()))


def test_the_schemas_refuse_what_the_models_refuse() -> None:
    entry = json.loads(ENTRIES[0].read_text())
    for mutate in (
        lambda e: e.update(extra=1),
        lambda e: e.pop("flags"),
        lambda e: e.update(n_examples=10.5),
        lambda e: e["provenance"].update(when="now"),
        lambda e: e["threat_model"].update(eps="0.2"),
    ):
        bad = copy.deepcopy(entry)
        mutate(bad)
        with pytest.raises(jsonschema.ValidationError):
            validator("entry").validate(bad)
        with pytest.raises(RobustdeqError):
            validate_entry(bad)
    manifest = tomllib.loads(MANIFESTS[0].read_text())
    for mutate in (lambda m: m.update(colour="red"), lambda m: m["train"].update(epochs="3"), lambda m: m.pop("name")):
        bad = copy.deepcopy(manifest)
        mutate(bad)
        with pytest.raises(jsonschema.ValidationError):
            validator("defense").validate(bad)


class Inner(Record):
    steps: int
    kind: str = "a"


class Outer(Record):
    name: str
    rate: float = 1.0
    inner: Inner
    items: list[Inner] = []


@pytest.mark.parametrize(
    "data, toml, json_style",
    [
        ({"inner": {"steps": 1}}, "f.toml: missing field 'name'", "e: missing key 'name'"),
        (
            {"name": "x", "inner": {"steps": 1}, "colour": 1},
            "f.toml: unknown field 'colour'",
            "e: unknown key 'colour'",
        ),
        (
            {"name": "x", "inner": {"steps": "1"}},
            "f.toml [inner]: field 'steps' must be int, got str",
            "e.inner.steps: expected integer, got str '1'",
        ),
        (
            {"name": "x", "inner": {"steps": 1}, "items": [{"steps": 2}, {"steps": True}]},
            "f.toml [[items]] #2: field 'steps' must be int, got bool",
            "e.items[1].steps: expected integer, got bool True",
        ),
        (
            {"name": "x", "inner": {"steps": 1}, "rate": float("nan")},
            "f.toml: field 'rate' must be a finite number, got nan",
            "e.rate: ",
        ),
        ({"name": "x", "inner": 3}, "f.toml: field 'inner' must be a table, got int", "e.inner: expected object"),
    ],
)
def test_errors_are_one_line_naming_the_file_the_key_path_and_the_problem(
    data: dict[str, Any], toml: str, json_style: str
) -> None:
    with pytest.raises(RobustdeqError) as info:
        parse(Outer, data, "f.toml")
    message = str(info.value)
    assert message.startswith(toml) and "\n" not in message and "pydantic" not in message, message
    with pytest.raises(RobustdeqError) as info:
        parse(Outer, data, "e", style="json")
    assert str(info.value).startswith(json_style) and "\n" not in str(info.value), str(info.value)


def test_a_whole_number_is_a_real_number_but_never_the_other_way_round() -> None:
    assert parse(Outer, {"name": "x", "rate": 2, "inner": {"steps": 1}}, "f").rate == 2.0
    with pytest.raises(RobustdeqError, match="'steps' must be int, got float"):
        parse(Inner, {"steps": 1.0}, "f")
    with pytest.raises(RobustdeqError, match="unknown field 'x'"):
        parse(Settings, {"x": 1}, "f")


def test_a_recipe_sub_table_without_its_recipe_is_named_as_missing(tmp_path: Path) -> None:
    from robustdeq.records.defense import load_defense

    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "defense.toml").write_text('name = "x"\n[model]\nfamily = "deq"\n[train]\n[train.pgd_at]\nsteps = 3\n')
    with pytest.raises(RobustdeqError, match=r"\[train\]: missing field 'recipe'"):
        load_defense(folder)
