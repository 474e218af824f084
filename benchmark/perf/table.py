"""The plain-text table of a perf result's headline figures."""

from __future__ import annotations

from typing import Any


def format_table(result: dict[str, Any]) -> str:
    """Plain-text table of the headline figures."""
    rows: list[tuple[str, str, str]] = []
    tp = result.get("throughput")
    if tp:
        aug = "augmentation on in both" if tp["augment"] else "no augmentation in either"
        for method, m in tp["methods"].items():
            loads = f"{min(m['load_1m']):.1f}-{max(m['load_1m']):.1f}"
            rows.append((f"{method}: harness / bare loop images/s ({aug}), median of pair ratios",
                         f"{m['harness_images_per_s']:.1f} / {m['bare_images_per_s']:.1f} -> {m['ratio']:.3f}",
                         loads))
            rows.append((f"{method}: bare / harness median full-batch step time",
                         f"{1e3 * m['bare_median_step_s']:.0f} / {1e3 * m['harness_median_step_s']:.0f} ms = "
                         f"{m['step_ratio']:.3f}", loads))
    fl = result.get("flops")
    if fl:
        for method, m in fl["methods"].items():
            rows.append((f"{method}: achieved GFLOP/s (harness) vs {fl['matmul_n']}^2 matmul",
                         f"{m['harness']['gflops']:.1f} vs {fl['matmul_gflops']:.1f} "
                         f"({100 * m['harness']['fraction_of_matmul']:.0f}%)",
                         f"{min(fl['load_1m']):.1f}-{max(fl['load_1m']):.1f}"))
    dc = result.get("decode")
    if dc:
        rows.append((f"epoch data access, {dc['files']} PNG {dc['file_size']} px -> {dc['image_size']} px: "
                     "cache / decode s",
                     f"{dc['cached_epoch_s']:.3f} / {dc['decode_epoch_s']:.3f} ({dc['speedup']:.0f}x faster)",
                     f"{min(dc['load_1m']):.1f}-{max(dc['load_1m']):.1f}"))
        rows.append(("epoch of batches from the in-memory uint8 store (s)", f"{dc['store_batches_epoch_s']:.3f}",
                     ""))
    tc = result.get("teacher_cache")
    if tc:
        rows.append((f"{tc['method']} train_s, teacher cache off / on",
                     f"{tc['train_s_off']:.1f} / {tc['train_s_on']:.1f} s (saves {100 * tc['saving']:.0f}%)",
                     f"{min(tc['load_1m']):.1f}-{max(tc['load_1m']):.1f}"))
        rows.append((f"  same, extrapolated to the profile's {tc['profile_epochs']} epochs (cache built once in "
                     f"{tc['cache_build_s']:.2f} s)", f"saves {100 * tc['projected_saving_at_profile_epochs']:.0f}%",
                     ""))
    th = result.get("threads")
    if th:
        for name, s in th["settings"].items():
            loads = [r["load_1m"] for r in s["runs"]]
            env = ",".join(f"{k}={v}" for k, v in s["env"].items()) or "OpenMP defaults"
            rows.append((f"bare step images/s, {name} ({env}, {s['threads']} threads)", f"{s['images_per_s']:.1f}",
                         f"{min(loads):.1f}-{max(loads):.1f}"))
    pr = result.get("precision")
    if pr:
        for method, table in pr["methods"].items():
            for variant, row in table.items():
                applied = "" if row["effective_precision"] == row["precision"] else " (bf16 not applied: no GPU)"
                rows.append((f"{method}: training images/s, {variant}{applied}, {row['backbone']} "
                             f"{row['image_size']} px, batch {row['batch_size']}, {row['device']}",
                             f"{row['images_per_s']:.1f} ({row['speedup']:.2f}x fp32)" if row["speedup"] else
                             f"{row['images_per_s']:.1f}",
                             f"{min(pr['load_1m']):.1f}-{max(pr['load_1m']):.1f}"))
    width = max((len(r[0]) for r in rows), default=10)
    vwidth = max((len(r[1]) for r in rows), default=10)
    m = result.get("machine", {})
    lines = [f"kdbench perf, profile {result.get('profile')}, SYNTHETIC {result.get('dataset')}; "
             f"{m.get('cpus')} CPUs, {m.get('torch_threads')} torch threads, OMP_WAIT_POLICY "
             f"{m.get('omp_wait_policy')}, torch {m.get('torch')}",
             f"{'measurement'.ljust(width)}  {'value'.ljust(vwidth)}  load (1 min)",
             f"{'-' * width}  {'-' * vwidth}  ------------"]
    lines += [f"{a.ljust(width)}  {b.ljust(vwidth)}  {c}" for a, b, c in rows]
    return "\n".join(lines)
