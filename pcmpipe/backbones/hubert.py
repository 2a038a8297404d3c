"""HuBERT speech encoder (transformers): the time-mean of every hidden state, [L + 1, D] per utterance.

The paper pools HuBERT-Base with SUPERB-style learnable softmax weights over its 13 hidden states; the pooling,
the padding mask and the batching rule shared with every wav2vec2-family encoder are `SpeechBackbone`'s
(speech.py). This module loads HuBERT: the published `facebook/hubert-base-ls960`, a seeded random
architecture (`base`, or `tiny` for tests), another hub repo or a save_pretrained folder.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pcmpipe.backbones.speech import SpeechBackbone
from pcmpipe.backbones.weights import WeightsSpec, fetch_published, seeded
from pcmpipe.errors import UserError

DEFAULT_HUB_ID = "facebook/hubert-base-ls960"

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


class HubertBackbone(SpeechBackbone):
    """HuBERT (`base` or `tiny`): what it takes and gives is `SpeechBackbone`'s."""

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
