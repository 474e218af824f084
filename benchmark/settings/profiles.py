"""Named bundles of backbone, image size, schedule and data scale: the one place where
the suite's compute settings live.

- ``smoke``: seconds per run; what the tests use.
- ``cpu``: the default; the whole ``./run_all.sh`` grid on a 2-core CPU.
- ``paper``: the PaGKD paper's setting (ImageNet-initialised ResNet-50 teacher and
  student, 448 px, Adam 1e-4, weight decay 1e-8, batch 24), for real data and a GPU. The
  ImageNet weights are timm's (``pretrained="timm"``: read from the local Hugging Face
  cache, or the hub when ``HF_HUB_OFFLINE=0``) or ``--pretrained PATH``; without either
  the grid stops before its first run (never a silent random start).

Every field can be overridden from the command line or a grid file; the resolved
values are stored in each run file.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Profile:
    """Compute settings of a run.

    Attributes:
        name: profile name.
        backbone: timm name of the student (``kdbench_cnn4`` is the suite's own small CNN).
        teacher_backbone: timm name of the teacher.
        image_size: square side in pixels at which images are decoded and trained.
        epochs: student epochs.
        teacher_epochs: teacher epochs (teachers are cached per dataset/seed/profile).
        batch_size: rows per batch (student and teacher side each).
        group_size: images per class per batch for group samplers (``0``: batch_size
            divided by the class count).
        optimizer: ``adam`` or ``sgd``.
        lr, teacher_lr, weight_decay, momentum: optimiser settings.
        data_scale: fraction of the paper's split sizes rendered for synthetic twins.
        min_class_images: floor on rendered images per class and split role.
        val_lesions, test_lesions: validation and test lesions of a synthetic twin, sized
            for precision rather than by the paper's split sizes (``0``: the paper's
            fractions of the paired pool times ``data_scale``); training sets keep the
            paper's sizes times ``data_scale``. Real data keeps its own splits.
        oracle_factor: k >= 2 renders k - 1 times the WLI training lesions as extra
            lesions of each synthetic cross-modal twin, and the grid adds the WLI-oracle
            reference run (the baseline trained on k times the WLI training lesions of
            ``all``) per dataset and seed; ``0``: no oracle.
        augment: random flips/rotations/crops on training images.
        precision: accelerate mixed precision (``no``, ``bf16``, ``fp16``).
        channels_last: use the channels-last memory format.
        teacher_cache: reuse teacher outputs computed once per run when the method does
            not need augmented teacher inputs.
        pretrained: ``""`` (random init), ``builtin`` (packaged weights), ``timm`` (timm's
            ImageNet weights from the local Hugging Face cache) or a checkpoint path.
        normalize: input normalisation, ``none`` (pixels scaled to [0, 1]) or
            ``imagenet`` (the mean/std that go with ImageNet-pretrained weights).
        val_every: validate every k epochs (model selection on validation AUC).
        min_steps: floor on optimiser steps (``0``: epochs only): a run trains
            ``max(epochs, ceil(min_steps / steps_per_epoch))`` epochs, so a small training
            set still gets ``min_steps`` steps (:mod:`benchmark.training.schedule`); validations keep
            the cadence of the profile's epochs.
        teacher_min_steps: floor on the teacher's optimiser steps, when it needs more than
            ``min_steps`` (``0``: ``min_steps`` alone). A teacher trains on one modality's
            own training images, often fewer than the student's pools, and is trained once
            per dataset and seed.
        frozen_stages: freeze the stem and this many stages of both networks (their
            pretrained weights stay as loaded) and train the rest; the frozen trunk's outputs
            are computed once per image and flip/turn variant
            (:mod:`benchmark.models.trunk`; ``0``: fine-tune the whole network).
            Methods that run a network on inputs of their own (rotations) cannot run
            then and are reported as unsupported.
        head_init: ``""`` (the backbone's own head: random for a new class count) or
            ``probe`` (LP-FT: the head starts as the logistic regression on the network's
            own frozen features, C chosen on validation, and the starting network is
            validated too; :func:`benchmark.training.probe.fit_head_to_probe`).
        frozen_bn: keep every batch-norm layer of the trained network in inference mode
            (the pretrained running statistics normalise, only the affine weights
            train), as fine-tuning on batches of a few images usually does; with a
            probe-initialised head the starting network is then exactly the linear probe.
        teacher_seed: ``-1``: each training seed distils from a teacher trained with that
            seed (the teacher's own randomness is part of every seed); ``k >= 0``: one teacher,
            trained with seed k, serves every seed (per fold under k-fold cross-validation), as
            in the papers, which distil from one trained teacher: the seeds then vary the
            student alone, and the comparisons hold for that teacher.
        max_steps: cap on a student's optimiser steps (``0``: none): a run whose profile
            epochs would take more steps trains ``max(1, max_steps // steps_per_epoch)``
            epochs instead, validated about as often (:mod:`benchmark.training.schedule`).
            The WLI oracle trains the epochs of its ``all`` baseline on its larger pool (the
            same recipe, k times the data). Teachers have no cap.
        selection: which validated checkpoint a run keeps: ``best`` (highest validation
            AUC, the earliest on ties) or ``one_se`` (the earliest within one DeLong
            standard error of the highest; :func:`benchmark.training.train.one_standard_error_choice`).
        bn_recalibration: before each validation, replace batch-norm running statistics
            by the batch statistics of this many un-augmented training images
            (PreciseBN; ``0``: off). Short schedules need it: after a few dozen steps the
            moving averages still lag the weights and the network predicts one class.
    """

    name: str
    backbone: str
    teacher_backbone: str
    image_size: int
    epochs: int
    teacher_epochs: int
    batch_size: int
    group_size: int = 0
    optimizer: str = "adam"
    lr: float = 1e-3
    teacher_lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    data_scale: float = 1.0
    min_class_images: int = 8
    val_lesions: int = 0
    test_lesions: int = 0
    oracle_factor: int = 0
    augment: bool = True
    precision: str = "no"
    channels_last: bool = False
    teacher_cache: bool = False
    pretrained: str = ""
    normalize: str = "none"
    val_every: int = 1
    bn_recalibration: int = 0
    min_steps: int = 0
    teacher_min_steps: int = 0
    frozen_stages: int = 0
    head_init: str = ""
    frozen_bn: bool = False
    selection: str = "best"
    teacher_seed: int = -1
    max_steps: int = 0

    def replace(self, **overrides: Any) -> Profile:
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown profile field(s) {sorted(unknown)}; valid: {sorted(self.as_dict())}")
        return dataclasses.replace(self, **overrides)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def seed_of_teacher(self, seed: int) -> int:
        """The seed of the teacher that a run with training seed ``seed`` distils from."""
        return seed if self.teacher_seed < 0 else self.teacher_seed


PROFILES: dict[str, Profile] = {
    # Schedule rule: 2 epochs, no step floor (tests exercise code paths, not accuracy).
    "smoke": Profile(
        name="smoke",
        backbone="kdbench_cnn4",
        teacher_backbone="kdbench_cnn4",
        image_size=24,
        epochs=2,
        teacher_epochs=2,
        batch_size=16,
        data_scale=0.02,
        min_class_images=6,
        bn_recalibration=64,
    ),
    # Schedule rule: 10 student epochs, no student step floor (its synthetic training sets
    # give 4-16 steps per epoch) and no cap; 40 teacher epochs, but at least 320 teacher
    # steps.
    "cpu": Profile(
        name="cpu",
        # Output stride 4: the last stage is 6x6 at 24 px, a map that CAMs, SRCA and
        # masked attention can work on. Same architecture on both sides, as in the paper
        # (ResNet-50 -> ResNet-50): the teacher's advantage comes from its modality.
        backbone="kdbench_cnn4_os4_mid",
        teacher_backbone="kdbench_cnn4_os4_mid",
        image_size=24,
        epochs=10,
        # The NBI teacher sees 100-170 training images; 20 epochs left it 5-10 AUC points
        # short of what its modality shows (polypset twin: 79 vs 90 at 40 epochs).
        teacher_epochs=40,
        # ... and at least 320 optimiser steps: 40 epochs are 120-240 steps on most twins but
        # 160 on polypset, where 14 of 20 teachers were still improving at their last
        # validation (test AUC 92.4 over seeds 0-19, under its WLI oracle's 92.9). At 320
        # steps its seeds 0-9 reach 94.5 (91.9 at 160 steps; README, "Calibration").
        teacher_min_steps=320,
        # One NBI teacher per twin (trained with seed 0) serves every seed, as the papers
        # distil from one trained teacher; the seeds vary the student.
        teacher_seed=0,
        batch_size=32,
        lr=2e-3,
        teacher_lr=2e-3,
        data_scale=0.12,
        min_class_images=24,
        # Held-out sets sized for precision: 1,000 test lesions give a per-run AUC
        # standard error near 1.5 points; 300 validation lesions select the checkpoint.
        val_lesions=300,
        test_lesions=1000,
        oracle_factor=5,
        channels_last=True,
        # Validation (300 lesions, after batch-norm recalibration) at epochs 5 and 10:
        # with precision-sized held-out sets, validating every epoch would cost more
        # than the training steps of a small twin.
        val_every=5,
        bn_recalibration=256,
    ),
    # Schedule rule: the paper's 200 epochs, no step floor.
    "paper": Profile(
        name="paper",
        backbone="resnet50",
        teacher_backbone="resnet50",
        image_size=448,
        epochs=200,
        teacher_epochs=200,
        batch_size=24,
        optimizer="adam",
        lr=1e-4,
        teacher_lr=1e-4,
        weight_decay=1e-8,
        data_scale=1.0,
        precision="bf16",
        channels_last=True,
        val_every=1,
        # PaGKD, ADD, CRCKD and SSD-KD all start from ImageNet weights.
        pretrained="timm",
        normalize="imagenet",
    ),
    # Small real datasets (a few dozen to a few hundred lesions) on a CPU: ImageNet-pretrained
    # EfficientNet-Lite0 student and Lite2 teacher from the packaged offline weights
    # (benchmark/models/weights.py), fine-tuned as LP-FT (Kumar et al., ICLR 2022): the head
    # starts as the linear probe of the network's own features, only the last stage and the
    # 1x1 head conv train (the frozen trunk's outputs are cached), batch norm keeps its
    # ImageNet statistics (so the starting network is exactly the probe, and a candidate
    # for selection), and Adam runs at a small learning rate. Schedule rule: 8 epochs, but
    # at least 200 optimiser steps of 16 images (a 50-image training set trains 67 epochs),
    # validated about 8 times and once before the first step; the earliest checkpoint within
    # one standard error of the best validation AUC is kept. Chosen on the 76-lesion
    # stand-in with the baseline and the teacher against their probes (README, "Small real
    # datasets"), never with a distillation method.
    "real": Profile(
        name="real",
        backbone="efficientnet_lite0",
        teacher_backbone="efficientnet_lite2",
        image_size=112,
        epochs=8,
        teacher_epochs=8,
        batch_size=16,
        min_steps=200,
        optimizer="adam",
        lr=5e-5,
        teacher_lr=5e-5,
        weight_decay=1e-5,
        data_scale=0.15,
        min_class_images=24,
        pretrained="builtin",
        normalize="imagenet",
        frozen_stages=6,
        head_init="probe",
        frozen_bn=True,
        # Inner validation splits of about 12 lesions: keep the earliest checkpoint within
        # one standard error of the best instead of the noisiest maximum.
        selection="one_se",
    ),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        close = difflib.get_close_matches(name, PROFILES, n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown profile {name!r}.{hint} Profiles: {', '.join(PROFILES)}")
    return PROFILES[name]
