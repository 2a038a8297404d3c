"""Any open_clip model, image or text tower: `open_clip:MODEL[@TAG]`.

    open_clip:ViT-B-32@laion2b_s34b_b79k          an architecture open_clip knows, with a pretrained tag
    open_clip:ViT-L-14 + --weights-image openai    the same, the tag given as the weights
    open_clip:hf-hub:timm/ViT-SO400M-14-SigLIP     a hub repo with open_clip_config.json and its weights
    open_clip:local-dir:/models/my-clip            the same layout in a local folder

Weights: default (the @TAG, or the hub repo's / folder's own weights), an open_clip tag, random[:SEED] (the
architecture, seeded; nothing is downloaded for it but an hf-hub config), or PATH (a checkpoint file that
open_clip.load_checkpoint reads). The tower follows the modality: `--image-backbone open_clip:...` builds the
image tower, `--text-backbone` the text tower.

The model, its inference transform and its tokenizer all come from open_clip (create_model_and_transforms,
get_tokenizer), so any architecture it supports works, SigLIP and HF-text towers included. Text runs on the
full context (`encode_text`): exact for every text tower, unlike the trimmed path the paper's CLIP takes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pcmpipe.backbones.base import Backbone
from pcmpipe.backbones.clip_towers import image_preprocess_meta, load_checkpoint, tower_state
from pcmpipe.backbones.open_clip_floor import require_open_clip
from pcmpipe.backbones.weights import WeightsSpec, fetch_published, seeded, state_sha256
from pcmpipe.errors import UserError


def split_model(arch: str) -> tuple[str, str | None]:
    """'ViT-B-32@laion2b_s34b_b79k' -> ('ViT-B-32', 'laion2b_s34b_b79k'); schemas keep their '@'-free ids."""
    model, sep, tag = arch.rpartition("@")
    return (model, tag) if sep and model else (arch, None)


def pretrained_tags() -> list[tuple[str, str]]:
    """(model, tag) for every pretrained weight set open_clip has a config for: its own table, no network.
    `open_clip:MODEL@TAG` loads one (downloaded on first use)."""
    import open_clip

    return [(str(model), str(tag)) for model, tag in open_clip.list_pretrained()]


def load_open_clip(arch: str, weights: WeightsSpec) -> tuple[Any, Any, dict, str, str]:
    """-> (model in eval mode on CPU, inference transform, model config, weights label, model name as resolved)."""
    require_open_clip()
    import open_clip

    model_name, tag = split_model(arch)
    schema = model_name.split(":", 1)[0] if model_name.startswith(("hf-hub:", "local-dir:")) else None
    if schema == "local-dir":
        folder = Path(model_name.split(":", 1)[1]).expanduser().resolve()
        if not (folder / "open_clip_config.json").is_file():
            raise UserError(f"{folder} has no open_clip_config.json; it is not an open_clip model folder")
        model_name = f"local-dir:{folder}"
    elif schema is None and model_name not in open_clip.list_models():
        raise UserError(
            f"open_clip has no architecture {model_name!r}; see open_clip.list_models(), or use hf-hub:ORG/NAME "
            "or local-dir:PATH"
        )
    pretrained: str | None = None
    if weights.kind == "tag" or (weights.kind == "default" and tag):
        pretrained = weights.value if weights.kind == "tag" else tag
        if schema is not None:
            raise UserError(f"{model_name} brings its own weights; a tag ({pretrained}) applies to built-in names only")
        if not open_clip.get_pretrained_cfg(model_name, pretrained):
            tags = ", ".join(open_clip.list_pretrained_tags_by_model(model_name)) or "none"
            raise UserError(f"unknown open_clip weights {model_name}@{pretrained}; its tags: {tags}")
    elif weights.kind == "default" and schema is None:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model_name)[:6]) or "none"
        raise UserError(f"name the weights of {model_name}: open_clip:{model_name}@TAG (tags: {tags}) or random:SEED")
    elif weights.kind == "hub":
        raise UserError("open_clip weights from another hub repo: use open_clip:hf-hub:ORG/NAME as the backbone")
    load = weights.kind == "default" or pretrained is not None

    def create() -> tuple[Any, Any]:
        with seeded(weights.seed):
            model, _, transform = open_clip.create_model_and_transforms(
                model_name, pretrained=pretrained, load_weights=load, pretrained_text=load
            )
        return model, transform

    try:
        model, transform = create() if schema == "local-dir" else fetch_published(f"open_clip {arch}", create)
    except UserError:
        raise
    except Exception as e:  # a download that fails, a config open_clip cannot build
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise UserError(f"cannot build open_clip {arch} ({type(e).__name__}: {msg})") from None
    if weights.kind == "path":
        load_checkpoint(model, weights.value)
    cfg = open_clip.get_model_config(model_name) or {}
    label = tag if weights.kind == "default" and tag else weights.label
    return model.eval(), transform, cfg, label, model_name


class _OpenClipTower(Backbone):
    def _build(self, name: str, arch: str, weights: WeightsSpec, device: torch.device) -> tuple[Any, dict]:
        """Load onto `device`; -> (inference transform, meta without preprocess)."""
        model, transform, cfg, label, model_name = load_open_clip(arch, weights)
        self.name, self.device = name, device
        self.model = model.to(device)
        self.feature_shape = (int(cfg["embed_dim"]),)
        meta = {
            "backbone": f"open_clip:{model_name}",
            "architecture": cfg,
            "weights": label,
            "weights_sha256": state_sha256(tower_state(self.model, self.modality_kind)),
        }
        return transform, meta


class OpenClipImageBackbone(_OpenClipTower):
    """open_clip image tower: preprocess = its inference transform (PIL -> [3, H, W]); encode -> [B, D]."""

    modality_kind = "image"

    def __init__(self, name: str, arch: str, weights: WeightsSpec, device: torch.device):
        import open_clip
        from open_clip.transform import PreprocessCfg

        self.preprocess, meta = self._build(name, arch, weights, device)
        pre = PreprocessCfg(**open_clip.get_model_preprocess_cfg(self.model))
        self.meta = {**meta, "preprocess": image_preprocess_meta(pre)}

    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(batch.to(self.device, non_blocking=True))


class OpenClipTextBackbone(_OpenClipTower):
    """open_clip text tower: preprocess = its tokenizer (list[str] -> [B, context]); encode -> [B, D]."""

    modality_kind = "text"

    def __init__(self, name: str, arch: str, weights: WeightsSpec, device: torch.device):
        import open_clip

        _, meta = self._build(name, arch, weights, device)
        self.preprocess = open_clip.get_tokenizer(meta["backbone"].removeprefix("open_clip:"))
        context = int(getattr(self.preprocess, "context_length", 0) or 0)
        self.meta = {**meta, "preprocess": {"tokenizer": type(self.preprocess).__name__, "context_length": context}}

    def token_lengths(self, tokens: torch.Tensor) -> torch.Tensor:
        """Non-padding tokens per row (padding is id 0 in open_clip's tokenizers): only the batches' order uses it."""
        return (tokens != 0).sum(-1)

    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(batch.to(self.device, non_blocking=True))
