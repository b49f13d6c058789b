"""A package's names from its modules, each module imported on the first use of one of its names: `loadgen --help`
and a run import only what they need (tritonclient, grpc, numpy and aiohttp take most of a second to import)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy_names(
    package: str, names: Mapping[str, Sequence[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The package's module `__getattr__` and `__dir__` for `names` (by the module that defines them)."""
    origins = {name: module for module, defined in names.items() for name in defined}

    def __getattr__(name: str) -> Any:
        if name not in origins:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(origins[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *origins})

    return __getattr__, __dir__
