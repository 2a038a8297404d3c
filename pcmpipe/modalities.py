"""The paper's six modalities in one table: what each is, where its ids live, what encodes it.

Every other module reads these facts from here instead of keeping its own map:

- key: the id column a modality's rows live at (a record's `id` equals `links[key]`); coarser ids travel as
  links, so a CUB caption row carries caption_id, image_id and class_id.
- kind: the backbone kind that encodes it ('image', 'text', 'audio'), or None for precomputed vectors that
  enter the cache as they are (attributes, class embeddings).
- payload: the Record field that holds the raw input ('path', 'text' or 'vector').
- unfreezable: whether fine-tuning may unfreeze the backbone that encodes it (the CLIP towers of I and T; P
  shares T's tower but is only read through it, HuBERT stays frozen).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Modality:
    name: str
    description: str
    key: str
    kind: str | None
    payload: str
    unfreezable: bool


MODALITIES: dict[str, Modality] = {
    m.name: m
    for m in (
        Modality("I", "image", "image_id", "image", "path", True),
        Modality("T", "caption", "caption_id", "text", "text", True),
        Modality("S", "spoken caption", "caption_id", "audio", "path", False),
        Modality("A", "attribute vector", "image_id", None, "vector", False),
        Modality("C", "class embedding", "class_id", None, "vector", False),
        Modality("P", "class prompt", "class_id", "text", "text", False),
    )
}

NAMES: tuple[str, ...] = tuple(MODALITIES)
# modality -> id column
KEYS: dict[str, str] = {m.name: m.key for m in MODALITIES.values()}
# modality -> backbone kind, for the modalities a backbone encodes (the others carry precomputed vectors)
KINDS: dict[str, str] = {m.name: m.kind for m in MODALITIES.values() if m.kind is not None}
# backbone kind a user may unfreeze (`--unfreeze image,text`) -> the modality that tower encodes
UNFREEZABLE: dict[str, str] = {m.kind: m.name for m in MODALITIES.values() if m.unfreezable and m.kind}
# modality -> kind, for the modalities an unfreezable (CLIP) tower encodes: I, T and P
TOWER_KINDS: dict[str, str] = {name: kind for name, kind in KINDS.items() if kind in UNFREEZABLE}
