"""Images to network inputs: uint8 store, tensor augmentations and normalisation.

Images are held once per dataset as a ``(N, 3, H, W)`` uint8 tensor on the training
device; a batch is an index into it, so an epoch never decodes a file. Augmentations
run on the batch tensor: random horizontal and vertical flips and 90-degree rotations
(lesion images have no canonical orientation; PaGKD's code rotates by any angle),
and a mild brightness jitter. Normalisation: ``none`` scales pixels to [0, 1];
``imagenet`` then applies the ImageNet mean and std that go with pretrained weights.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

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

    def batch(
        self,
        table_index: np.ndarray | Tensor,
        normalize: str,
        augment: bool,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        idx = torch.as_tensor(np.asarray(table_index), dtype=torch.long, device=self.device)
        if augment:
            # Same draws and the same pixels as augment_batch on the float batch, but the
            # flips and turns are one gather of uint8 pixels.
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
        code = (draws[:, 0] < 0.5).long() + 2 * (draws[:, 1] < 0.5).long() + 4 * (draws[:, 2] < 0.5).long()
        rows = self.images.view(n, c, h * w).index_select(0, idx)
        where = self._turn_maps.index_select(0, code)[:, None, :].expand(len(idx), c, h * w)
        return torch.gather(rows, 2, where).view(len(idx), c, h, w)


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
    code = torch.arange(8)
    draws = torch.stack([torch.where(code & bit > 0, 0.0, 1.0) for bit in (1, 2, 4)] + [torch.zeros(8)], dim=1)
    pixels = torch.arange(h * w, device=device).view(1, 1, h, w).expand(8, 1, h, w)
    return flip_and_turn(pixels, draws.to(device)).reshape(8, h * w)


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
