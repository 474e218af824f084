"""Cost of one training step of PaGKD against the student-only baseline (pytest-benchmark).

Kept out of the default run by the ``perf`` marker. Run:

    .venv/bin/python -m pytest tests/perf -m perf --benchmark-only

(``--benchmark-only``, not ``--benchmark-enable``: the project's pytest ``addopts`` carry
``--benchmark-skip``, which ``--benchmark-enable`` does not lift.)

One step = student forward, frozen-teacher forward (``no_grad``; not for ``baseline``),
the method's loss terms, backward and an Adam step, on the ``cpu`` profile's shapes
(``kdbench_cnn4`` student, ``kdbench_cnn4_wide`` teacher, 32 px, 3 classes, group size
32 // 3 = 10, so 30 rows) after the warm-up. Every method gets the same 30-row batch. The
ratio pagkd / baseline is the mean time of the two cases (``--benchmark-group-by=group``
puts them in one table). The CUDA case measures the peak memory of one ``pagkd`` step on
the ``paper`` profile's shapes (ResNet-50, 448 px, batch 24, 3 classes) when a GPU is present.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import methods
from benchmark.models.backbones import create_backbone
from benchmark.settings.profiles import PROFILES
from methods import Batch, DistillerContext

pytestmark = pytest.mark.perf

NUM_CLASSES = 3


def build_step(method: str, profile_name: str = "cpu", device: str = "cpu"):
    profile = PROFILES[profile_name]
    torch.manual_seed(0)
    student = create_backbone(profile.backbone, NUM_CLASSES).to(device)
    teacher = create_backbone(profile.teacher_backbone, NUM_CLASSES).to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    group = profile.group_size or profile.batch_size // NUM_CLASSES
    y = torch.arange(NUM_CLASSES, device=device).repeat_interleave(group)
    rows = y.numel()
    labels = torch.arange(NUM_CLASSES).repeat(50)
    ctx = DistillerContext(
        student=student.spec(profile.image_size), teacher=teacher.spec(profile.image_size),
        num_classes=NUM_CLASSES, regime="unpaired", num_student_train=len(labels), num_teacher_train=len(labels),
        student_labels=labels, teacher_labels=labels, num_epochs=profile.epochs, steps_per_epoch=10,
        batch_size=profile.batch_size,
    )
    distiller = methods.create(method, ctx)
    distiller.bind(student, teacher)
    distiller.to(device)
    params = list(student.parameters()) + list(distiller.student_parameters())
    optimizer = torch.optim.Adam(params, lr=profile.lr, weight_decay=profile.weight_decay)
    size = profile.image_size
    batch = Batch(
        student_x=torch.rand(rows, 3, size, size, device=device),
        teacher_x=torch.rand(rows, 3, size, size, device=device),
        y=y, twin=torch.zeros(rows, dtype=torch.bool, device=device), index=torch.arange(rows, device=device),
        teacher_index=torch.arange(rows, device=device), epoch=profile.epochs - 1, num_epochs=profile.epochs,
    )
    weights = distiller.default_weights
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda" and profile.precision == "bf16")

    def step() -> float:
        t_out = None
        if distiller.needs_teacher:
            with torch.no_grad(), autocast:
                t_out = teacher(batch.teacher_x)
        with autocast:
            s_out = student(batch.student_x)
            terms = distiller.losses(s_out, t_out, batch)
            total = sum(terms[k] * weights[k] for k in terms)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        return float(total.detach())

    return step


@pytest.mark.parametrize("method", ["baseline", "pagkd", "pagkd-released"])
def test_training_step_cpu_profile(benchmark, method):
    step = build_step(method)
    step()  # first call: lazy initialisation outside the timing
    benchmark.group = "training step, cpu profile shapes (30 rows, 32 px)"
    benchmark.extra_info["method"] = method
    loss = benchmark.pedantic(step, rounds=10, iterations=1, warmup_rounds=1)
    assert torch.isfinite(torch.tensor(loss))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_paper_profile_step_memory_on_gpu(benchmark):
    step = build_step("pagkd", "paper", "cuda")
    step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()

    def timed() -> float:
        loss = step()
        torch.cuda.synchronize()
        return loss

    benchmark.pedantic(timed, rounds=3, iterations=1)
    peak = torch.cuda.max_memory_allocated() / 2**30
    benchmark.extra_info["peak_memory_gib"] = round(peak, 2)
    assert peak < 80, f"one paper-profile pagkd step took {peak:.1f} GiB"


def test_masked_attention_cost_is_the_quadratic_part(benchmark):
    """SRCA alone at the paper profile's group size (L_c = 8 * 196 = 1568 tokens, d = 128)."""
    from methods._dense import relation_mask
    from methods.pagkd import SRCA

    torch.manual_seed(0)
    srca = SRCA(128)
    feats_q = torch.randn(3, 1568, 128, requires_grad=True)
    feats_k = torch.randn(3, 1568, 128, requires_grad=True)
    labels = torch.randint(-1, 2, (3, 1568))
    mask = relation_mask(labels, labels)

    def run() -> float:
        out = srca(feats_q, feats_k, mask)
        loss = F.mse_loss(out, feats_q)
        loss.backward()
        return float(loss)

    benchmark.group = "SRCA, paper-profile group (3 x 1568 tokens)"
    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
