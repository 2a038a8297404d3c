"""What the paper's CLIP (clip.py) and any open_clip model (openclip_models.py) share about a tower: which
tensors are its own (the checksum in the cache fingerprint), loading a checkpoint file into the model, and the
record of its image preprocessing."""

from __future__ import annotations

import warnings
from typing import Any

import open_clip
import torch
from open_clip.transform import PreprocessCfg

from pcmpipe.errors import UserError


def _is_text_key(name: str) -> bool:
    return not name.startswith("visual.") and name not in ("logit_scale", "logit_bias")


def tower_state(model: Any, kind: str) -> dict[str, torch.Tensor]:
    """The tensors of a CLIP model's `kind` tower ('image' | 'text'): what its weights checksum covers.
    The text tower is every tensor outside `visual.` but the shared logit scale and bias."""
    if kind == "image":
        return model.visual.state_dict()
    return {k: v for k, v in model.state_dict().items() if _is_text_key(k)}


def image_preprocess_meta(pre: PreprocessCfg) -> dict:
    """An open_clip inference image transform as the cache fingerprint records it."""
    return {
        "size": pre.size,
        "resize_mode": pre.resize_mode,
        "interpolation": pre.interpolation,
        "crop": "center",
        "mean": [round(float(v), 8) for v in pre.mean],
        "std": [round(float(v), 8) for v in pre.std],
    }


def load_checkpoint(model: torch.nn.Module, path: str) -> None:
    """open_clip's loader (state dicts, {'state_dict': ...}, safetensors); TorchScript archives (OpenAI's
    original ViT-B-32.pt) are read with torch.jit.load, whose state dict uses the same names."""
    try:
        open_clip.load_checkpoint(model, path, strict=True)
        return
    except Exception as e:
        first = e
    try:
        with warnings.catch_warnings():  # torch marks jit.load deprecated; it is the only reader of these files
            warnings.simplefilter("ignore", FutureWarning)
            state = torch.jit.load(path, map_location="cpu").state_dict()
    except Exception:
        msg = str(first).splitlines()[0] if str(first) else ""
        raise UserError(
            f"cannot load CLIP weights from {path} ({type(first).__name__}: {msg[:200]}); "
            "pass an open_clip/OpenAI checkpoint of this architecture"
        ) from None
    # a TorchScript archive also carries non-weight entries (input_resolution, context_length, vocab_size,
    # traced buffers such as attn_mask); only the model's own keys are loaded, and all of them must be there
    expected = model.state_dict()
    state = {k: v for k, v in state.items() if k in expected}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        why = str(e).splitlines()[0][:200]
        raise UserError(f"checkpoint {path} does not fit this CLIP architecture ({why})") from None
