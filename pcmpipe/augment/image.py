"""Image augmentation: timm's standard training transform with CLIP's normalisation, seeded per sample.

`timm.data.create_transform(224, is_training=True)` is RandomResizedCrop (scale 0.08-1, ratio 3/4-4/3,
bilinear), horizontal flip p=0.5, ColorJitter 0.4 (brightness, contrast, saturation) and normalisation; we pass
CLIP's mean and std because the CLIP image tower was trained with them. timm's transforms draw from Python's
`random` and torch's global generator; `SeededImageTransform` runs them under a seed derived from
(run seed, epoch, sample) and restores both generators afterwards, so a resumed run or another worker
count gives the same pixels.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import torch
from PIL import Image

# open_clip's OPENAI_DATASET_MEAN / _STD, repeated so importing this module does not import open_clip
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def image_train_transform(size: int = 224, mean=CLIP_MEAN, std=CLIP_STD) -> Callable[[Image.Image], torch.Tensor]:
    """timm's standard training transform: PIL image -> float32 tensor [3, size, size]."""
    from timm.data import create_transform

    return create_transform(size, is_training=True, mean=mean, std=std)


class SeededImageTransform:
    """Wrap a random transform so `t(img, seed)` depends only on (img, seed), not on global RNG state."""

    def __init__(self, transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.transform = transform

    def __call__(self, img: Image.Image, seed: int) -> torch.Tensor:
        py_state = random.getstate()
        try:
            with torch.random.fork_rng(devices=[]):
                random.seed(seed)
                # the CPU generator only: torch.manual_seed would also queue a (costly) lazy CUDA seeding
                torch.default_generator.manual_seed(seed)
                return self.transform(img.convert("RGB"))
        finally:
            random.setstate(py_state)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed per (run seed, epoch, sample index); stable across processes (no hash())."""
    x = (seed * 1_000_003 + epoch) * 1_000_000_007 + index
    x = (x ^ (x >> 31)) * 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF
    return x >> 1
