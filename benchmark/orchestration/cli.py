"""Command line: ``python -m benchmark`` (= ``kdbench``).

    python -m benchmark --methods pagkd,crd --data ih_polyp      # run a grid (default)
    python -m benchmark list                                     # methods, sets, datasets, profiles
    python -m benchmark report results/                          # build results/REPORT.md
    python -m benchmark rerun results/runs/.../seed0.json        # repeat one run from its file

Flags override a YAML grid file (``--config grid.yaml``, keys = long flag names).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

SUBCOMMANDS = ("run", "list", "report", "rerun", "make-standin")
LAUNCH_KEYS = ("launcher", "tasks", "partition", "account", "gpus_per_task", "cpus_per_task", "time_min", "mem_gb",
               "array_parallelism", "wait", "workers")


def _run_parser(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("grid")
    g.add_argument("--config", help="YAML grid file; its keys are the long flag names")
    g.add_argument("--methods", help="comma list of methods or sets (all, paper-table, pagkd-ablations, ...)")
    g.add_argument("--data", help="comma list of datasets: synth, piccolo, polypset, ih_polyp, ih_gc, ham10000, "
                                  "isic2019, aptos, NAME:synthetic, folder:/path")
    g.add_argument("--regimes", help="comma list of paired, unpaired, all, same, or main (each method's own; "
                                     "default)")
    g.add_argument("--seeds", help="comma list of training seeds (default 0,1,2)")
    g.add_argument("--profile", help="smoke, cpu (default), paper, real")
    g.add_argument("--out", help="results folder (default results/)")
    g.add_argument("--cache-dir", help="teacher and image cache (default <out>/cache or $KDBENCH_CACHE)")
    g.add_argument("--shard", help="i/n: run every n-th run of the sorted grid, starting at i")
    g.add_argument("--folds", type=int, help="lesion-level stratified k-fold cross-validation with k folds, "
                                             "pooled per seed (0: one fixed split). Default: 5 folds for real "
                                             "data with fewer than 300 lesions, one fixed split otherwise")
    g.add_argument("--retry-failed", action="store_true", default=None, help="re-run runs recorded as failed")
    g.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    g.add_argument("--log-with", help="experiment trackers, comma list of tensorboard, wandb, mlflow, aim (through "
                                      "Accelerate; offline; logs in <out>/logs; off by default)")
    o = p.add_argument_group("profile overrides")
    o.add_argument("--backbone")
    o.add_argument("--teacher-backbone")
    o.add_argument("--pretrained", help="'builtin' (packaged ImageNet weights), 'timm' (timm's ImageNet weights "
                   "from the local Hugging Face cache), a checkpoint path, or '' for random initialisation")
    o.add_argument("--epochs", type=int)
    o.add_argument("--teacher-epochs", type=int)
    o.add_argument("--image-size", type=int)
    o.add_argument("--batch-size", type=int)
    o.add_argument("--group-size", type=int)
    o.add_argument("--lr", type=float)
    o.add_argument("--teacher-lr", type=float)
    o.add_argument("--data-scale", type=float)
    o.add_argument("--val-lesions", type=int, help="validation lesions of synthetic twins (0: paper's fractions)")
    o.add_argument("--test-lesions", type=int, help="test lesions of synthetic twins (0: paper's fractions)")
    o.add_argument("--oracle", dest="oracle_factor", type=int,
                   help="WLI-oracle reference on synthetic cross-modal twins: the baseline trained on K x the WLI "
                        "training lesions (0: none; cpu: 5)")
    o.add_argument("--val-every", type=int, help="validate every k epochs")
    o.add_argument("--precision", choices=["no", "bf16", "fp16"], help="mixed precision on a GPU (paper: bf16)")
    o.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels-last memory format for images and networks (paper and cpu: on)")
    o.add_argument("--normalize", choices=["none", "imagenet"], help="input normalisation (default: imagenet with "
                                                                     "pretrained weights, none otherwise)")
    o.add_argument("--teacher-cache", action="store_true", default=None)
    o.add_argument("--min-steps", type=int, help="floor on optimiser steps per training (epochs are raised "
                                                  "to reach it; 0: epochs only)")
    o.add_argument("--teacher-min-steps", type=int, help="floor on the teacher's optimiser steps, when above "
                                                          "--min-steps (0: --min-steps alone)")
    o.add_argument("--teacher-seed", type=int, help="one teacher, trained with this seed, for every training seed "
                                                     "(-1: a teacher per seed; cpu: 0)")
    o.add_argument("--max-steps", type=int, help="cap on a student's optimiser steps (epochs are lowered to stay "
                                                  "under it; 0: none, the default)")
    o.add_argument("--bn-recalibration", type=int, help="training images for batch-norm recalibration before each "
                                                         "validation (0: off)")
    o.add_argument("--frozen-stages", type=int, help="freeze the stem and this many stages of both networks and "
                                                      "cache their outputs (pretrained weights only; 0: train all)")
    o.add_argument("--frozen-bn", action=argparse.BooleanOptionalAction, default=None,
                   help="keep batch-norm layers in inference mode while training (pretrained statistics)")
    o.add_argument("--selection", choices=["best", "one_se"], help="checkpoint kept: highest validation AUC, or "
                                                                   "the earliest within one standard error of it")
    o.add_argument("--head-init", choices=["", "probe"], help="'probe': LP-FT, the head starts as the linear probe "
                                                              "on the network's own features ('': its own head)")
    d = p.add_argument_group("data")
    d.add_argument("--data-root", help="folder holding real datasets (default $KDBENCH_DATA)")
    d.add_argument("--require-real", action="store_true", default=None,
                   help="fail instead of using a synthetic twin when real data is missing")
    d.add_argument("--data-seed", type=int, help="seed of synthetic rendering and lesion splits (default 0)")
    d.add_argument("--on-bad-image", choices=["skip", "error"])
    d.add_argument("--modality-list", help="CSV file,modality for layouts without modality folders")
    m = p.add_argument_group("methods")
    m.add_argument("--option", action="append", default=None, help="METHOD.NAME=VALUE method option (repeatable)")
    m.add_argument("--weight", action="append", default=None, help="METHOD.TERM=VALUE loss weight (repeatable)")
    m.add_argument("--plugin", action="append", default=None, help="import this module to register methods")
    m.add_argument("--report", action="store_true", help="build REPORT.md in --out after the grid")
    la = p.add_argument_group("launcher (grids beyond one machine)")
    la.add_argument("--launcher", default="local", choices=["local", "slurm", "submitit-local"])
    la.add_argument("--workers", type=int, default=1,
                    help="local: run the grid in this many processes, cores split between them "
                         "(faster for small models on a CPU; 1 = this process)")
    la.add_argument("--tasks", type=int, default=4, help="array tasks (shards) for slurm/submitit-local")
    la.add_argument("--partition")
    la.add_argument("--account")
    la.add_argument("--gpus-per-task", type=int, default=0)
    la.add_argument("--cpus-per-task", type=int, default=4)
    la.add_argument("--time-min", type=int, default=240)
    la.add_argument("--mem-gb", type=int, default=32)
    la.add_argument("--array-parallelism", type=int, default=16)
    la.add_argument("--wait", action="store_true", help="slurm: wait for the array to finish")


def _grid_mapping(args: argparse.Namespace) -> dict[str, Any]:
    from ..settings.config import load_grid_file

    mapping: dict[str, Any] = load_grid_file(args.config) if args.config else {}
    for key, value in vars(args).items():
        if key in ("config", "command", "report", *LAUNCH_KEYS) or value is None:
            continue
        mapping[key] = value
    return mapping


def cmd_run(args: argparse.Namespace) -> int:
    from .. import run_grid_config
    from ..settings.config import grid_from_mapping

    grid = grid_from_mapping(_grid_mapping(args))
    if args.launcher == "local" and args.workers <= 1:
        records = run_grid_config(grid)
        counts: dict[str, int] = {}
        for r in records:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
    else:
        from .launch import SlurmOptions, launch

        opts = SlurmOptions(
            tasks=args.tasks, partition=args.partition, gpus_per_task=args.gpus_per_task,
            cpus_per_task=args.cpus_per_task, time_min=args.time_min, mem_gb=args.mem_gb,
            array_parallelism=args.array_parallelism, account=args.account,
        )
        counts = {}
        for part in launch(grid, args.launcher, opts, wait=args.wait or args.launcher != "slurm",
                           workers=args.workers):
            for k, v in part.items():
                counts[k] = counts.get(k, 0) + v
    print(f"[kdbench] {sum(counts.values())} run(s): " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())),
          file=sys.stderr)
    if args.report:
        from ..reporting.builder import build_report

        print(build_report(grid.out))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    import methods
    from datasets.catalog import layouts, synthetic_names
    from datasets.regimes import REGIMES

    from ..settings.profiles import PROFILES

    for plugin in args.plugin or []:
        methods.load_plugin(plugin)
    rows = []
    for name in methods.available():
        cls = methods.get(name)
        rows.append((name, ",".join(r for r in REGIMES if r in cls.regimes),
                     cls.summary))
    width = max(len(r[0]) for r in rows)
    rwidth = max(len(r[1]) for r in rows)
    print("methods (name, regimes, what it does):")
    for name, regimes, summary in rows:
        print(f"  {name:<{width}}  {regimes:<{rwidth}}  {summary}")
    print("\nmethod sets:")
    for name, members in sorted(methods.method_sets().items()):
        print(f"  {name}: {', '.join(members)}")
    print(f"\ndatasets with synthetic twins: {', '.join(synthetic_names())}")
    print(f"real-data layouts: {', '.join(layouts())}  (folder:/path for the generic layout)")
    print(f"profiles: {', '.join(PROFILES)}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ..reporting.builder import build_report

    path = build_report(args.results, args.out)
    print(path)
    return 0


def cmd_rerun(args: argparse.Namespace) -> int:
    from .. import rerun

    record, original = rerun(args.run_file, out=args.out)
    keys = ("auc", "f1", "acc")
    same = all(record["metrics"].get(k) == original["metrics"].get(k) for k in keys)
    print(json.dumps({k: [original["metrics"].get(k), record["metrics"].get(k)] for k in keys}))
    print("identical metrics" if same else "metrics differ from the original run", file=sys.stderr)
    return 0 if same else 1


def cmd_make_standin(args: argparse.Namespace) -> int:
    from datasets.standin import make_standin

    from ..settings.profiles import get_profile

    size = args.image_size or get_profile("real").image_size
    counts = make_standin(args.folder, size, args.seed)
    print(f"{args.folder}: {sum(counts.values())} lesions ({', '.join(f'{v} {k}' for k, v in counts.items())}), "
          f"one WLI and one NBI image each, {size} px; run it with --data folder:{args.folder}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kdbench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    run_p = sub.add_parser("run", help="run a grid (the default command)")
    _run_parser(run_p)
    list_p = sub.add_parser("list", help="list methods, method sets, datasets and profiles")
    list_p.add_argument("--plugin", action="append")
    rep = sub.add_parser("report", help="build REPORT.md from run files")
    rep.add_argument("results", nargs="?", default="results")
    rep.add_argument("--out", help="where REPORT.md goes (default: the results folder)")
    rr = sub.add_parser("rerun", help="repeat one run from its own run file and compare metrics")
    rr.add_argument("run_file")
    rr.add_argument("--out", help="results folder for the repeat (default: a temporary folder)")
    st = sub.add_parser("make-standin", help="write the 76-lesion synthetic stand-in of a small paired WLI/NBI "
                                             "set as a folder layout")
    st.add_argument("folder", help="new folder (name it ...-synthetic so reports label it SYNTHETIC)")
    st.add_argument("--image-size", type=int, help="pixels (default: the real profile's)")
    st.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in (*SUBCOMMANDS, "-h", "--help"):
        argv = ["run", *argv]
    args = build_parser().parse_args(argv)
    handlers = {"run": cmd_run, "list": cmd_list, "report": cmd_report, "rerun": cmd_rerun,
                "make-standin": cmd_make_standin}
    try:
        return handlers[args.command](args)
    except (KeyError, ValueError, FileNotFoundError, ModuleNotFoundError) as err:
        if os.environ.get("KDBENCH_DEBUG"):
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"kdbench: error: {message}", file=sys.stderr)
        return 2
