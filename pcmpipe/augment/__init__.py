"""Training-time augmentation for the fine-tuning stage: images (timm) and captions (EDA)."""

from pcmpipe.augment.image import SeededImageTransform, image_train_transform, sample_seed
from pcmpipe.augment.text_eda import EDA

__all__ = ["EDA", "SeededImageTransform", "image_train_transform", "sample_seed"]
