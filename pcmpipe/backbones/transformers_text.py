"""Any transformers / sentence-transformers text encoder: `hf-text:MODEL`, MODEL a hub id or a local folder.

    create_backbone("hf-text:sentence-transformers/all-MiniLM-L6-v2")          # its published weights
    create_backbone("hf-text:/models/my-bert", weights="random:0")             # that config, seeded random

Features are what sentence-transformers computes for the model: the tokenizer (truncated at the model's
`max_seq_length`), AutoModel's last hidden state, then the pooling the folder's `1_Pooling/config.json` names
(mean over the attention mask by default, as for all-MiniLM-L6-v2; or the CLS token, or the max), then L2
normalisation when `modules.json` lists a Normalize module. A folder without sentence-transformers files is a
plain transformers encoder: mean pooling, no normalisation. Modules this code does not compute (a Dense
projection, ...) are refused rather than silently dropped.

Tokens travel as one LongTensor [N, L] padded with -1 (no real token id is negative), so the extraction's
length-sorted batching applies; each batch is cut to its longest row and padded positions are masked, which
gives the features one-by-one encoding gives.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from pcmpipe.backbones.base import Backbone
from pcmpipe.backbones.transformers_load import load_pretrained
from pcmpipe.backbones.weights import WeightsSpec, state_sha256
from pcmpipe.errors import UserError

POOLINGS = ("mean", "cls", "max")
_KNOWN_MODULES = ("Transformer", "Pooling", "Normalize")
PAD = -1


def _read_json(folder: Path | None, name: str) -> dict | list | None:
    if folder is None or not (folder / name).is_file():
        return None
    return json.loads((folder / name).read_text(encoding="utf-8"))


def sentence_transformers_setup(folder: Path | None) -> tuple[str, bool, int | None]:
    """(pooling, normalise, max_seq_length) as a sentence-transformers folder declares them; plain models: mean."""
    modules = _read_json(folder, "modules.json") or []
    pooling, normalise = "mean", False
    assert isinstance(modules, list)
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        if kind not in _KNOWN_MODULES:
            raise UserError(
                f"{folder}: sentence-transformers module {kind} is not supported (only {', '.join(_KNOWN_MODULES)})"
            )
        if kind == "Normalize":
            normalise = True
        if kind == "Pooling" and folder is not None:
            cfg = _read_json(folder / module.get("path", ""), "config.json") or {}
            assert isinstance(cfg, dict)
            chosen = [
                p for p in POOLINGS if cfg.get(f"pooling_mode_{p}_tokens" if p != "cls" else "pooling_mode_cls_token")
            ]
            if len(chosen) != 1 or any(
                cfg.get(k)
                for k in (
                    "pooling_mode_mean_sqrt_len_tokens",
                    "pooling_mode_weightedmean_tokens",
                    "pooling_mode_lasttoken",
                )
            ):
                raise UserError(f"{folder}: pooling {cfg} is not supported; use one of mean, cls, max")
            pooling = chosen[0]
    st_cfg = _read_json(folder, "sentence_bert_config.json") or {}
    assert isinstance(st_cfg, dict)
    return pooling, normalise, st_cfg.get("max_seq_length")


class TransformersTextBackbone(Backbone):
    """preprocess(list[str]) -> LongTensor [N, L] (-1 = padding); encode -> [B, hidden_size] pooled (normalised
    when the model's config says so)."""

    modality_kind = "text"

    def __init__(self, name: str, arch: str, weights: WeightsSpec, device: torch.device):
        from transformers import AutoModel, AutoTokenizer

        loaded = load_pretrained(arch, weights, AutoModel, AutoTokenizer, "text encoder")
        model, self.tokenizer, folder = loaded.model, loaded.processor, loaded.folder
        self.pooling, self.normalise, max_len = sentence_transformers_setup(folder)
        cfg = model.config
        limits = [max_len, getattr(cfg, "max_position_embeddings", None), self.tokenizer.model_max_length, 512]
        self.max_length = int(min(v for v in limits if isinstance(v, int) and v > 0))
        self.pad_id = int(self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0)
        self.name, self.device = name, device
        self.model = model.eval().to(device)
        self.feature_shape = (int(cfg.hidden_size),)
        vocab = json.dumps(sorted(self.tokenizer.get_vocab().items()), ensure_ascii=False).encode()
        self.meta = {
            "backbone": f"hf-text:{loaded.label}",
            "architecture": {
                "name": cfg.model_type,
                "layers": getattr(cfg, "num_hidden_layers", None),
                "hidden_size": cfg.hidden_size,
                "pooling": self.pooling,
                "normalize": self.normalise,
            },
            "weights": weights.label,
            "weights_sha256": state_sha256(model.state_dict()),
            "preprocess": {
                "tokenizer": type(self.tokenizer).__name__,
                "vocab_sha256": hashlib.sha256(vocab).hexdigest(),
                "lower_case": bool(getattr(self.tokenizer, "do_lower_case", False)),
                "max_length": self.max_length,
            },
        }

    def preprocess(self, texts: list[str]) -> torch.Tensor:
        out = self.tokenizer(
            list(texts), truncation=True, max_length=self.max_length, padding=True, return_tensors="pt"
        )
        return out["input_ids"].masked_fill(out["attention_mask"] == 0, PAD)

    def token_lengths(self, tokens: torch.Tensor) -> torch.Tensor:
        """Real tokens per row: [N, L] -> [N] (for length-sorted batching)."""
        return (tokens != PAD).sum(-1)

    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        """tokens [B, L] -> [B, hidden_size], run on the batch's longest row only."""
        batch = batch[:, : int(self.token_lengths(batch).max())].to(self.device, non_blocking=True)
        mask = batch != PAD
        ids = batch.masked_fill(~mask, self.pad_id)
        hidden = self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state.float()  # [B, L, D]
        m = mask[:, :, None].float()
        if self.pooling == "cls":
            out = hidden[:, 0]
        elif self.pooling == "max":
            out = hidden.masked_fill(m == 0, -1e9).max(1).values
        else:
            out = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(out, dim=-1) if self.normalise else out
