"""CLIP image and text towers through open_clip: ViT-B/32 (the paper's) and a tiny config for fast tests.

Both sizes take the same path: an open_clip model config dict -> `open_clip.model.CLIP(**cfg)` (seeded when
random) -> weights from an open_clip tag (downloaded by open_clip, e.g. `openai`) or a local checkpoint,
loaded by `open_clip.load_checkpoint` -> the inference image transform of that config. The ViT-B/32
architecture is OpenAI's (QuickGELU), which is what `openai` and any checkpoint fine-tuned from it need;
an open_clip tag trained with plain GELU (e.g. laion2b_s34b_b79k) switches it off, as its config says.

Features are `encode_image` / `encode_text` outputs: [B, embed_dim] (512 for ViT-B/32), unnormalised.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import open_clip
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2
from open_clip.transformer import text_global_pool

from pcmpipe.backbones.base import Backbone
from pcmpipe.backbones.clip_towers import image_preprocess_meta, load_checkpoint, tower_state
from pcmpipe.backbones.open_clip_floor import require_open_clip
from pcmpipe.backbones.weights import WeightsSpec, fetch_published, seeded, state_sha256
from pcmpipe.errors import UserError

DEFAULT_TAG = "openai"

# A ViT with the same code path as ViT-B/32 but ~1/1000 of the compute: 64 px images, 2 layers per tower.
# The text tower keeps CLIP's vocabulary and context so the real tokenizer applies unchanged.
TINY_CONFIG: dict = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}

# architecture key -> (open_clip model name whose pretrained tags apply, or None; config factory)
ARCHS: dict[str, tuple[str | None, Callable[[], dict]]] = {
    "vit-b32": ("ViT-B-32", lambda: {**open_clip.get_model_config("ViT-B-32"), "quick_gelu": True}),
    "tiny": (None, lambda: copy.deepcopy(TINY_CONFIG)),
}


def load_clip(arch: str, weights: WeightsSpec) -> tuple[torch.nn.Module, PreprocessCfg, dict]:
    """Build CLIP `arch` with `weights` -> (model in eval mode on CPU, image preprocess config, arch config).

    UserError for an unknown tag, a tag on the tiny architecture, a download that fails (offline) or a
    checkpoint that does not fit the architecture.
    """
    require_open_clip()  # an older open_clip fails later, on the first caption (open_clip_floor.py)
    model_name, make_cfg = ARCHS[arch]
    cfg = make_cfg()
    pre = PreprocessCfg(size=cfg["vision_cfg"]["image_size"])
    checkpoint = None
    if weights.kind in ("default", "tag"):
        tag = weights.value or DEFAULT_TAG
        if model_name is None:
            raise UserError(f"the tiny CLIP has no published weights ({tag!r}); use random[:SEED] or a checkpoint PATH")
        tag_cfg = open_clip.get_pretrained_cfg(model_name, tag)
        if not tag_cfg:
            tags = ", ".join(open_clip.list_pretrained_tags_by_model(model_name))
            raise UserError(f"unknown CLIP weights {tag!r}; use one of {tags}, random[:SEED] or a checkpoint PATH")
        cfg["quick_gelu"] = bool(tag_cfg.get("quick_gelu", False))
        pre = PreprocessCfg(
            size=pre.size,
            mean=tuple(tag_cfg["mean"]),
            std=tuple(tag_cfg["std"]),
            interpolation=tag_cfg.get("interpolation", "bicubic"),
            resize_mode=tag_cfg.get("resize_mode", "shortest"),
        )
        try:
            checkpoint = fetch_published(f"CLIP {model_name} {tag!r}", lambda: open_clip.download_pretrained(tag_cfg))
        except UserError:
            raise
        except Exception as e:  # proxy, disk full, a broken download: one line the user can act on
            raise UserError(
                f"cannot download CLIP {model_name} weights {tag!r} ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}); pass a local checkpoint PATH"
            ) from None
    elif weights.kind == "path":
        checkpoint = weights.value
    elif weights.kind != "random":
        raise UserError(f"CLIP weights cannot be {weights.kind} {weights.value!r}; use openai, random[:SEED] or a PATH")
    with seeded(weights.seed):
        model = open_clip.model.CLIP(**cfg)
    if checkpoint:
        load_checkpoint(model, checkpoint)
    return model.eval(), pre, cfg


def _load_onto(
    backbone: Backbone, name: str, arch: str, weights: WeightsSpec, device: torch.device
) -> tuple[PreprocessCfg, dict]:
    """What both towers set up alike: the CLIP model on `device`, name and feature shape; -> (preprocess, config)."""
    model, pre, cfg = load_clip(arch, weights)
    backbone.name, backbone.device = name, device
    backbone.model = model.to(device)
    backbone.feature_shape = (int(cfg["embed_dim"]),)
    return pre, cfg


class ClipImageBackbone(Backbone):
    """CLIP image tower: preprocess = open_clip's inference transform (PIL -> [3, S, S]); encode -> [B, D]."""

    modality_kind = "image"

    def __init__(self, name: str, arch: str, weights: WeightsSpec, device: torch.device):
        pre, cfg = _load_onto(self, name, arch, weights, device)
        self.preprocess = image_transform_v2(pre, is_train=False)
        self.meta = {
            "backbone": name,
            "architecture": _arch_label(arch, cfg),
            "weights": weights.label,
            "weights_sha256": state_sha256(tower_state(self.model, "image")),
            "preprocess": image_preprocess_meta(pre),
        }

    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        """batch: [B, 3, S, S] float (already preprocessed) -> [B, D]."""
        return self.model.encode_image(batch.to(self.device, non_blocking=True))


class ClipTextBackbone(Backbone):
    """CLIP text tower: preprocess = open_clip tokenizer (list[str] -> [B, 77] int64); encode -> [B, D]."""

    modality_kind = "text"

    def __init__(self, name: str, arch: str, weights: WeightsSpec, device: torch.device):
        _, cfg = _load_onto(self, name, arch, weights, device)
        self.preprocess = open_clip.get_tokenizer("ViT-B-32", context_length=cfg["text_cfg"]["context_length"])
        self.meta = {
            "backbone": name,
            "architecture": _arch_label(arch, cfg),
            "weights": weights.label,
            "weights_sha256": state_sha256(tower_state(self.model, "text")),
            "preprocess": {
                "tokenizer": "open_clip SimpleTokenizer (CLIP BPE, lower-cased, ftfy)",
                "context_length": cfg["text_cfg"]["context_length"],
            },
        }

    def token_lengths(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens per row up to end-of-text: [N, L] -> [N] (the extraction sorts captions by it)."""
        return token_lengths(tokens)

    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        """batch: token ids [B, L] (L <= context) -> [B, D], computed on the batch's longest sequence only."""
        return encode_text_trimmed(self.model, batch.to(self.device, non_blocking=True))


def token_lengths(tokens: torch.Tensor) -> torch.Tensor:
    """Tokens up to and including end-of-text per row: [B, L] -> [B] (EOT is the largest id in CLIP's vocab)."""
    return tokens.argmax(dim=-1) + 1


def encode_text_trimmed(model: Any, tokens: torch.Tensor) -> torch.Tensor:
    """open_clip `CLIP.encode_text` on tokens cut to the batch's longest sequence: [B, L] -> [B, D].

    Exact, not an approximation: the text tower's attention is causal and the feature is read at the
    end-of-text position, so no position at or before it ever attends to the padding that is removed.
    The positional embedding and the causal mask are sliced to the kept length.
    """
    length = int(token_lengths(tokens).max())
    text = tokens[:, :length]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(text).to(cast_dtype)
    x = x + model.positional_embedding[:length].to(cast_dtype)
    mask = model.attn_mask[:length, :length] if model.attn_mask is not None else None
    x = model.transformer(x, attn_mask=mask)
    x = model.ln_final(x)
    x = text_global_pool(x, text, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    if model.text_projection is not None:
        proj = model.text_projection
        x = proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj
    return x


def _arch_label(arch: str, cfg: dict) -> dict:
    v, t = cfg["vision_cfg"], cfg["text_cfg"]
    return {
        "name": ARCHS[arch][0] or f"clip-{arch}",
        "embed_dim": cfg["embed_dim"],
        "quick_gelu": cfg["quick_gelu"],
        "vision": {k: v[k] for k in ("image_size", "layers", "width", "patch_size")},
        "text": {k: t[k] for k in ("context_length", "width", "layers")},
    }
