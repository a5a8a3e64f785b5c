"""One registry pattern for stages, runtimes, exporters, models and hardware profiles."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import RegistryError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name → object. Duplicate names raise; unknown names raise with the allowed values and close matches."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None, *, replace: bool = False):
        """``reg.register("x", obj)`` or ``@reg.register("x")`` as a decorator."""

        def add(o: T) -> T:
            if name in self._items and not replace:
                raise RegistryError(f"{self.kind} '{name}' is already registered ({self._items[name]!r})")
            self._items[name] = o
            return o

        return add(obj) if obj is not None else add

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise RegistryError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._items), n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {self.kind} '{name}'. Allowed: {', '.join(sorted(self._items)) or '(none)'}.{hint}"

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())


def lazy(module: str, attr: str) -> Callable[[], object]:
    """A loader that imports ``module`` and returns ``attr`` only when called (keeps backends lazy)."""

    def load():
        import importlib

        return getattr(importlib.import_module(module, __package__), attr)

    load.__qualname__ = f"lazy({module}.{attr})"
    return load
