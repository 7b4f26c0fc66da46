"""Package faces that import on first use (PEP 562), shared by every package's `__init__.py`.

A package lists its public names as `{name: owning module}` and sets
`__getattr__ = lazy_getattr(__name__, EXPORTS)`: importing the package then costs nothing (no torch,
not even the owning modules) until a name is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping

__all__ = ["lazy_getattr"]


def lazy_getattr(package: str, exports: Mapping[str, str]) -> Callable[[str], object]:
    """A module-level `__getattr__` for `package` that imports `exports[name]` when `name` is asked for.

    Args:
        package: the package's `__name__` (named in the AttributeError of an unknown name).
        exports: public name -> the module that owns it.
    """

    def __getattr__(name: str) -> object:
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
