"""The channel adapters `moments ingest` knows: one registry, filled by the adapters themselves.

An adapter class registers itself with `@register`. `adapter_kinds` and `adapter_class`
first import every module of this package, so a new channel is one class in one file
of `producers/adapters/` plus its mapping in `producers/mappings/`; ingest and the CLI
read the kinds from here and name none themselves.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import TypeVar

from producers.adapters.base import Adapter

A = TypeVar("A", bound=type[Adapter])

_adapters: dict[str, type[Adapter]] = {}
_discovered = False
#: The modules of this package that hold no adapter (a kind list need not load ingest's metrics).
_NOT_ADAPTERS = frozenset({"base", "ingest", "registry"})


def register(cls: A) -> A:
    """Class decorator: make `cls` the adapter of its `kind`."""
    known = _adapters.get(cls.kind)
    if known is not None and known is not cls:
        raise ValueError(
            f"channel kind {cls.kind!r} is taken by {known.__qualname__};"
            f" {cls.__qualname__} cannot register it too"
        )
    _adapters[cls.kind] = cls
    return cls


def unregister(kind: str) -> None:
    """Forget the adapter of `kind` (a test's own adapter, when the test ends)."""
    _adapters.pop(kind, None)


def adapter_kinds() -> tuple[str, ...]:
    """Every registered kind, in the adapters' `order`."""
    _discover()
    return tuple(sorted(_adapters, key=lambda kind: (_adapters[kind].order, kind)))


def adapter_class(kind: str) -> type[Adapter]:
    """The adapter of `kind`; ValueError naming the known kinds when there is none."""
    _discover()
    cls = _adapters.get(kind)
    if cls is None:
        raise ValueError(
            f"unknown channel kind {kind!r} (expected one of {', '.join(adapter_kinds())})"
        )
    return cls


def _discover() -> None:
    """Import every module of this package once, so each adapter in it has registered."""
    global _discovered
    if _discovered:
        return
    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if module.name not in _NOT_ADAPTERS:
            importlib.import_module(f"{__package__}.{module.name}")
    _discovered = True
