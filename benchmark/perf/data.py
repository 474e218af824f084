"""The data every timed run trains on: a SYNTHETIC twin in a uint8 store, with one regime's pools."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from datasets.base import DatasetBundle
from datasets.catalog import DataRequest, load_dataset

from ..settings.profiles import Profile, get_profile
from ..training.inputs import ImageStore
from ..training.train import TrainData
from .run_setup import default_device, train_data


@dataclass
class PerfData:
    """One synthetic dataset with its uint8 store and one regime's training pools."""

    bundle: DatasetBundle
    data: TrainData
    profile: Profile
    regime: str

    @property
    def store(self) -> ImageStore:
        return self.data.store


def perf_data(
    profile: Profile | str = "cpu",
    dataset: str = "ih_polyp",
    regime: str = "all",
    device: torch.device | str | None = None,
    bundle: DatasetBundle | None = None,
) -> PerfData:
    """The SYNTHETIC twin of ``dataset`` at the profile's size and scale, as :class:`TrainData`
    (``bundle``: one rendered before, so that several processes render it once)."""
    profile = get_profile(profile) if isinstance(profile, str) else profile
    if bundle is None:
        bundle = render_twin(profile, dataset)
    device = torch.device(device) if device is not None else default_device()
    store = ImageStore(bundle.table.images, device, profile.channels_last)
    return PerfData(bundle=bundle, data=train_data(bundle, regime, profile, store), profile=profile, regime=regime)


def render_twin(profile: Profile, dataset: str = "ih_polyp") -> DatasetBundle:
    """The SYNTHETIC twin of ``dataset`` at the profile's image size and data scale."""
    return load_dataset(
        DataRequest(name=f"{dataset}:synthetic", image_size=profile.image_size, scale=profile.data_scale,
                    min_class_images=profile.min_class_images, val_lesions=profile.val_lesions,
                    test_lesions=profile.test_lesions),
        log=lambda _msg: None,
    )


def expected_images(n_student: int, batch_size: int, epochs: int) -> int:
    """Images one run trains on: every student image once per epoch, less a last batch
    of a single row (dropped by the class-matched sampler and by the bare loop)."""
    rest = n_student % batch_size
    return epochs * (n_student - (rest if rest == 1 else 0))
