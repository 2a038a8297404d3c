"""What every dataset reader returns: `Record`s, one per sample of one modality and split.

The extraction step turns a reader's records into cache rows, so the id and link formats here are the
ones the cache keeps (docs/design.md, "Modalities and ids").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np

from pcmpipe.errors import UserError
from pcmpipe.modalities import KEYS, KINDS

SPLITS: tuple[str, ...] = ("train", "val", "test")

# The id column each modality lives at: a record's `id` equals `links[MODALITY_KEYS[modality]]`.
MODALITY_KEYS: dict[str, str] = KEYS


class Blob(Protocol):
    """Media bytes that are not a file of their own (a member of a tar shard, a cell of a Hugging Face
    dataset): opened only when the extraction decodes the item, so the records of a large dataset stay small."""

    def open(self) -> BinaryIO:
        """A binary file object over the bytes (OSError if they cannot be read)."""
        ...

    def describe(self) -> str:
        """Where the bytes live, for .errors.jsonl ('shard-000.tar member 17.jpg')."""
        ...


@dataclass(frozen=True)
class Record:
    """One sample of one modality.

    `links` holds the sample's own key column and every coarser one (a CUB caption: caption_id,
    image_id, class_id). Exactly one payload is set: `path` (image or wav file), `text` (caption or
    prompt) or `vector` (float32 [D], attributes and class embeddings). An image or audio payload that is not a
    file of its own is a `blob` instead of a `path`.
    """

    id: str
    links: dict[str, str]
    path: Path | None = None
    text: str | None = None
    vector: np.ndarray | None = field(default=None, compare=False)
    blob: Blob | None = field(default=None, compare=False)


class Dataset:
    """Base of the readers. Subclasses set `name`, `modalities` and implement `_records`."""

    name: str = ""
    modalities: tuple[str, ...] = ()

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser()
        # raw entry -> why it was left out (e.g. a caption whose image is in no split list)
        self.skipped: dict[str, str] = {}
        # raw entry -> how it was read when it was kept under another id (e.g. a repeated caption key)
        self.renamed: dict[str, str] = {}

    def key(self, modality: str) -> str:
        """The id column of `modality` ('image_id', 'caption_id' or 'class_id')."""
        self._check_modality(modality)
        return MODALITY_KEYS[modality]

    def kind(self, modality: str) -> str | None:
        """The backbone kind that encodes `modality` ('image', 'text', 'audio'), or None for precomputed vectors."""
        self._check_modality(modality)
        return KINDS.get(modality)

    def records(self, modality: str, split: str) -> list[Record]:
        """All records of `modality` in `split`, sorted by id."""
        self._check_modality(modality)
        if split not in SPLITS:
            raise UserError(f"unknown split {split!r} for {self.name}; choose one of {', '.join(SPLITS)}")
        recs = self._records(modality, split)
        return sorted(recs, key=lambda r: r.id)

    def _records(self, modality: str, split: str) -> list[Record]:
        raise NotImplementedError

    def _check_modality(self, modality: str) -> None:
        if modality not in self.modalities:
            raise UserError(f"{self.name} has no modality {modality!r}; it has {', '.join(self.modalities)}")


def read_lines(path: Path) -> list[str]:
    """Non-empty stripped lines of a text file; LF, CRLF and CR endings all work (universal newlines).

    utf-8-sig: a byte-order mark (Windows editors write one) is dropped instead of becoming part of the
    first line, where it would hide the first image's name from every lookup.
    """
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        return [line.strip() for line in f if line.strip()]


def require(path: Path, how: str) -> Path:
    """`path` if it exists, else a UserError naming it and how to get it."""
    if not path.exists():
        raise UserError(f"missing {path}: {how}")
    return path


def require_some_files(records: list[Record], what: str, how: str) -> list[Record]:
    """`records` unless none of their files exist (the archive was never unpacked there): UserError.

    Single missing or unreadable files are left to the extraction step, which skips and lists them
    (or stops at the first with --strict).
    """
    if records and not any(r.path is not None and r.path.is_file() for r in records):
        raise UserError(f"none of the {len(records)} {what} exist, e.g. {records[0].path}: {how}")
    return records
