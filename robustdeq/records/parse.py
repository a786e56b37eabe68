"""Reading records: TOML files into strict pydantic models, with one-line errors.

Every file a user writes or robustdeq keeps (a defense manifest, a protocol, a leaderboard entry, a
checkpoint's metadata) is read through :func:`parse`: unknown keys and wrong types are refused, and
the first problem becomes one :class:`~robustdeq.errors.RobustdeqError` line naming the file, the key
path and the problem (pydantic's own multi-line report is never shown). Two styles of naming:

- ``toml`` (manifests, protocols): ``defenses/x/defense.toml [train]: field 'epochs' must be int, got str``
- ``json`` (entries, checkpoint metadata): ``entry.provenance.seed: expected integer, got str '0'``
"""

from __future__ import annotations

import hashlib
import math
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainValidator, ValidationError, WithJsonSchema

from robustdeq.errors import RobustdeqError


class Record(BaseModel):
    """A record read from a file: unknown keys and wrong types are errors, nothing is coerced (a
    whole number is accepted where a real number is expected, as TOML and JSON write 1 for 1.0),
    infinities and NaN are refused, and a record never changes once read."""

    model_config = ConfigDict(
        strict=True, extra="forbid", frozen=True, allow_inf_nan=False, protected_namespaces=(), validate_default=False
    )


class Settings(Record):
    """A table of settings for a registered thing (a model family, a recipe, an attack): the same rules."""


def _number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError("number")
    return value


# A finite JSON number kept as written (an entry written with 1 re-serialises as 1, not 1.0).
Number = Annotated[float, PlainValidator(_number), WithJsonSchema({"type": "number"})]


def _not_null(value: Any) -> Any:
    if value is None:
        raise ValueError("null")
    return value


# A key some records have and others do not: when present it must not be null.
NotNull = BeforeValidator(_not_null)

M = TypeVar("M", bound=BaseModel)


def read_toml(path: Path) -> tuple[dict[str, Any], str]:
    """Parse a TOML file; returns (table, sha256 of the file's bytes)."""
    if not path.is_file():
        raise RobustdeqError(f"{path}: file not found")
    raw = path.read_bytes()
    try:
        table = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RobustdeqError(f"{path}: malformed TOML: {exc}") from None
    return table, hashlib.sha256(raw).hexdigest()


def parse(model: type[M], data: Any, where: str, style: str = "toml") -> M:
    """``data`` validated as ``model``; the first problem is a one-line error (see the module docstring)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RobustdeqError(one_line(exc, where, style)) from None


TOML_KINDS = {
    "int_type": "int",
    "float_type": "float",
    "string_type": "str",
    "bool_type": "bool",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
}
JSON_KINDS = {
    "int_type": "integer",
    "float_type": "number",
    "string_type": "string",
    "bool_type": "boolean",
    "list_type": "list",
    "tuple_type": "list",
    "dict_type": "object",
    "model_type": "object",
    "model_attributes_type": "object",
}
BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def one_line(exc: ValidationError, where: str, style: str = "toml") -> str:
    """The first error of ``exc`` as one line, in the ``toml`` or ``json`` style."""
    error = exc.errors(include_url=False)[0]
    loc = tuple(error["loc"])
    kind, value = error["type"], error.get("input")
    context = error.get("ctx") or {}
    if style == "json":
        return _json_line(where, loc, kind, value, context, error["msg"])
    return _toml_line(where, loc, kind, value, context, error["msg"])


def _custom(kind: str, context: dict[str, Any], msg: str) -> str | None:
    """The message of a validator's own error (a ValueError raised in a model), else None."""
    if kind in ("value_error", "assertion_error") and "error" in context:
        return str(context["error"])
    return None


def _tables(parts: list[Any]) -> str:
    """`` [train]``, `` [[attacks]] #2``, `` [fidelity] [[deviations]] #1``: the tables on the way to a key."""
    out = []
    while parts:
        part = parts.pop(0)
        if parts and isinstance(parts[0], int):
            out.append(f" [[{part}]] #{parts.pop(0) + 1}")
        else:
            out.append(f" [{part}]")
    return "".join(out)


def _toml_line(where: str, loc: tuple[Any, ...], kind: str, value: Any, context: dict[str, Any], msg: str) -> str:
    parts = list(loc)
    custom = _custom(kind, context, msg)
    if custom is not None:  # a model's own check: its message names the fields, loc is the table
        return f"{where}{_tables(parts)}: {custom}"
    key = ""
    if parts and isinstance(parts[-1], int):  # an item of a list
        index = parts.pop()
        key = f"{parts.pop() if parts else ''}[{index}]"
    elif parts:
        key = str(parts.pop())
    place = where + _tables(parts)
    if kind == "missing":
        return f"{place}: missing field {key!r}"
    if kind == "extra_forbidden":
        return f"{place}: unknown field {key!r}"
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(context.get("expected", "")))
        return f"{place}: {key} must be one of {', '.join(choices)}, got {value!r}"
    if kind in TOML_KINDS:
        return f"{place}: field {key!r} must be {TOML_KINDS[kind]}, got {type(value).__name__}"
    if kind == "finite_number":
        return f"{place}: field {key!r} must be a finite number, got {value!r}"
    if kind in BOUNDS:
        bound = next(iter(context.values()))
        return f"{place}: field {key!r} must be {BOUNDS[kind]} {bound}, got {value!r}"
    return f"{place}: field {key!r}: {msg}"


def _json_line(where: str, loc: tuple[Any, ...], kind: str, value: Any, context: dict[str, Any], msg: str) -> str:
    def path(parts: tuple[Any, ...]) -> str:
        return where + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)

    if kind == "missing":
        return f"{path(loc[:-1])}: missing key {loc[-1]!r}"
    if kind == "extra_forbidden":
        return f"{path(loc[:-1])}: unknown key {loc[-1]!r}"
    custom = _custom(kind, context, msg)
    if custom in ("number", "null") or kind in JSON_KINDS:
        expected = "number" if custom == "number" else "a value" if custom == "null" else JSON_KINDS[kind]
        return f"{path(loc)}: expected {expected}, got {type(value).__name__} {value!r:.60}"
    if custom is not None:
        return f"{path(loc)}: {custom}"
    if kind == "literal_error":
        return f"{path(loc)}: expected one of {context.get('expected')}, got {value!r:.60}"
    return f"{path(loc)}: {msg}"
