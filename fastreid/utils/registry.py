"""Registries map config strings to classes or builder functions.

A user adds a backbone or dataset in their own file with ``@BACKBONE_REGISTRY.register()``
and names it in the config; nothing in the framework needs to change.
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Tuple


class Registry:
    """A named mapping from string to object, filled by a decorator."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._obj_map: Dict[str, Any] = {}

    def _do_register(self, name: str, obj: Any) -> None:
        if name in self._obj_map:
            raise KeyError(f"An object named {name!r} is already registered in the {self._name} registry")
        self._obj_map[name] = obj

    def register(self, obj: Optional[Any] = None) -> Any:
        """Register ``obj`` under its ``__name__``; usable as ``@register()`` or ``register(obj)``."""
        if obj is None:
            def deco(func_or_class: Any) -> Any:
                self._do_register(func_or_class.__name__, func_or_class)
                return func_or_class
            return deco
        self._do_register(obj.__name__, obj)
        return obj

    def get(self, name: str) -> Any:
        """The object registered as ``name``; the error lists every registered name."""
        if name not in self._obj_map:
            known = ", ".join(sorted(self._obj_map)) or "(none)"
            raise KeyError(f"No object named {name!r} in the {self._name} registry. Registered: {known}")
        return self._obj_map[name]

    def names(self) -> List[str]:
        """Registered names, sorted."""
        return sorted(self._obj_map)

    def __contains__(self, name: str) -> bool:
        return name in self._obj_map

    def __iter__(self) -> Iterator[Tuple[str, Any]]:
        return iter(self._obj_map.items())

    def __repr__(self) -> str:
        return f"Registry({self._name!r}, {self.names()})"


BACKBONE_REGISTRY = Registry("BACKBONE")
HEAD_REGISTRY = Registry("HEAD")
META_ARCH_REGISTRY = Registry("META_ARCH")
DATASET_REGISTRY = Registry("DATASET")

__all__ = ["Registry", "BACKBONE_REGISTRY", "HEAD_REGISTRY", "META_ARCH_REGISTRY", "DATASET_REGISTRY"]
