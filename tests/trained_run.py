"""A small real run on generated data: synthetic Flickr8k files, tiny random-weight CLIP towers (tests of
pcmpipe.runs and pcmpipe.serve)."""

from __future__ import annotations

from pathlib import Path

import torch
from extraction import extract

from pcmpipe.config import TrainConfig
from pcmpipe.training.stage2 import train

TINY = {"image": "clip-tiny-image", "text": "clip-tiny-text"}


def extract_and_train(data: Path, cache: Path, modalities: list[str], backbones: dict, epochs: int, name: str) -> Path:
    """Extract `modalities` of the Flickr8k layout `data` into `cache` (tiny backbones, weights random:0) and
    train a stage-two run on them, on one thread -> the run directory."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        extract(
            "flickr8k", data, modalities=modalities, backbones=backbones, weights={k: "random:0" for k in backbones},
            device="cpu", workers=0, cache_root=cache,
        )  # fmt: skip
        cfg = TrainConfig.from_dict(
            dict(
                dataset="flickr8k", modalities=",".join(modalities), cache_root=str(cache),
                runs_root=str(cache / "runs"), epochs=epochs, batch_size=8, dim=32, progress=False, name=name,
                device="cpu",
            )
        )  # fmt: skip
        return Path(train(cfg))
    finally:
        torch.set_num_threads(before)
