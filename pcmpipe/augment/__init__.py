"""Augmentation: images (timm) and captions (EDA), for fine-tuning and for extracted views (`--views K`)."""

from pcmpipe.augment.image import SeededImageTransform, image_train_transform, sample_seed
from pcmpipe.augment.text_eda import EDA
from pcmpipe.augment.views import VIEWS_FEATURE, ViewSpec, view_seed

__all__ = [
    "EDA",
    "VIEWS_FEATURE",
    "SeededImageTransform",
    "ViewSpec",
    "image_train_transform",
    "sample_seed",
    "view_seed",
]
