"""Package exports resolved on first use (PEP 562).

A generator package's `__init__` re-exports its public names; importing them eagerly would
import torch (seconds) for callers that only need settings or error types, such as every
`biomint validate`. `lazy_exports` makes the package's module `__getattr__` import the
submodule that defines a name the first time it is asked for, and caches the value.
"""
from __future__ import annotations

import importlib


def lazy_exports(package: str, where: dict[str, str], namespace: dict):
    """A module-level `__getattr__` for `package` resolving `where[name]` (a submodule name)."""

    def __getattr__(name: str):
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    return __getattr__


def resolve_all(package) -> None:
    """Import now every submodule behind the package's `__all__` (a worker's warm-up, before
    its first shard is timed)."""
    for name in package.__all__:
        getattr(package, name)
