"""Run and grid configuration: what decides a run, and its hash.

A :class:`RunConfig` holds everything that decides one run's numbers; its
:meth:`RunConfig.hash` keys the run file, so a finished run is skipped on the next
call and a changed setting re-runs it. A :class:`GridConfig` is what the command line
or a YAML grid file asks for; :func:`benchmark.orchestration.grid.expand` turns it into run configs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from .profiles import Profile, get_profile


def _suite_version() -> str:
    """The installed distribution's version (pyproject.toml's ``version``); read from the
    source tree's pyproject.toml when the package runs uninstalled."""
    try:
        return metadata.version("kdbench")
    except metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
        found = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(), flags=re.M)
        if found is None:
            raise RuntimeError(f"no version in {pyproject}; install the package (pip install -e .)") from None
        return found.group(1)


SUITE_VERSION = _suite_version()
"""Part of every run's config hash: a new release re-runs every run."""


def stable_hash(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj`` (sorted keys)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class DataOptions:
    """How datasets are found and read (see :class:`datasets.catalog.DataRequest`)."""

    data_root: str | None = None
    require_real: bool = False
    data_seed: int = 0
    on_bad_image: str = "skip"
    modality_list: str | None = None


@dataclass
class RunConfig:
    """One (dataset, regime, method, seed, profile) run, fully resolved."""

    dataset: str
    regime: str
    method: str
    seed: int
    profile: Profile
    data: DataOptions = field(default_factory=DataOptions)
    method_options: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    folds: int = 0
    """k of lesion-level k-fold cross-validation (0: the dataset's one fixed split)."""
    fold: int = 0
    """Which fold is the test set when ``folds`` > 0."""

    def as_dict(self) -> dict[str, Any]:
        fold = {"folds": {"k": self.folds, "fold": self.fold}} if self.folds else {}
        return {
            "dataset": self.dataset,
            "regime": self.regime,
            "method": self.method,
            "seed": self.seed,
            "profile": self.profile.as_dict(),
            "data": dataclasses.asdict(self.data),
            "method_options": dict(self.method_options),
            "weights": dict(self.weights),
            "suite_version": SUITE_VERSION,
            **fold,
        }

    def hash(self, dataset_fingerprint: str = "") -> str:
        """Hash of what decides the numbers. The data root is replaced by the dataset's
        fingerprint (file list or generator parameters), so moving data keeps the hash."""
        d = self.as_dict()
        d["profile"] = hashed_profile(d["profile"])
        d["data"] = {k: v for k, v in d["data"].items() if k != "data_root"}
        d["dataset_fingerprint"] = dataset_fingerprint
        return stable_hash(d)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        return cls(
            dataset=d["dataset"],
            regime=d["regime"],
            method=d["method"],
            seed=int(d["seed"]),
            profile=Profile(**d["profile"]),
            data=DataOptions(**d.get("data", {})),
            method_options=dict(d.get("method_options", {})),
            weights={k: float(v) for k, v in d.get("weights", {}).items()},
            folds=int((d.get("folds") or {}).get("k", 0)),
            fold=int((d.get("folds") or {}).get("fold", 0)),
        )


HASH_NEUTRAL_DEFAULTS: dict[str, Any] = {"frozen_stages": 0, "head_init": "", "frozen_bn": False,
                                         "selection": "best", "teacher_min_steps": 0,
                                         "teacher_seed": -1, "max_steps": 0}
"""Profile fields added after run files existed, with the value that means "as before":
at that value a field is left out of the hashes, so earlier run files and teacher caches
keep their hashes (and a resumed grid does not redo them)."""


def hashed_profile(profile: dict[str, Any]) -> dict[str, Any]:
    """``profile`` as it enters a hash (see :data:`HASH_NEUTRAL_DEFAULTS`)."""
    return {k: v for k, v in profile.items() if k not in HASH_NEUTRAL_DEFAULTS or v != HASH_NEUTRAL_DEFAULTS[k]}


@dataclass
class GridConfig:
    """What a user asks for: lists of methods, datasets, regimes and seeds.

    ``regimes`` may be ``["main"]``: each method's own ``main_regimes``.
    ``method_options`` and ``weights`` map a method name to its overrides.
    """

    methods: list[str] = field(default_factory=lambda: ["all"])
    data: list[str] = field(default_factory=lambda: ["synth"])
    regimes: list[str] = field(default_factory=lambda: ["main"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    profile: str = "cpu"
    profile_overrides: dict[str, Any] = field(default_factory=dict)
    out: str = "results"
    cache_dir: str | None = None
    data_options: DataOptions = field(default_factory=DataOptions)
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    weights: dict[str, dict[str, float]] = field(default_factory=dict)
    plugins: list[str] = field(default_factory=list)
    retry_failed: bool = False
    shard: str | None = None
    progress: bool = True
    log_with: list[str] = field(default_factory=list)
    """Experiment trackers (:mod:`benchmark.training.tracking`). Logging never changes a run's
    numbers, so it is not part of :class:`RunConfig` nor of its hash."""
    folds: int | None = None
    """Lesion-level k-fold cross-validation: k folds, 0 for one fixed split, ``None`` for
    the default (:func:`benchmark.training.folds.resolve_folds`)."""

    def resolved_profile(self) -> Profile:
        """The named profile with this grid's overrides. Pretrained weights (from
        ``--pretrained`` or a ``.imagenet`` backbone tag) bring ImageNet input
        normalisation unless ``normalize`` is set explicitly."""
        profile = get_profile(self.profile).replace(**self.profile_overrides)
        tagged = any(b.endswith(".imagenet") for b in (profile.backbone, profile.teacher_backbone))
        if (profile.pretrained or tagged) and "normalize" not in self.profile_overrides:
            profile = profile.replace(normalize="imagenet")
        return profile


def _split_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def parse_assignments(items: list[str], what: str) -> dict[str, dict[str, Any]]:
    """``["pagkd.width=64", "kd.temperature=2"]`` -> ``{"pagkd": {"width": 64}, ...}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        method, dot, name = key.partition(".")
        if not sep or not dot or not method or not name:
            raise ValueError(f"{what} {item!r} must look like METHOD.NAME=VALUE, e.g. kd.temperature=2")
        out.setdefault(method, {})[name] = yaml.safe_load(raw)
    return out


def load_grid_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML grid file; its keys are the long command-line flags."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as err:
        raise FileNotFoundError(f"grid file {path} not found") from err
    except yaml.YAMLError as err:
        raise ValueError(f"grid file {path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"grid file {path} must hold a mapping of flag names to values")
    return {k.replace("-", "_"): v for k, v in data.items()}


def grid_from_mapping(m: dict[str, Any]) -> GridConfig:
    """Build a :class:`GridConfig` from flag-named values (CLI or YAML)."""
    g = GridConfig()
    if m.get("methods"):
        g.methods = _split_list(m["methods"])
    if m.get("data"):
        g.data = _split_list(m["data"])
    if m.get("regimes"):
        g.regimes = _split_list(m["regimes"])
    if m.get("seeds") is not None:
        g.seeds = [int(s) for s in _split_list(m["seeds"])]
    for key in ("profile", "out", "cache_dir", "shard"):
        if m.get(key) is not None:
            setattr(g, key, str(m[key]))
    overrides = dict(m.get("profile_overrides") or {})
    for key in ("backbone", "teacher_backbone", "epochs", "teacher_epochs", "image_size", "batch_size",
                "pretrained", "group_size", "lr", "teacher_lr", "data_scale", "precision", "teacher_cache", "normalize",
                "bn_recalibration", "channels_last", "min_steps", "teacher_min_steps", "val_lesions", "test_lesions",
                "oracle_factor", "val_every", "frozen_stages", "head_init", "frozen_bn", "selection", "teacher_seed",
                "max_steps"):
        if m.get(key) is not None:
            overrides[key] = m[key]
    g.profile_overrides = overrides
    d = g.data_options
    for key in ("data_root", "require_real", "data_seed", "on_bad_image", "modality_list"):
        if m.get(key) is not None:
            setattr(d, key, m[key])
    if m.get("option"):
        opts = m["option"]
        g.method_options = parse_assignments(opts, "--option") if isinstance(opts, list) else dict(opts)
    if m.get("weight"):
        w = m["weight"]
        g.weights = parse_assignments(w, "--weight") if isinstance(w, list) else dict(w)
    if m.get("plugin"):
        g.plugins = _split_list(m["plugin"]) if isinstance(m["plugin"], str) else list(m["plugin"])
    if m.get("log_with"):
        from .trackers import parse_log_with

        g.log_with = parse_log_with(m["log_with"])
    if m.get("folds") is not None:
        g.folds = int(m["folds"])
    for key in ("retry_failed", "progress"):
        if m.get(key) is not None:
            setattr(g, key, bool(m[key]))
    return g
