"""Loading a transformers model by hub id or local folder, with pcmpipe's weights strings.

The backbone name carries the model (`hf-text:ORG/NAME`, `hf-audio:/models/wavlm`): its config and its
tokenizer or feature extractor. The weights string says which tensors go in:

    default          the model's own weights (the hub repo's, or the folder's)
    random[:SEED]    that config, seeded random initialisation (AutoModel.from_config)
    hf:ORG/NAME      the weights of another hub repo of the same architecture
    PATH             the weights of a save_pretrained folder of the same architecture

A hub id and a local folder take the same call (`from_pretrained(source)`); offline, hub ids are answered
from the local Hugging Face cache or refused in one line (`weights.fetch_published`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pcmpipe.backbones.weights import WeightsSpec, fetch_published, seeded
from pcmpipe.errors import UserError


@dataclass
class Loaded:
    model: Any  # in eval mode, on CPU
    processor: Any  # tokenizer or feature extractor
    folder: Path | None  # a local copy of the model's config files (sentence-transformers' modules.json ...)
    label: str  # what the cache meta records as the model: the hub id, or the folder's absolute path


def _source(arch: str) -> tuple[str, Path | None]:
    """A model named by `arch` -> (what from_pretrained takes, its local folder or None for a hub id)."""
    path = Path(arch).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"model folder {path} has no config.json; pass a save_pretrained folder or a hub id")
        return str(path.resolve()), path.resolve()
    if arch.count("/") != 1 or arch.startswith((".", "/")):
        raise UserError(f"model {arch!r} is neither a folder nor a hub id ORG/NAME")
    return arch, None


def _call(what: str, source: str, local: bool, fn: Callable[[], Any]) -> Any:
    try:
        return fn() if local else fetch_published(f"{what} {source}", fn)
    except UserError:
        raise
    except Exception as e:  # a folder of another model type, a broken download, missing files
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise UserError(f"cannot load {what} {source} ({type(e).__name__}: {msg})") from None


def load_pretrained(
    arch: str,
    weights: WeightsSpec,
    model_cls: Any,
    processor_cls: Any,
    what: str,
    fallback_processor: Callable[[], Any] | None = None,
) -> Loaded:
    """Model `arch` with `weights`, through `model_cls` (AutoModel) and `processor_cls` (AutoTokenizer, ...)."""
    from transformers import AutoConfig

    source, folder = _source(arch)
    local = folder is not None
    if weights.kind == "tag":
        raise UserError(f"{what} weights {weights.value!r}: use default, random[:SEED], hf:ORG/NAME or a folder")
    if weights.kind == "random":
        config = _call(what, source, local, lambda: AutoConfig.from_pretrained(source))
        with seeded(weights.seed):
            model = model_cls.from_config(config)
    else:
        where, where_local = source, local
        if weights.kind == "path":
            where, where_local = weights.value, True
        elif weights.kind == "hub":
            where, where_local = weights.value, False
        model = _call(what, where, where_local, lambda: model_cls.from_pretrained(where))
        if weights.kind != "default":
            config = _call(what, source, local, lambda: AutoConfig.from_pretrained(source))
            if model.config.model_type != config.model_type:
                raise UserError(
                    f"weights {weights.value} are a {model.config.model_type}, but {arch} is a {config.model_type}"
                )
    try:
        processor = _call(what, source, local, lambda: processor_cls.from_pretrained(source))
    except UserError:
        if fallback_processor is None:
            raise
        processor = fallback_processor()
    if folder is None:
        from huggingface_hub import snapshot_download

        folder = Path(_call(what, source, False, lambda: snapshot_download(source, allow_patterns=["*.json"])))
    return Loaded(model.eval(), processor, folder, source)
