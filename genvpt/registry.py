"""The extension points' registries (backbones, adaptation methods, classification methods): a name -> class table
that checks what is registered and names what is known when a name is not."""
from __future__ import annotations

import importlib
from typing import Generic, Optional, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(dict, Generic[T]):
    """``{name: class}``; every class has a ``name`` attribute equal to its key. ``what`` names the kind in errors
    ("method", "backbone"); ``builtins`` is the module whose import registers the built-in entries (imported the
    first time a name is missing, so that the package and its registry lines do not import each other)."""

    def __init__(self, what: str, builtins: Optional[str] = None):
        super().__init__()
        self.what, self.builtins = what, builtins

    def register(self, name: str, cls: type[T], *, replace: bool = False) -> type[T]:
        if name in self and not replace and self[name] is not cls:
            raise ValueError(f"{self.what} {name!r} is already registered ({self[name].__name__})")
        if cls.name != name:
            raise ValueError(f"{cls.__name__}.name is {cls.name!r}, registered as {name!r}")
        self[name] = cls
        return cls

    def names(self) -> list[str]:
        """Every registered name, the built-in entries included."""
        if self.builtins:
            importlib.import_module(self.builtins)
        return sorted(self)

    def lookup(self, name: str) -> type[T]:
        if not isinstance(name, str):
            raise ValueError(f"a {self.what} is named by a string, got {name!r}; registered: {', '.join(self.names())}")
        if name not in self and self.builtins:
            importlib.import_module(self.builtins)
        if name not in self:
            raise ValueError(f"unknown {self.what} {name!r}; registered: {', '.join(sorted(self))}")
        return self[name]
