"""HuBERT speech encoder (transformers): the time-mean of every hidden state, [L + 1, D] per utterance.

Why the mean of *every* layer: the paper pools HuBERT-Base with SUPERB-style learnable softmax weights over
its 13 hidden states. A weighted sum over layers commutes with the mean over time, so caching the 13 x 768
per-layer means loses nothing and the layer weights live in the stage-two head.

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

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pcmpipe.backbones.base import Backbone
from pcmpipe.backbones.weights import WeightsSpec, fetch_published, seeded, state_sha256
from pcmpipe.errors import UserError

DEFAULT_HUB_ID = "facebook/hubert-base-ls960"
SAMPLE_RATE = 16_000

# Architectures for `random` weights (a checkpoint brings its own config, checked against these sizes).
ARCHS: dict[str, dict] = {
    "base": {},  # HubertConfig() defaults are HuBERT-Base: 12 layers x 768, 7 conv layers, group norm
    "tiny": {
        "hidden_size": 64,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "intermediate_size": 128,
        "conv_dim": (32,) * 7,
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 4,
    },
}


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


def load_hubert(arch: str, weights: WeightsSpec):
    """-> (HubertModel in eval mode, Wav2Vec2FeatureExtractor, source label). UserError if it cannot load."""
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    if weights.kind == "random":
        with seeded(weights.seed):
            model = HubertModel(HubertConfig(**ARCHS[arch]))
        # fairseq's HuBERT-Base was pre-trained on raw (unnormalised) waveforms
        return model.eval(), Wav2Vec2FeatureExtractor(do_normalize=False, return_attention_mask=True)
    if weights.kind == "tag":
        raise UserError(
            f"unknown HuBERT weights {weights.value!r}; use default, hf:ORG/NAME, random[:SEED] "
            "or a save_pretrained directory"
        )
    if weights.kind == "default" and arch != "base":
        raise UserError("hubert-tiny has no published weights; use random[:SEED] or a save_pretrained directory")
    source = DEFAULT_HUB_ID if weights.kind == "default" else weights.value
    if weights.kind == "path" and not (Path(source).is_dir() and (Path(source) / "config.json").is_file()):
        raise UserError(f"HuBERT weights {source} must be a save_pretrained directory (with config.json)")
    try:
        if weights.kind == "path":
            model = HubertModel.from_pretrained(source)
        else:
            model = fetch_published(f"HuBERT {source}", lambda: HubertModel.from_pretrained(source))
    except UserError:
        raise
    except Exception as e:  # bad directory, wrong model type, a broken download
        msg = str(e).splitlines()[0] if str(e) else ""
        raise UserError(
            f"cannot load HuBERT weights {source} ({type(e).__name__}: {msg[:200]}); "
            "pass a local save_pretrained directory or random"
        ) from None
    has_prep = weights.kind != "path" or (Path(source) / "preprocessor_config.json").is_file()
    try:
        if weights.kind == "path":
            prep = (
                Wav2Vec2FeatureExtractor.from_pretrained(source)
                if has_prep
                else Wav2Vec2FeatureExtractor(do_normalize=False, return_attention_mask=True)
            )
        else:  # beside the model on the hub: cached with it, or fetched the same way
            prep = fetch_published(
                f"HuBERT {source} feature extractor", lambda: Wav2Vec2FeatureExtractor.from_pretrained(source)
            )
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"cannot load the HuBERT feature extractor config of {source} ({type(e).__name__})") from None
    return model.eval(), prep


class HubertBackbone(Backbone):
    """HuBERT: preprocess(list of float32 waveforms at 16 kHz) -> dict(input_values, attention_mask);
    encode(that dict) -> [B, num_hidden_layers + 1, hidden_size] time-means over valid frames."""

    modality_kind = "audio"

    def __init__(self, name: str, arch: str, weights: WeightsSpec, device: torch.device):
        model, prep = load_hubert(arch, weights)
        cfg = model.config
        expected = {"hidden_size": 768, "num_hidden_layers": 12, **ARCHS[arch]}
        if weights.kind == "path" and (cfg.hidden_size, cfg.num_hidden_layers) != (
            expected["hidden_size"],
            expected["num_hidden_layers"],
        ):
            raise UserError(
                f"weights {weights.value} are a HuBERT of {cfg.num_hidden_layers} layers x "
                f"{cfg.hidden_size}, not {name}; choose the matching --audio-backbone"
            )
        self._setup(name, model, prep, device)
        self.meta = self._meta(name, "HuBERT", weights)

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
