"""Strict readers for TOML tables: unknown keys and wrong types are errors naming the field."""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from robustdeq.errors import RobustdeqError

T = TypeVar("T")


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


class Table:
    """A view of one TOML table that hands out typed fields and rejects leftovers.

    `where` names the table in error messages, e.g. ``defenses/deq/defense.toml [train]``.
    """

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise RobustdeqError(f"{where}: expected a table, got {type(data).__name__}")
        self.data = dict(data)
        self.where = where
        self._used: set[str] = set()

    def _get(self, key: str, kind: type | tuple[type, ...], default: Any, required: bool) -> Any:
        self._used.add(key)
        if key not in self.data:
            if required:
                raise RobustdeqError(f"{self.where}: missing field {key!r}")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is a subclass of int; a number field must not accept true/false.
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            names = " or ".join(k.__name__ for k in kinds)
            raise RobustdeqError(f"{self.where}: field {key!r} must be {names}, got {type(value).__name__}")
        return value

    def text(self, key: str, default: str | None = None, required: bool = False) -> Any:
        return self._get(key, str, default, required)

    def integer(self, key: str, default: int | None = None, required: bool = False) -> Any:
        return self._get(key, int, default, required)

    def number(self, key: str, default: float | None = None, required: bool = False) -> Any:
        return self._get(key, float, default, required)

    def flag(self, key: str, default: bool | None = None, required: bool = False) -> Any:
        return self._get(key, bool, default, required)

    def numbers(self, key: str) -> list[float]:
        value = self._get(key, list, [], False)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise RobustdeqError(f"{self.where}: field {key!r} must be a list of numbers")
        return [float(v) for v in value]

    def integers(self, key: str) -> list[int]:
        value = self._get(key, list, [], False)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise RobustdeqError(f"{self.where}: field {key!r} must be a list of integers")
        return list(value)

    def texts(self, key: str) -> list[str]:
        value = self._get(key, list, [], False)
        if not all(isinstance(v, str) for v in value):
            raise RobustdeqError(f"{self.where}: field {key!r} must be a list of strings")
        return list(value)

    def choice(self, key: str, choices: tuple[str, ...], default: str | None = None) -> Any:
        value = self.text(key, default, required=default is None)
        if value not in choices:
            raise RobustdeqError(f"{self.where}: field {key!r} must be one of {', '.join(choices)}, got {value!r}")
        return value

    def table(self, key: str, required: bool = False) -> Table:
        where = f"{self.where} [{key}]"
        return Table(self._get(key, dict, {}, required), where)

    def tables(self, key: str) -> list[Table]:
        items = self._get(key, list, [], False)
        return [Table(item, f"{self.where} [[{key}]] #{i + 1}") for i, item in enumerate(items)]

    def rest(self) -> dict[str, Any]:
        """The fields not yet read, for family- or attack-specific settings."""
        return {k: v for k, v in self.data.items() if k not in self._used}

    def done(self) -> None:
        """Raise on any field that was not read."""
        extra = sorted(set(self.data) - self._used)
        if extra:
            raise RobustdeqError(f"{self.where}: unknown field {extra[0]!r}")
