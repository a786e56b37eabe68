"""One small registry, reused for models, training recipes, attacks and data sets."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from robustdeq.errors import RobustdeqError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects; a duplicate name or an unknown name is an error.

    >>> models: Registry[Callable[..., object]] = Registry("model family")
    >>> @models.register("mlp")
    ... def make_mlp(): ...
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        if name not in self._items:
            known = ", ".join(sorted(self._items)) or "none"
            raise RobustdeqError(f"unknown {self.kind} {name!r} (known: {known})")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
