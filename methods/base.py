"""The distiller interface every method implements.

A method is one :class:`Distiller` subclass: an ``nn.Module`` that owns whatever it
trains besides the student (projectors, queries, memory banks, discriminators) and
returns *unweighted* named loss terms from :meth:`Distiller.losses`. The harness
multiplies each term by its weight (``default_weights`` overridden by the config),
sums them, logs every term, and owns the optimiser, the schedule and evaluation.

The harness fills :class:`Outputs` for the student and, unless the method says it
does not need one, for the frozen teacher (``torch.no_grad``, eval mode). Batches are
*class-matched*: row ``i`` of the teacher side always has the student side's class,
so on paired data it is the true twin (``batch.twin[i]`` is ``True``) and on unpaired
data it is a same-class pseudo-pair drawn afresh every epoch.

This module imports nothing from ``benchmark``, and from ``datasets`` only the
regime vocabulary (:mod:`datasets.regimes`, a leaf module).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from datasets.regimes import REGIMES, Regime


@dataclass
class Outputs:
    """What one backbone forward pass yields.

    Attributes:
        logits: ``(B, C)`` class scores.
        embedding: ``(B, D)`` pooled feature that feeds the classifier.
        features: stage feature maps, shallow to deep, each ``(B, C_k, H_k, W_k)``.
            ``features[-1]`` is always the map that is pooled into ``embedding``, so a
            class activation map is ``classifier.weight @ features[-1]``.
        classifier: the linear head (``embedding -> logits``); methods that compute
            CAMs or pass features through the other network's head use it.
    """

    logits: Tensor
    embedding: Tensor
    features: list[Tensor]
    classifier: nn.Linear | None = None

    def detach(self) -> Outputs:
        return Outputs(
            logits=self.logits.detach(),
            embedding=self.embedding.detach(),
            features=[f.detach() for f in self.features],
            classifier=self.classifier,
        )


@dataclass
class Batch:
    """One class-matched training batch.

    Attributes:
        student_x: ``(B, 3, H, W)`` student-side images (WLI, or the single modality).
        teacher_x: ``(B, 3, H, W)`` teacher-side images (NBI twin or same-class NBI
            pseudo-pair; the student's own image in the ``same`` regime); ``None``
            when the method needs no teacher.
        y: ``(B,)`` labels, shared by both sides.
        twin: ``(B,)`` bool, ``True`` where ``teacher_x[i]`` shows the same lesion as
            ``student_x[i]``.
        index: ``(B,)`` position of each student image in the student training pool
            (for memory banks); ``0..num_student_train-1``.
        teacher_index: ``(B,)`` position of each teacher image in the teacher pool.
        epoch: zero-based epoch of this batch.
        num_epochs: epochs of the run, so methods can scale warm-ups.
        step: zero-based optimisation step of the run.
        student_image, teacher_image: the images behind ``student_x``/``teacher_x``
            when those are not images (the outputs of a frozen, cached trunk), or a
            function that makes them on first read (most methods never read them);
            ``None`` otherwise. Read them through :attr:`student_pixels`/:attr:`teacher_pixels`.
    """

    student_x: Tensor
    teacher_x: Tensor | None
    y: Tensor
    twin: Tensor
    index: Tensor
    teacher_index: Tensor
    epoch: int = 0
    num_epochs: int = 1
    step: int = 0
    student_image: Tensor | Callable[[], Tensor] | None = None
    teacher_image: Tensor | Callable[[], Tensor] | None = None

    @property
    def size(self) -> int:
        return int(self.y.shape[0])

    @property
    def student_pixels(self) -> Tensor:
        """The student-side images (for refinements on pixels), whatever the network input is."""
        if callable(self.student_image):
            self.student_image = self.student_image()
        return self.student_x if self.student_image is None else self.student_image

    @property
    def teacher_pixels(self) -> Tensor | None:
        """The teacher-side images, whatever the network input is."""
        if callable(self.teacher_image):
            self.teacher_image = self.teacher_image()
        return self.teacher_x if self.teacher_image is None else self.teacher_image


@dataclass(frozen=True)
class ModelSpec:
    """Shapes of a backbone at the run's image size, for building method modules."""

    name: str
    num_classes: int
    embedding_dim: int
    feature_channels: tuple[int, ...]
    feature_sizes: tuple[tuple[int, int], ...]

    @property
    def num_stages(self) -> int:
        return len(self.feature_channels)


@dataclass
class DistillerContext:
    """What a method may know about the run when it builds its modules.

    Attributes:
        student: shapes of the student backbone.
        teacher: shapes of the teacher backbone (``None`` without a teacher).
        num_classes: number of classes.
        regime: one of :data:`datasets.regimes.REGIMES`.
        num_student_train: size of the student training pool (``batch.index`` range).
        num_teacher_train: size of the teacher pool (``batch.teacher_index`` range).
        student_labels: ``(num_student_train,)`` labels of the student pool.
        teacher_labels: ``(num_teacher_train,)`` labels of the teacher pool.
        num_epochs: epochs of the run.
        steps_per_epoch: optimisation steps per epoch.
        batch_size: rows per batch.
    """

    student: ModelSpec
    teacher: ModelSpec | None
    num_classes: int
    regime: str
    num_student_train: int
    num_teacher_train: int
    student_labels: Tensor
    teacher_labels: Tensor
    num_epochs: int
    steps_per_epoch: int
    batch_size: int


ForwardFn = Callable[[Tensor], Outputs]


class Distiller(nn.Module):
    """Base class of every method (see the module docstring for the contract).

    Class attributes a subclass sets:
        name: registry key, set by :func:`methods.registry.register`.
        summary: one line for ``python -m benchmark list``.
        paper: citation of the source, with the equation the loss implements.
        regimes: regimes the method accepts.
        main_regimes: regimes the default grid runs it in (subset of ``regimes``).
        default_weights: weight of every loss term ``losses`` may return.
        deviations: adaptations (unpaired data, profile scaling) and fixes of the
            official code, in a few sentences; the report shows them.
        needs_teacher: ``False`` for methods without a frozen pretrained teacher
            (e.g. mean-teacher methods that build their own).
        sampler: ``"class_matched"`` (every student image once per epoch) or
            ``"group"`` (class-balanced batches: every class in every batch with a
            fixed group size, PaGKD's requirement).
        teacher_augmented: ``False`` if the method is fine with un-augmented teacher
            inputs (lets the harness cache teacher outputs when the profile allows).
        transforms_inputs: ``True`` if the method runs a network on inputs it makes
            from the batch (rotations, the other modality through the student); such a
            method cannot run where the networks read a frozen trunk's cached outputs
            (profile field ``frozen_stages``), and the harness says so instead of running it.
        options: tunable hyper-parameters with defaults; a config may override them.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    regimes: ClassVar[frozenset[str]] = frozenset(REGIMES)
    main_regimes: ClassVar[frozenset[str]] = frozenset({Regime.UNPAIRED, Regime.ALL})
    default_weights: ClassVar[dict[str, float]] = {"ce": 1.0}
    deviations: ClassVar[str] = ""
    needs_teacher: ClassVar[bool] = True
    sampler: ClassVar[str] = "class_matched"
    teacher_augmented: ClassVar[bool] = True
    transforms_inputs: ClassVar[bool] = False
    options: ClassVar[dict[str, Any]] = {}

    def __init__(self, ctx: DistillerContext, **options: Any) -> None:
        super().__init__()
        unknown = set(options) - set(self.options)
        if unknown:
            raise ValueError(
                f"method {self.name!r} has no option(s) {sorted(unknown)}; "
                f"valid options: {sorted(self.options) or 'none'}"
            )
        self.ctx = ctx
        self.opts: dict[str, Any] = {**self.options, **options}
        # Bound by the harness; kept out of the module tree so that the student's and
        # teacher's parameters never count as the distiller's own.
        self._bound: dict[str, Any] = {}

    # -- wiring done by the harness -------------------------------------------------
    def bind(self, student: nn.Module, teacher: nn.Module | None) -> None:
        """Give the method handles to both networks (called once before training).

        Override to build modules that copy the student (an EMA teacher); call
        ``super().bind`` first.
        """
        self._bound["student"] = student
        self._bound["teacher"] = teacher

    @property
    def student(self) -> nn.Module:
        return self._bound["student"]

    @property
    def teacher(self) -> nn.Module | None:
        return self._bound.get("teacher")

    def student_input(self, batch: Batch) -> Tensor:
        """The images of the harness's student forward pass, whose outputs ``losses``
        receives as ``s``: ``batch.student_x``. A method that trains the student on
        transformed views of the batch (SSD-KD's four rotations) returns them here, so
        every view goes through the one forward pass of the step (one batch-norm update)."""
        return batch.student_x

    def student_forward(self, x: Tensor) -> Outputs:
        """An extra student forward pass (another modality, ...)."""
        return self.student(x)

    @torch.no_grad()
    def teacher_forward(self, x: Tensor) -> Outputs:
        """An extra forward pass of the frozen teacher."""
        if self.teacher is None:
            raise RuntimeError(f"method {self.name!r} asked for a teacher it does not have")
        return self.teacher(x)

    # -- the contract -----------------------------------------------------------------
    def losses(self, s: Outputs, t: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        """Named, unweighted loss terms for one batch. Must include ``"ce"`` unless
        the method deliberately trains without labels at that step."""
        raise NotImplementedError

    def prepare(self, teacher_batches: Iterable[Batch]) -> None:
        """Optional stage before student training (e.g. fitting a teacher-side head).

        ``teacher_batches`` yields class-matched batches of the training pool.
        """

    def after_step(self, batch: Batch) -> None:
        """Optional update after each optimiser step (EMA teachers, momentum banks)."""

    def adversary_parameters(self) -> list[nn.Parameter]:
        """Parameters trained by a separate optimiser against the student
        (discriminators). Their loss comes from :meth:`adversary_losses`."""
        return []

    def adversary_optimizer(self, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
        """The optimiser the harness steps :meth:`adversary_losses` with; ``lr`` is the
        run's student learning rate. Default: Adam at that rate with betas (0.5, 0.999)
        and no weight decay; a method whose paper states other settings overrides it."""
        return torch.optim.Adam(params, lr=lr, betas=(0.5, 0.999))

    def adversary_losses(self, s: Outputs, t: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        """Losses of the adversary; must only reach :meth:`adversary_parameters`."""
        return {}

    def student_parameters(self) -> list[nn.Parameter]:
        """The method's own parameters trained with the student (everything it owns
        except the adversary)."""
        adversary = {id(p) for p in self.adversary_parameters()}
        return [p for p in self.parameters() if id(p) not in adversary]

    # -- helpers ----------------------------------------------------------------------
    @classmethod
    def describe(cls) -> dict[str, Any]:
        """Everything the report and ``list`` show about the method."""
        return {
            "name": cls.name,
            "summary": cls.summary,
            "paper": cls.paper,
            "regimes": sorted(str(r) for r in cls.regimes),
            "main_regimes": sorted(str(r) for r in cls.main_regimes),
            "default_weights": dict(cls.default_weights),
            "options": dict(cls.options),
            "deviations": " ".join(cls.deviations.split()),
            "needs_teacher": cls.needs_teacher,
            "sampler": cls.sampler,
            "transforms_inputs": cls.transforms_inputs,
        }

