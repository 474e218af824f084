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

    def batch(
        self,
        table_index: np.ndarray | Tensor,
        normalize: str,
        augment: bool,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        idx = torch.as_tensor(np.asarray(table_index), dtype=torch.long, device=self.device)
        x = self.images.index_select(0, idx).float().div_(255.0)
        if augment:
            x = augment_batch(x, generator)
        x = normalize_batch(x, normalize)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def augment_batch(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Per-sample random flips, 90-degree rotations (square images) and brightness."""
    n = x.shape[0]
    draws = torch.rand(n, 4, generator=generator).to(x.device)
    hflip = draws[:, 0] < 0.5
    x = torch.where(hflip[:, None, None, None], x.flip(-1), x)
    vflip = draws[:, 1] < 0.5
    x = torch.where(vflip[:, None, None, None], x.flip(-2), x)
    if x.shape[-1] == x.shape[-2]:
        rot = draws[:, 2] < 0.5
        x = torch.where(rot[:, None, None, None], x.transpose(-1, -2), x)
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
