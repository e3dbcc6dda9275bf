"""Lazy public names for a package (PEP 562): the names load on first access, so importing the
package stays cheap (no torch, ray or pandas until a name that needs them is used)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, names: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` whose public ``names`` map each name to the
    module that defines it. Use at the end of the package's ``__init__``::

        __getattr__, __dir__ = lazy_exports(__name__, {"AdaLRSScheduler": "pkg.scheduler"})
    """
    table = dict(names)

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(table))

    return __getattr__, __dir__
