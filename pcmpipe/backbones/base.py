"""What every backbone offers the extraction step (and fine-tuning): one frozen-or-not encoder per modality kind.

The contract in full (inputs, preprocessing, batching hook, outputs, fingerprint fields): README.md beside this file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pcmpipe.backbones.batching import length_batches

if TYPE_CHECKING:  # the registry imports this module, and must stay free of torch
    import torch

KINDS = ("image", "text", "audio")


class Backbone:
    """An encoder of one modality kind plus the preprocessing it was trained with.

    Attributes:
        name: registry name, e.g. 'clip-vit-b32-image'.
        modality_kind: 'image' | 'text' | 'audio'.
        model: the nn.Module (eval mode; gradients are left on so fine-tuning can use the same object).
        preprocess: image -> transform(PIL.Image) -> [3, H, W]; text -> tokenizer(list[str]) -> [B, L];
            audio -> prepare(list[np.ndarray]) -> dict(input_values [B, N], attention_mask [B, N]).
        feature_shape: shape of one sample's features, e.g. (512,) or (13, 768).
        meta: JSON-able fingerprint inputs: backbone, architecture, weights, weights_sha256, preprocess.
        device: torch.device the model lives on.
        precision: the arithmetic extraction encodes in (fp32, fp16 or bf16 autocast); None: the device's default.
    """

    name: str
    modality_kind: str
    # open_clip and transformers models: their own methods (encode_image, config, ...) are not nn.Module's
    model: Any
    preprocess: Any
    feature_shape: tuple[int, ...]
    meta: dict
    device: torch.device
    # extraction's arithmetic, fp32 | fp16 | bf16 (`pcmpipe.extract.precision`); None: the device's default
    precision: str | None = None

    def __init__(self, name: str, arch: str, weights: Any, device: torch.device) -> None:
        """Every backbone is built the same way, by `create_backbone`: registry name, architecture key,
        parsed weights spec (`backbones.weights.WeightsSpec`) and device."""
        raise NotImplementedError

    def encode(self, batch: Any) -> torch.Tensor:
        """Features of a preprocessed batch -> float tensor [B, *feature_shape] (no normalisation)."""
        raise NotImplementedError

    def batches(self, lengths: Sequence[int], batch_size: int, max_padding: float | None = None) -> list[list[int]]:
        """The batching hook: which inputs go through `encode` together, as lists of positions in `lengths`.

        lengths: each input's size in the unit `encode` pays for (text: tokens from `token_lengths`; speech:
        16 kHz samples from the file headers; images, preprocessed to one size: 1 each). Every position appears
        in exactly one batch; features must not depend on how inputs are grouped. The default sorts by length
        (stable, so equal lengths keep their order), at most `batch_size` per batch and, with `max_padding`,
        at most that fraction of padding in each.
        """
        return length_batches(lengths, batch_size, None, max_padding)

    def min_length(self) -> int:
        """Fewest units (see `batches`) an input needs to give a feature; shorter inputs are skipped, not encoded."""
        return 1

    def token_lengths(self, tokens: Any) -> torch.Tensor:
        """Text backbones: tokens per row of a preprocessed batch [N, L] -> [N], for length-sorted batching."""
        raise NotImplementedError(f"{type(self).__name__} does not tokenise text")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}, weights={self.meta.get('weights')}, shape={self.feature_shape})"
