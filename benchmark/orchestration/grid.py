"""A grid of runs: expansion, sharding, resumption, and the loop that runs it.

:func:`run_grid` loads every dataset first (bad data stops before anything trains),
expands methods x datasets x regimes x seeds into :class:`RunConfig` s, keeps this
shard's share (``--shard i/n``: every n-th run of the sorted list, deterministic),
skips runs whose file already holds the same config hash, and runs the rest, writing
each run file atomically as soon as it finishes. Teachers are scored into their own
run files (the report's upper-bound rows). Under k-fold cross-validation
(:mod:`benchmark.training.folds`) every run and teacher exists once per fold, each fold its own
file; with pretrained weights, linear-probe reference rows (:mod:`benchmark.training.probe`) are
written per fold too.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

import methods
from datasets.base import DatasetBundle
from datasets.regimes import Regime, parse_regime

from ..models.weights import check_weights_available
from ..settings.config import GridConfig, RunConfig
from ..training.folds import resolve_folds
from ..training.probe import write_probe_rows
from ..training.runfile import read_run, run_path, write_json_atomic
from ..training.runner import ORACLE_METHOD, ORACLE_REGIME, Session


def parse_shard(shard: str | None) -> tuple[int, int]:
    if not shard:
        return 0, 1
    try:
        i, n = (int(v) for v in shard.split("/"))
    except ValueError as err:
        raise ValueError(f"--shard must look like i/n with 0 <= i < n, e.g. 0/2; got {shard!r}") from err
    if not 0 <= i < n:
        raise ValueError(f"--shard {shard!r}: need 0 <= i < n")
    return i, n


def method_regimes(method: str, requested: list[str], bundle: DatasetBundle) -> list[str]:
    """Regimes to run ``method`` in on ``bundle``. ``main`` means the method's own
    main regimes that the dataset serves (``same`` on single-modality datasets); on a
    dataset that serves none of them (a fully paired real set serves only ``paired``),
    the cross-modal regimes it serves that the method accepts; failing those too, the
    main regimes, which the run files then record as unsupported, with the reason."""
    cls = methods.get(method)
    out: list[str] = []
    for r in requested:
        if r == "main":
            chosen = [x for x in bundle.regimes() if x in cls.main_regimes or not bundle.cross_modal]
            if not chosen:
                chosen = [x for x in bundle.regimes() if x in cls.regimes and x != Regime.SAME]
            out.extend(chosen or sorted(cls.main_regimes))
        else:
            try:
                out.append(parse_regime(r))
            except ValueError as err:
                raise ValueError(f"{err} (or main)") from None
    return list(dict.fromkeys(str(r) for r in out))


def oracle_configs(grid: GridConfig, data_name: str, bundle: DatasetBundle) -> list[RunConfig]:
    """The WLI-oracle reference runs of one dataset, one per seed: the baseline trained in
    regime ``oracle`` (profile ``oracle_factor`` times the WLI training lesions of ``all``).
    Only synthetic cross-modal twins rendered with an oracle factor have them."""
    if not len(bundle.splits.oracle_student):
        return []
    return [
        RunConfig(dataset=data_name, regime=ORACLE_REGIME, method=ORACLE_METHOD, seed=seed,
                  profile=grid.resolved_profile(), data=dataclasses.replace(grid.data_options),
                  method_options=dict(grid.method_options.get(ORACLE_METHOD, {})),
                  weights=dict(grid.weights.get(ORACLE_METHOD, {})))
        for seed in grid.seeds
    ]


def expand(grid: GridConfig, bundles: dict[str, DatasetBundle]) -> list[RunConfig]:
    profile = grid.resolved_profile()
    names = methods.expand_methods(grid.methods)
    configs = []
    for data_name, bundle in bundles.items():
        k = resolve_folds(grid.folds, bundle)
        for method in names:
            for regime in method_regimes(method, grid.regimes, bundle):
                for seed in grid.seeds:
                    configs.extend(RunConfig(
                        dataset=data_name, regime=regime, method=method, seed=seed, profile=profile,
                        data=dataclasses.replace(grid.data_options),
                        method_options=dict(grid.method_options.get(method, {})),
                        weights=dict(grid.weights.get(method, {})), folds=k, fold=fold,
                    ) for fold in range(max(1, k)))
        configs.extend(oracle_configs(grid, data_name, bundle))
    configs.sort(key=lambda c: (bundles[c.dataset].dataset_id, c.seed, c.fold, c.regime, c.method))
    return configs


def _existing(path: Path, config_hash: str, retry_failed: bool) -> dict[str, Any] | None:
    rec = read_run(path)
    if rec is None or rec.get("config_hash") != config_hash:
        return None
    if rec.get("status") == "failed" and retry_failed:
        return None
    return rec


def load_bundles(grid: GridConfig, session: Session) -> dict[str, DatasetBundle]:
    """Every dataset of the grid, loaded (and validated) before anything trains."""
    for plugin in grid.plugins:
        methods.load_plugin(plugin)
    methods.expand_methods(grid.methods)  # unknown names fail before any data is read
    profile = grid.resolved_profile()
    bundles: dict[str, DatasetBundle] = {}
    for name in grid.data:
        probe = RunConfig(dataset=name, regime=Regime.ALL, method="baseline", seed=0, profile=profile,
                          data=grid.data_options)
        bundles[name] = session.dataset(probe)
    return bundles


def shard_configs(grid: GridConfig, bundles: dict[str, DatasetBundle]) -> list[RunConfig]:
    """This shard's runs (``--shard i/n``: every n-th run of the sorted grid)."""
    shard_i, shard_n = parse_shard(grid.shard)
    return expand(grid, bundles)[shard_i::shard_n]


def teacher_jobs(configs: list[RunConfig], bundles: dict[str, DatasetBundle]) -> list[tuple[RunConfig, str]]:
    """(a run config, modality) of every teacher that ``configs`` need, each once per
    (dataset, modality, teacher seed, fold), in grid order (methods without a teacher still get
    the upper-bound row). The teacher seed is the run's seed, or the profile's ``teacher_seed``."""
    jobs: dict[tuple[str, str, int, int], tuple[RunConfig, str]] = {}
    for cfg in configs:
        bundle = bundles[cfg.dataset]
        if cfg.regime not in bundle.regimes():
            continue
        modality = bundle.teaching_modality(cfg.regime)
        jobs.setdefault((cfg.dataset, modality, cfg.profile.seed_of_teacher(cfg.seed), cfg.fold), (cfg, modality))
    return list(jobs.values())


def train_teachers(grid: GridConfig, worker: tuple[int, int] = (0, 1)) -> int:
    """Train (or find cached) this worker's share of the grid's teachers; returns how
    many. Lets local workers train teachers in parallel before any student needs one."""
    session = Session(grid.out, grid.cache_dir, progress=False)
    bundles = load_bundles(grid, session)
    profile = grid.resolved_profile()
    jobs = teacher_jobs(shard_configs(grid, bundles), bundles)[worker[0]::worker[1]]
    for cfg, modality in jobs:
        session.teacher(session.fold(bundles[cfg.dataset], cfg), modality, profile, profile.seed_of_teacher(cfg.seed))
    return len(jobs)


def _describe(record: dict[str, Any]) -> str:
    if record.get("status") != "ok":
        return str(record.get("status"))
    return f"ok, AUC {100 * record['metrics']['auc']:.1f}, {record['timing'].get('total_s', 0.0):.1f} s"


def _claimed(configs: list[RunConfig], claim: Callable[[], int]) -> Iterator[tuple[int, RunConfig]]:
    while (i := claim()) < len(configs):
        yield i, configs[i]


def run_grid(
    grid: GridConfig, log: Any = None, worker: tuple[int, int] = (0, 1), claim: Callable[[], int] | None = None
) -> list[dict[str, Any]]:
    """Run (or resume) a grid; returns every run record of this shard, old and new.

    ``worker = (j, w)`` with ``claim`` (a counter shared by the ``--workers`` processes):
    this process is local worker j of w; it takes the shard's runs one at a time as it
    becomes free, so a worker that drew short runs does not sit idle, and logs one line
    per finished run instead of a bar.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    profile = grid.resolved_profile()
    check_weights_available([profile.backbone, profile.teacher_backbone], profile.pretrained)
    session = Session(grid.out, grid.cache_dir, progress=grid.progress, log_with=grid.log_with)
    bundles = load_bundles(grid, session)
    configs = shard_configs(grid, bundles)
    main = session.is_main(profile)
    started = time.perf_counter()
    done_here = 0

    records: list[dict[str, Any]] = []
    jobs = _claimed(configs, claim) if claim else enumerate(configs)
    bar = tqdm(jobs, total=len(configs), desc="grid", unit="run", disable=not grid.progress, dynamic_ncols=True)
    mine: list[RunConfig] = []
    for position, cfg in bar:
        mine.append(cfg)
        bundle = session.fold(bundles[cfg.dataset], cfg)
        bar.set_postfix_str(f"{bundle.dataset_id}/{cfg.regime}/{cfg.method}/seed{cfg.seed}")
        path = session.path_for(cfg, bundle)
        record = session.base_record(cfg, bundle)
        done = _existing(path, record["config_hash"], grid.retry_failed)
        if done is not None:
            records.append(done)
            continue
        record = session.run(cfg, bundle)
        if main:
            write_json_atomic(path, record)
        world = session.accelerator(profile).num_processes
        if world > 1 and record.get("student_sha256"):
            rank = session.accelerator(profile).process_index
            log(f"[kdbench] rank {rank}/{world} {bundle.dataset_id}/{cfg.regime}/{cfg.method}/seed{cfg.seed} "
                f"student sha256 {record['student_sha256']}")
        records.append(record)
        done_here += 1
        if claim:
            left = len(configs) - position - 1
            eta = (time.perf_counter() - started) / done_here * left / worker[1]
            log(f"[kdbench] worker {worker[0] + 1}/{worker[1]}: run {position + 1}/{len(configs)} "
                f"{bundle.dataset_id}/{cfg.regime}/{cfg.method}/seed{cfg.seed} {_describe(record)}; "
                f"ETA {eta / 60:.1f} min")
    _ensure_teacher_rows(grid, session, bundles, mine, main)
    if main:
        write_probe_rows(session, bundles, mine, grid.out)
    failed = [r for r in records if r.get("status") == "failed"]
    if failed:
        log(f"[kdbench] {len(failed)} run(s) failed; their files hold the error. First: "
            f"{failed[0]['dataset']}/{failed[0]['regime']}/{failed[0]['method']}/seed{failed[0]['seed']}: "
            f"{failed[0]['error']['message']}")
    return records


def _ensure_teacher_rows(grid: GridConfig, session: Session, bundles: dict[str, DatasetBundle],
                         configs: list[RunConfig], main: bool) -> None:
    """Every teacher of the grid (per dataset and teacher seed) gets its row, even when only
    teacher-free methods (``baseline``) ran, so the report always has the upper bound."""
    seen: set[tuple[str, str, int, int]] = set()
    for cfg in configs:
        bundle = session.fold(bundles[cfg.dataset], cfg)
        modality = bundle.teaching_modality(cfg.regime)
        tseed = cfg.profile.seed_of_teacher(cfg.seed)
        key = (bundle.dataset_id, modality, tseed, cfg.fold)
        if key in seen or cfg.regime not in bundle.regimes():
            continue
        seen.add(key)
        tpath = run_path(grid.out, bundle.dataset_id, "teacher", f"teacher-{modality}", tseed,
                         cfg.fold if cfg.folds else None)
        tres = session.teacher(bundle, modality, cfg.profile, tseed)
        existing = read_run(tpath)
        if main and (existing is None or existing.get("config_hash") != tres.key):
            write_json_atomic(tpath, session.teacher_record(cfg, bundle, tres))
