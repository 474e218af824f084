"""Distillation methods: one :class:`Distiller` per method behind one registry.

Importing this package imports every public submodule, which registers every
built-in method (a new built-in method is one new module here). See
:mod:`methods.base` for the interface and :mod:`methods.registry` for plugins and
named method sets.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import REGIMES, Batch, Distiller, DistillerContext, ModelSpec, Outputs
from .registry import (
    Ablations,
    ablations,
    available,
    create,
    expand_methods,
    get,
    load_plugin,
    method_sets,
    register,
    register_ablations,
    register_method_set,
)

for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_") and _info.name not in {"base", "registry"}:
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = [
    "REGIMES",
    "Ablations",
    "Batch",
    "Distiller",
    "DistillerContext",
    "ModelSpec",
    "Outputs",
    "ablations",
    "available",
    "create",
    "expand_methods",
    "get",
    "load_plugin",
    "method_sets",
    "register",
    "register_ablations",
    "register_method_set",
]
