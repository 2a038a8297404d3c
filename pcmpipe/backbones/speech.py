"""The speech encoders' shared base (`SpeechBackbone`): wav2vec2-family models (HuBERT, wav2vec2, WavLM, ...).

They share a front end (a strided convolution stack, `_get_feat_extract_output_lengths`, a GroupNorm after the
first convolution in the "group" variants), so one batching rule, one padding mask and one pooling serve them
all; a subclass only loads its model and feature extractor, then calls `_setup` and `_meta`. What is cached is
the time-mean of every hidden state, [num_layers + 1, hidden] per utterance (SUPERB-style layer weights live
in the stage-two head: a weighted sum over layers commutes with the mean over time, so nothing is lost).

Batching without changing results. Padding could leak into the features in two places, and both are closed:
  * the transformer: the attention mask (HF zeroes padded frames before the positional convolution, whose own
    zero padding they then equal, and masks them out of attention);
  * HuBERT-Base's first convolution is followed by a GroupNorm with one group per channel, whose statistics
    run over the whole (padded) time axis. HF therefore advises not to pad such models at all. We swap that
    GroupNorm for `MaskedGroupNorm` (same parameters, same state-dict names), which takes its statistics over
    each utterance's valid frames only. A padded batch then matches one-by-one encoding to float precision.
The per-layer mean is taken over valid frames only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pcmpipe.backbones.base import Backbone
from pcmpipe.backbones.batching import length_batches
from pcmpipe.backbones.weights import WeightsSpec, state_sha256
from pcmpipe.datasets.media import MAX_SECONDS
from pcmpipe.errors import UserError

SAMPLE_RATE = 16_000
# at most this many (padded) waveform samples per speech batch: 80 s of 16 kHz audio keeps the first
# convolution's output (512 channels x 3,200 frames per second, fp32) near 0.5 GB
MAX_AUDIO_SAMPLES = MAX_SECONDS * SAMPLE_RATE
# at most this fraction of a speech batch's padded samples is padding (`pcmpipe extract --max-padding`): on CPU
# the encoder's cost follows the samples processed, so smaller, evenly filled batches beat larger padded ones
SPEECH_MAX_PADDING = 0.05


def speech_batches(
    samples: Sequence[int], batch_size: int, max_padding: float | None = SPEECH_MAX_PADDING
) -> list[list[int]]:
    """The speech batching rule: sorted by length, at most `batch_size` utterances, MAX_AUDIO_SAMPLES padded
    samples and a padding fraction of `max_padding` (None: no bound) per batch."""
    return length_batches(samples, batch_size, MAX_AUDIO_SAMPLES, max_padding)


class MaskedGroupNorm(nn.Module):
    """GroupNorm with one group per channel whose mean/variance use each row's first `valid[b]` frames only.

    Holds the original GroupNorm's `weight` and `bias` (so checkpoints load and save unchanged). With
    `valid` None it is exactly `F.group_norm`. x: [B, C, T] -> [B, C, T].
    """

    def __init__(self, norm: nn.GroupNorm):
        super().__init__()
        if norm.num_groups != norm.num_channels or not norm.affine:
            raise ValueError("MaskedGroupNorm replaces an affine GroupNorm with one group per channel")
        self.num_channels, self.eps = norm.num_channels, norm.eps
        self.weight, self.bias = norm.weight, norm.bias
        self.valid: torch.Tensor | None = None  # [B] frame counts, set around one forward call

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.valid is None:
            return F.group_norm(x, self.num_channels, self.weight, self.bias, self.eps)
        xf = x.float()  # statistics in fp32 under autocast, as F.group_norm does
        mask = (torch.arange(x.shape[-1], device=x.device)[None, :] < self.valid[:, None]).to(xf.dtype)[:, None, :]
        n = self.valid.to(xf.dtype).clamp(min=1)[:, None, None]
        mean = (xf * mask).sum(-1, keepdim=True) / n
        var = (((xf - mean) * mask) ** 2).sum(-1, keepdim=True) / n
        y = (xf - mean) * torch.rsqrt(var + self.eps)
        y = y * self.weight.float()[None, :, None] + self.bias.float()[None, :, None]
        return y.to(x.dtype)


class SpeechBackbone(Backbone):
    """preprocess(list of float32 waveforms at 16 kHz) -> dict(input_values, attention_mask);
    encode(that dict) -> [B, num_hidden_layers + 1, hidden_size] time-means over valid frames."""

    modality_kind = "audio"

    def _setup(self, name: str, model: Any, prep: Any, device: torch.device) -> None:
        """What every wav2vec2-family encoder shares: 16 kHz input, the masked first GroupNorm, the feature shape."""
        if prep.sampling_rate != SAMPLE_RATE:
            raise UserError(f"speech weights expect {prep.sampling_rate} Hz audio; pcmpipe decodes speech at 16 kHz")
        self.name, self.device, self.feature_extractor = name, device, prep
        self.weights_sha256 = state_sha256(model.state_dict())
        first = model.feature_extractor.conv_layers[0]
        self._masked_norm = None
        if isinstance(getattr(first, "layer_norm", None), nn.GroupNorm):
            self._masked_norm = first.layer_norm = MaskedGroupNorm(first.layer_norm)
        self.model = model.to(device)
        cfg = model.config
        self.feature_shape = (cfg.num_hidden_layers + 1, cfg.hidden_size)

    def _meta(self, backbone: str, architecture: str, weights: WeightsSpec) -> dict:
        """The fingerprint inputs of a speech encoder (after `_setup`)."""
        cfg, prep = self.model.config, self.feature_extractor
        return {
            "backbone": backbone,
            "architecture": {
                "name": architecture,
                "layers": cfg.num_hidden_layers,
                "hidden_size": cfg.hidden_size,
                "feat_extract_norm": cfg.feat_extract_norm,
            },
            "weights": weights.label,
            "weights_sha256": self.weights_sha256,
            "preprocess": {
                "sampling_rate": prep.sampling_rate,
                "do_normalize": bool(prep.do_normalize),
                "padding_value": float(prep.padding_value),
                "pooling": "time-mean of every hidden state",
            },
        }

    def preprocess(self, waves: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """Float32 waveforms [N_i] -> input_values [B, N_max] float32, attention_mask [B, N_max] int (1 = sample)."""
        out = self.feature_extractor(
            waves, sampling_rate=SAMPLE_RATE, padding="longest", return_attention_mask=True, return_tensors="pt"
        )
        return {"input_values": out["input_values"], "attention_mask": out["attention_mask"]}

    def num_frames(self, num_samples: Any) -> Any:
        """Transformer frames of waveforms of `num_samples` samples (20 ms hop for HuBERT): int -> int,
        LongTensor [B] -> LongTensor [B]."""
        return self.model._get_feat_extract_output_lengths(num_samples)

    def batches(self, lengths: Sequence[int], batch_size: int, max_padding: float | None = None) -> list[list[int]]:
        """`speech_batches`: lengths are 16 kHz samples; a batch also holds at most MAX_AUDIO_SAMPLES padded."""
        return speech_batches(lengths, batch_size, max_padding)

    def min_length(self) -> int:
        """Fewest samples that give one transformer frame (400 for HuBERT: 25 ms receptive field)."""
        frames = self.num_frames(torch.arange(1, SAMPLE_RATE + 1))
        return int(torch.nonzero(frames >= 1)[0, 0]) + 1

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """-> [B, L + 1, D]: per hidden state, the mean over each utterance's valid frames."""
        values = batch["input_values"].to(self.device, non_blocking=True)
        sample_mask = batch["attention_mask"].to(self.device, non_blocking=True)
        lengths = sample_mask.sum(-1)
        padded = bool((lengths < values.shape[-1]).any())
        if self._masked_norm is not None and padded:
            cfg = self.model.config
            self._masked_norm.valid = (
                torch.div(lengths - cfg.conv_kernel[0], cfg.conv_stride[0], rounding_mode="floor") + 1
            )
        try:
            out = self.model(values, attention_mask=sample_mask if padded else None, output_hidden_states=True)
        finally:
            if self._masked_norm is not None:
                self._masked_norm.valid = None
        frames = self.num_frames(lengths)  # [B]
        hidden = out.hidden_states  # L + 1 tensors [B, T, D]
        keep = torch.arange(hidden[0].shape[1], device=values.device)[None, :] < frames[:, None]
        keep = keep.float()[:, :, None]
        denom = frames.float().clamp(min=1)[:, None]
        # summed in fp32 even under autocast: a mean over ~500 frames in bf16 would lose digits
        return torch.stack([(h.float() * keep).sum(1) / denom for h in hidden], dim=1)
