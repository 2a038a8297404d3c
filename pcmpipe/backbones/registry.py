"""Every backbone pcmpipe can build, named once: registered names, families, and the paper's default per kind.

    BACKBONES["hubert-base"]        -> Registered(kind 'audio', factory 'pcmpipe.backbones.hubert:HubertBackbone', ...)
    FAMILIES["open_clip"]           -> Family(factories per kind, the pretrained tags it lists, ...)
    DEFAULT_BACKBONES["image"]      -> 'clip-vit-b32-image'

A factory is written as 'module:Class' and imported on first use: this module imports no torch, open_clip or
transformers, so the CLI's option defaults, the config schema and the pipeline planner read it for free.
`create_backbone` (`pcmpipe.backbones.factory`) builds from it; `pcmpipe backbones` lists it. The contract a
factory's class keeps is pcmpipe/backbones/README.md.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pcmpipe.errors import UserError

if TYPE_CHECKING:
    from pcmpipe.backbones.base import Backbone


def load_factory(factory: str) -> Any:
    """'package.module:Attr' -> that attribute, imported now."""
    module, _, attr = factory.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Registered:
    """A backbone with a fixed name: its class (`factory`), the architecture key that class takes, and its kind."""

    kind: str
    factory: str
    arch: str
    description: str

    def backbone_class(self) -> type[Backbone]:
        return load_factory(self.factory)


@dataclass(frozen=True)
class Family:
    """Any model of a library, named `PREFIX:MODEL`: one class per kind; MODEL is that class's architecture key.
    `pretrained` lists what the family can load by name ('module:function' -> [(model, tag)]), if it can."""

    factories: dict[str, str]
    usage: str
    description: str
    pretrained: str | None = None

    def backbone_class(self, kind: str) -> type[Backbone]:
        return load_factory(self.factories[kind])

    def pretrained_tags(self) -> list[tuple[str, str]]:
        """(model, tag) pairs the family's library ships configs for (no network); [] when it names none."""
        return list(load_factory(self.pretrained)()) if self.pretrained else []


BACKBONES: dict[str, Registered] = {
    "clip-vit-b32-image": Registered(
        "image", "pcmpipe.backbones.clip:ClipImageBackbone", "vit-b32", "CLIP ViT-B/32 image tower (the paper's), [512]"
    ),
    "clip-vit-b32-text": Registered(
        "text", "pcmpipe.backbones.clip:ClipTextBackbone", "vit-b32", "CLIP ViT-B/32 text tower (the paper's), [512]"
    ),
    "hubert-base": Registered(
        "audio",
        "pcmpipe.backbones.hubert:HubertBackbone",
        "base",
        "HuBERT-Base (the paper's), time-mean of its 13 hidden states, [13, 768]",
    ),
    "clip-tiny-image": Registered(
        "image", "pcmpipe.backbones.clip:ClipImageBackbone", "tiny", "2-layer 64 px CLIP image tower for tests, [32]"
    ),
    "clip-tiny-text": Registered(
        "text", "pcmpipe.backbones.clip:ClipTextBackbone", "tiny", "2-layer CLIP text tower for tests, [32]"
    ),
    "hubert-tiny": Registered(
        "audio", "pcmpipe.backbones.hubert:HubertBackbone", "tiny", "4-layer x 64 HuBERT for tests, [5, 64]"
    ),
}

FAMILIES: dict[str, Family] = {
    "open_clip": Family(
        {
            "image": "pcmpipe.backbones.openclip_models:OpenClipImageBackbone",
            "text": "pcmpipe.backbones.openclip_models:OpenClipTextBackbone",
        },
        "open_clip:MODEL[@TAG]",
        "any open_clip model (built-in name, hf-hub:ORG/NAME, local-dir:PATH), image or text tower",
        pretrained="pcmpipe.backbones.openclip_models:pretrained_tags",
    ),
    "hf-text": Family(
        {"text": "pcmpipe.backbones.transformers_text:TransformersTextBackbone"},
        "hf-text:MODEL",
        "any transformers / sentence-transformers text encoder (hub id or folder)",
    ),
    "hf-audio": Family(
        {"audio": "pcmpipe.backbones.transformers_speech:TransformersSpeechBackbone"},
        "hf-audio:MODEL",
        "any transformers speech encoder with hidden states (HuBERT, wav2vec2, WavLM, ...)",
    ),
}

# the paper's backbone per modality kind: `extract`, `finetune` and pipeline files default to these
DEFAULT_BACKBONES: dict[str, str] = {"image": "clip-vit-b32-image", "text": "clip-vit-b32-text", "audio": "hubert-base"}


def family_of(name: str) -> str | None:
    """'open_clip' for 'open_clip:ViT-B-32@openai'; None for a registered name (or an unknown one)."""
    prefix, sep, _ = name.partition(":")
    return prefix if sep and prefix in FAMILIES else None


def check_name(name: str) -> None:
    """UserError naming the choices unless `name` is registered or of a family."""
    if name not in BACKBONES and family_of(name) is None:
        families = ", ".join(f.usage for f in FAMILIES.values())
        raise UserError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}, or {families}")


def backbone_kinds(name: str) -> tuple[str, ...]:
    """The kinds backbone `name` can encode: one for a registered name, image and text for open_clip models."""
    family = family_of(name)
    if family is not None:
        return tuple(FAMILIES[family].factories)
    check_name(name)
    return (BACKBONES[name].kind,)


def backbone_kind(name: str) -> str:
    """'image' | 'text' | 'audio' of a backbone that encodes one kind (UserError if unknown or if it has two)."""
    kinds = backbone_kinds(name)
    if len(kinds) != 1:
        raise UserError(f"backbone {name} has {' and '.join(kinds)} towers; say which one")
    return kinds[0]


def resolve(name: str, kind: str | None = None) -> tuple[type[Backbone], str]:
    """Backbone `name` (of `kind`, for a family with several) -> (its class, imported now; its architecture key)."""
    family = family_of(name)
    if family is None:
        check_name(name)
        entry = BACKBONES[name]
        if kind is not None and entry.kind != kind:
            raise UserError(f"backbone {name} encodes {entry.kind}, not {kind}")
        return entry.backbone_class(), entry.arch
    fam = FAMILIES[family]
    kind = kind or backbone_kind(name)
    if kind not in fam.factories:
        raise UserError(f"backbone {name} encodes {', '.join(fam.factories)}, not {kind}")
    arch = name.split(":", 1)[1]
    if not arch:
        raise UserError(f"backbone {name!r}: name the model after '{family}:'")
    return fam.backbone_class(kind), arch


@dataclass(frozen=True)
class BackboneListing:
    """One row of `pcmpipe backbones`: a registered name or a family's pattern, with what it encodes."""

    name: str
    kinds: tuple[str, ...]
    default_for: tuple[str, ...]  # kinds it is the default backbone of
    description: str
    family: bool
    pretrained: tuple[tuple[str, str], ...] = ()  # (model, tag) a family loads by name; with_tags only


def list_backbones(with_tags: bool = True) -> list[BackboneListing]:
    """Registered backbones, then families (with their pretrained tags when `with_tags`: open_clip's come from
    `open_clip.list_pretrained()`, which reads its own tables, no network)."""
    rows = [
        BackboneListing(
            name, (e.kind,), tuple(k for k, d in DEFAULT_BACKBONES.items() if d == name), e.description, False
        )
        for name, e in BACKBONES.items()
    ]
    for fam in FAMILIES.values():
        tags = tuple(fam.pretrained_tags()) if with_tags else ()
        rows.append(BackboneListing(fam.usage, tuple(fam.factories), (), fam.description, True, tags))
    return rows
