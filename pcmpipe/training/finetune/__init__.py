"""The fine-tuning recipe: unfrozen CLIP towers at lr 1e-6 with augmented raw inputs (paper Sec. 4)."""

from pcmpipe.training.finetune.recipe import FinetuneConfig, finetune

__all__ = ["FinetuneConfig", "finetune"]
