"""Images to network inputs: uint8 store, tensor augmentations and normalisation.

Images are held once per dataset as a ``(N, 3, H, W)`` uint8 tensor on the training
device; a batch is an index into it, so an epoch never decodes a file. A network with a
frozen trunk (profile field ``frozen_stages``) reads the trunk's outputs instead, from a
:class:`TrunkStore` that computes each image's trunk output once per augmentation
variant. Augmentations
run on the batch tensor: random horizontal and vertical flips and 90-degree rotations
(lesion images have no canonical orientation; PaGKD's code rotates by any angle),
and a mild brightness jitter. Normalisation: ``none`` scales pixels to [0, 1];
``imagenet`` then applies the ImageNet mean and std that go with pretrained weights.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageStore:
    """All images of a dataset as one uint8 tensor on ``device``."""

    def __init__(self, images: np.ndarray, device: torch.device, channels_last: bool = False) -> None:
        t = torch.from_numpy(np.array(images, copy=True)).permute(0, 3, 1, 2).contiguous()
        self.images = t.to(device)
        self.device = device
        self.channels_last = channels_last
        self._turn_maps: Tensor | None = None
        self._trunk_stores: dict[tuple, TrunkStore] = {}

    def for_model(self, model: nn.Module, normalize: str) -> ImageStore | TrunkStore:
        """Where ``model`` reads its inputs: this store, or, for a backbone with a frozen
        trunk, the :class:`TrunkStore` of that trunk (one per backbone and weights, shared
        by every run of the process)."""
        depth = int(getattr(model, "trunk_depth", 0))
        if depth <= 0:
            return self
        weights = getattr(model, "weights", {}) or {}
        if weights.get("origin", "random") == "random":
            raise ValueError(f"a frozen trunk (frozen_stages={depth}) needs pretrained weights; backbone "
                             f"{getattr(model, 'name', '?')!r} starts from random ones. Set --pretrained, or "
                             "--frozen-stages 0")
        key = (getattr(model, "name", ""), weights.get("spec"), weights.get("origin"), weights.get("sha256"), depth,
               normalize)
        if key not in self._trunk_stores:
            self._trunk_stores[key] = TrunkStore(self, model.trunk(), normalize)
        return self._trunk_stores[key]

    def batch(
        self,
        table_index: np.ndarray | Tensor,
        normalize: str,
        augment: bool,
        generator: torch.Generator | None = None,
        draws: Tensor | None = None,
    ) -> Tensor:
        """Network inputs of ``table_index``; augmented with ``draws``, or with new draws
        from ``generator`` when none are given."""
        idx = torch.as_tensor(np.asarray(table_index), dtype=torch.long, device=self.device)
        if augment:
            # Same draws and the same pixels as augment_batch on the float batch, but the
            # flips and turns are one gather of uint8 pixels.
            if draws is None:
                draws = augment_draws(len(idx), generator, self.device)
            x = brightness(self.flipped_and_turned(idx, draws).float().div_(255.0), draws)
        else:
            x = self.images.index_select(0, idx).float().div_(255.0)
        x = normalize_batch(x, normalize)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def flipped_and_turned(self, idx: Tensor, draws: Tensor) -> Tensor:
        """``flip_and_turn(self.images[idx], draws)`` as a single gather: each row's
        flips and turn pick one of eight precomputed pixel permutations."""
        n, c, h, w = self.images.shape
        if self._turn_maps is None:
            self._turn_maps = turn_maps(h, w, self.device)
        code = flip_turn_code(draws)
        rows = self.images.view(n, c, h * w).index_select(0, idx)
        where = self._turn_maps.index_select(0, code)[:, None, :].expand(len(idx), c, h * w)
        return torch.gather(rows, 2, where).view(len(idx), c, h, w)


class TrunkStore:
    """The outputs of a frozen trunk on every image of an :class:`ImageStore`, computed
    once per (image, flip/turn variant) on first use and then read from memory.

    Augmentation draws the same flips and 90-degree turns as the image store (eight
    variants of each image, all cached); the brightness jitter is not applied, since a
    cached variant cannot carry a fresh gain. :meth:`batch` has the image store's
    signature, so the training loop, prediction and batch-norm recalibration read a
    trunk store as they read images; :meth:`pixels` returns the images a batch shows,
    for methods that refine maps on pixels.
    """

    VARIANTS = 8

    def __init__(self, images: ImageStore, trunk: nn.Module, normalize: str) -> None:
        self.images = images
        # a copy: the network it came from switches its modules to training mode
        self.trunk = copy.deepcopy(trunk).eval().requires_grad_(False)
        self.normalize = normalize
        self.device = images.device
        self.channels_last = images.channels_last
        self._features: Tensor | None = None
        self._filled = torch.zeros(self.VARIANTS, len(images.images), dtype=torch.bool, device=self.device)

    def pixels(self, table_index: np.ndarray | Tensor, draws: Tensor | None) -> Tensor:
        """The normalised images behind :meth:`batch` (flipped and turned, no brightness)."""
        if draws is None:
            return self.images.batch(table_index, self.normalize, augment=False)
        unit_gain = draws.clone()
        unit_gain[:, 3] = 0.5  # brightness gain exactly 1
        return self.images.batch(table_index, self.normalize, augment=True, draws=unit_gain)

    @torch.no_grad()
    def _fill(self, idx: Tensor, variant: Tensor, batch_size: int = 128) -> None:
        todo = ~self._filled[variant, idx]
        if not bool(todo.any()):
            return
        rows = torch.nonzero(todo).flatten()
        # one computation per missing (image, variant), even when a batch repeats it
        pairs = torch.unique(variant[rows] * len(self.images.images) + idx[rows])
        miss_idx, miss_var = pairs % len(self.images.images), pairs // len(self.images.images)
        variant_draws = variant_draws_table(self.device)[miss_var]
        for start in range(0, len(miss_idx), batch_size):
            part_idx, part_draws = miss_idx[start:start + batch_size], variant_draws[start:start + batch_size]
            out = self.trunk(self.pixels(part_idx, part_draws)).float()
            if self._features is None:
                self._features = torch.zeros(self.VARIANTS, len(self.images.images), *out.shape[1:],
                                             device=self.device)
            self._features[miss_var[start:start + batch_size], part_idx] = out
        self._filled[miss_var, miss_idx] = True

    def batch(
        self,
        table_index: np.ndarray | Tensor,
        normalize: str,
        augment: bool,
        generator: torch.Generator | None = None,
        draws: Tensor | None = None,
    ) -> Tensor:
        if normalize != self.normalize:
            raise ValueError(f"trunk store built for normalisation {self.normalize!r}, asked for {normalize!r}")
        idx = torch.as_tensor(np.asarray(table_index), dtype=torch.long, device=self.device)
        if augment and draws is None:
            draws = augment_draws(len(idx), generator, self.device)
        variant = flip_turn_code(draws) if augment else torch.zeros(len(idx), dtype=torch.long, device=self.device)
        self._fill(idx, variant)
        assert self._features is not None
        x = self._features[variant, idx]
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def flip_turn_code(draws: Tensor) -> Tensor:
    """The flip/turn pattern of each row's draws, ``hflip + 2 * vflip + 4 * turn`` (0-7)."""
    return (draws[:, 0] < 0.5).long() + 2 * (draws[:, 1] < 0.5).long() + 4 * (draws[:, 2] < 0.5).long()


def variant_draws_table(device: torch.device | str = "cpu") -> Tensor:
    """``(8, 4)`` draws that reproduce flip/turn pattern ``code = hflip + 2 * vflip + 4 * turn``
    (a draw below 0.5 applies its transform; brightness gain 1)."""
    code = torch.arange(8)
    flags = [torch.where(code & bit > 0, 0.0, 1.0) for bit in (1, 2, 4)]
    return torch.stack([*flags, torch.full((8,), 0.5)], dim=1).to(device)


def augment_batch(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Per-sample random flips, 90-degree rotations (square images) and brightness."""
    draws = augment_draws(x.shape[0], generator, x.device)
    return brightness(flip_and_turn(x, draws), draws)


def augment_draws(n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """``(n, 4)`` uniform draws: horizontal flip, vertical flip, turn, brightness."""
    return torch.rand(n, 4, generator=generator).to(device)


def flip_and_turn(x: Tensor, draws: Tensor) -> Tensor:
    """Flip each row horizontally/vertically where its draw is below 0.5, and transpose
    it (with the flips: a 90-degree turn) when the images are square; any dtype."""
    x = torch.where((draws[:, 0] < 0.5)[:, None, None, None], x.flip(-1), x)
    x = torch.where((draws[:, 1] < 0.5)[:, None, None, None], x.flip(-2), x)
    if x.shape[-1] == x.shape[-2]:
        x = torch.where((draws[:, 2] < 0.5)[:, None, None, None], x.transpose(-1, -2), x)
    return x


def turn_maps(h: int, w: int, device: torch.device | str = "cpu") -> Tensor:
    """``(8, h * w)`` source pixel of each output pixel under :func:`flip_and_turn`, for
    the draw pattern ``code = hflip + 2 * vflip + 4 * turn``."""
    pixels = torch.arange(h * w, device=device).view(1, 1, h, w).expand(8, 1, h, w)
    return flip_and_turn(pixels, variant_draws_table(device)).reshape(8, h * w)


def brightness(x: Tensor, draws: Tensor) -> Tensor:
    """Scale each row of a [0, 1] float batch by a gain in [0.9, 1.1], then clamp to [0, 1]."""
    gain = 1.0 + 0.2 * (draws[:, 3] - 0.5)
    return (x * gain[:, None, None, None]).clamp_(0.0, 1.0)


def normalize_batch(x: Tensor, mode: str) -> Tensor:
    if mode == "none":
        return x
    if mode == "imagenet":
        mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype)[None, :, None, None]
        std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype)[None, :, None, None]
        return (x - mean) / std
    raise ValueError(f"unknown normalisation {mode!r}; use 'none' or 'imagenet'")
