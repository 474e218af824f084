"""Name -> Distiller registry, in the manner of timm's ``register_model``.

Built-in methods register on import of :mod:`methods`. Third-party methods come from
the ``kdbench.methods`` entry-point group (installed packages) or from a module named
on the command line (``--plugin my_pkg.my_method``); nothing else is imported.
Named method sets (``all``, ``paper-table``, ``pagkd-ablations``) expand in
:func:`expand_methods`. A method declares its ablation variants with
:func:`register_ablations`, so the report knows no method by name.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, TypeVar

from .base import REGIMES, Distiller, DistillerContext

ENTRY_POINT_GROUP = "kdbench.methods"

_REGISTRY: dict[str, type[Distiller]] = {}
_METHOD_SETS: dict[str, tuple[str, ...]] = {}
_ABLATIONS: dict[str, Ablations] = {}
_loaded_entry_points = False

D = TypeVar("D", bound=type[Distiller])


class UnknownMethodError(KeyError):
    """A method or method-set name that is not registered."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0])


def register(name: str) -> Callable[[D], D]:
    """Class decorator: ``@register("kd")`` adds the class under ``name``."""

    def wrap(cls: D) -> D:
        if not issubclass(cls, Distiller):
            raise TypeError(f"{cls.__name__} must subclass methods.Distiller to be registered")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(
                f"method name {name!r} is already registered by "
                f"{_REGISTRY[name].__module__}.{_REGISTRY[name].__name__}"
            )
        bad = set(cls.regimes) - set(REGIMES)
        if bad:
            raise ValueError(f"method {name!r} declares unknown regimes {sorted(bad)}")
        if not set(cls.main_regimes) <= set(cls.regimes):
            raise ValueError(f"method {name!r}: main_regimes must be a subset of regimes")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def register_method_set(name: str, members: Iterable[str]) -> None:
    """Register a named set of methods usable in ``--methods``."""
    _METHOD_SETS[name] = tuple(members)


@dataclass(frozen=True)
class Ablations:
    """A method's ablation variants (each a registered method), declared beside the
    method with :func:`register_ablations`; the report draws its ablation tables from it.

    Attributes:
        title: the method's display name.
        modules: the method's switchable modules, in column order.
        by_modules: the method that runs with each combination of modules on (one flag
            per module); all off is usually ``baseline``.
        modules_off: the variant with every module off on the method's own batches,
            shown in the all-off row when it ran (``""``: none).
        modules_note: what the modules table shows.
        levels: variants per level at which the method distils (rows), one per entry
            of ``level_columns``.
        level_columns: column names of the levels table.
        levels_note: what the levels table shows.
        components: variant -> (what it changes, the variant it is compared with).
    """

    title: str
    modules: tuple[str, ...] = ()
    by_modules: dict[tuple[bool, ...], str] = field(default_factory=dict)
    modules_off: str = ""
    modules_note: str = ""
    levels: dict[str, tuple[str, ...]] = field(default_factory=dict)
    level_columns: tuple[str, ...] = ()
    levels_note: str = ""
    components: dict[str, tuple[str, str]] = field(default_factory=dict)

    def variants(self) -> set[str]:
        """Every declared variant (not ``baseline``)."""
        named = {*self.by_modules.values(), self.modules_off, *self.components}
        named.update(m for names in self.levels.values() for m in names)
        return named - {"", "baseline"}


def register_ablations(method: str, ablations: Ablations) -> None:
    """Declare ``method``'s ablation variants (see :class:`Ablations`)."""
    _ABLATIONS[method] = ablations


def ablations() -> dict[str, Ablations]:
    """Every declared ablation study, by the method it ablates."""
    load_entry_point_plugins()
    return dict(_ABLATIONS)


def load_entry_point_plugins() -> list[str]:
    """Import every module advertised in the ``kdbench.methods`` entry-point group."""
    global _loaded_entry_points
    loaded: list[str] = []
    if _loaded_entry_points:
        return loaded
    _loaded_entry_points = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        ep.load()
        loaded.append(ep.value)
    return loaded


def load_plugin(module: str) -> None:
    """Import a plugin module named on the command line (``--plugin pkg.mod``)."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            f"plugin module {module!r} could not be imported ({err}). Pass an importable "
            "module path (on PYTHONPATH or installed), e.g. --plugin my_pkg.my_method"
        ) from err


def available() -> list[str]:
    load_entry_point_plugins()
    return sorted(_REGISTRY)


def method_sets() -> dict[str, tuple[str, ...]]:
    return dict(_METHOD_SETS)


def _unknown(name: str, kind: str, valid: Iterable[str]) -> UnknownMethodError:
    valid = list(valid)
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return UnknownMethodError(
        f"unknown {kind} {name!r}.{hint} Run `python -m benchmark list` to see every "
        "method; load your own with --plugin module.path or the "
        f"'{ENTRY_POINT_GROUP}' entry-point group."
    )


def get(name: str) -> type[Distiller]:
    load_entry_point_plugins()
    if name not in _REGISTRY:
        raise _unknown(name, "method", list(_REGISTRY) + list(_METHOD_SETS))
    return _REGISTRY[name]


def expand_methods(spec: str | Iterable[str]) -> list[str]:
    """``"pagkd,crd"`` or ``["all"]`` -> registered names, order kept, no repeats."""
    load_entry_point_plugins()
    names = [n.strip() for n in spec.split(",")] if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for n in filter(None, names):
        if n == "all":
            members: Iterable[str] = sorted(_REGISTRY)
        elif n in _METHOD_SETS:
            members = _METHOD_SETS[n]
        else:
            get(n)
            members = [n]
        missing = [m for m in members if m not in _REGISTRY]
        if missing:
            raise UnknownMethodError(f"method set {n!r} names unregistered method(s) {missing}")
        out.extend(m for m in members if m not in out)
    return out


def create(name: str, ctx: DistillerContext, **options: Any) -> Distiller:
    """Instantiate a registered method (the analogue of timm's ``create_model``)."""
    return get(name)(ctx, **options)
