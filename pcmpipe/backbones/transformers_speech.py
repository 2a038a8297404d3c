"""Any transformers speech encoder with hidden states: `hf-audio:MODEL` (HuBERT, wav2vec2, WavLM, ...).

    create_backbone("hf-audio:microsoft/wavlm-base-plus")
    create_backbone("hf-audio:/models/my-wav2vec2", weights="random:0")

The cache keeps what it keeps for HuBERT-Base: the time-mean of every hidden state, [num_layers + 1, hidden]
per utterance. These models share HuBERT's front end, so `SpeechBackbone`'s exact batching and pooling
(speech.py) apply to them unchanged; only the loading differs (AutoModel + AutoFeatureExtractor). A model
without that front end is refused.
"""

from __future__ import annotations

import torch

from pcmpipe.backbones.speech import SpeechBackbone
from pcmpipe.backbones.transformers_load import load_pretrained
from pcmpipe.backbones.weights import WeightsSpec
from pcmpipe.errors import UserError


def _default_extractor():
    from transformers import Wav2Vec2FeatureExtractor

    # a folder without preprocessor_config.json: raw waveforms, as fairseq's HuBERT/wav2vec2-base expect
    return Wav2Vec2FeatureExtractor(do_normalize=False, return_attention_mask=True)


class TransformersSpeechBackbone(SpeechBackbone):
    """preprocess(list of 16 kHz float32 waves) -> dict(input_values, attention_mask); encode -> [B, L + 1, D]."""

    def __init__(self, name: str, arch: str, weights: WeightsSpec, device: torch.device):  # noqa: D107
        from transformers import AutoFeatureExtractor, AutoModel

        loaded = load_pretrained(arch, weights, AutoModel, AutoFeatureExtractor, "speech encoder", _default_extractor)
        model, prep = loaded.model, loaded.processor
        if not hasattr(model, "_get_feat_extract_output_lengths") or not hasattr(model, "feature_extractor"):
            raise UserError(f"{arch} ({model.config.model_type}) is not a wav2vec2-family speech encoder")
        self._setup(name, model, prep, device)
        self.meta = self._meta(f"hf-audio:{loaded.label}", model.config.model_type, weights)
