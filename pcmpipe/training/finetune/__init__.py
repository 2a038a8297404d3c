"""The fine-tuning recipe: unfrozen CLIP towers at lr 1e-6 with augmented raw inputs (paper Sec. 4)."""

from pcmpipe.config import FinetuneConfig
from pcmpipe.training.finetune.recipe import finetune

__all__ = ["FinetuneConfig", "finetune"]
