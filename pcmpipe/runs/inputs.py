"""Raw inputs of a run's modality -> backbone features, through extraction's own batch generators.

Images and audio are files, text is strings. Each input becomes a dataset `Record` and goes through
`pcmpipe.extract.sources` (the same decoding, preprocessing, batching and skip reasons as `pcmpipe extract`), so
a run embeds a new caption exactly as its cache was built. Rows come back in input order; an input that cannot
be encoded is listed with its reason (the caller decides whether that is an error).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pcmpipe.backbones import Backbone
from pcmpipe.datasets import Record
from pcmpipe.errors import UserError
from pcmpipe.extract.sources import Encoded, Skipped, audio_batches, image_batches, text_batches

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


@dataclass
class Features:
    """Backbone features of the inputs that could be encoded, in input order, and why the others could not."""

    ids: list[str]
    features: np.ndarray  # float32 [N, *feature_shape], or [N, *head output] when encode_inputs was given a head
    skipped: dict[str, str] = field(default_factory=dict)  # id -> reason


def expand_files(inputs: Sequence[str | Path], kind: str) -> list[Path]:
    """Files as given, and a directory's files of this kind (sorted, not recursive)."""
    suffixes = IMAGE_SUFFIXES if kind == "image" else AUDIO_SUFFIXES
    out: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            out += sorted(p for p in path.iterdir() if p.suffix.lower() in suffixes)
        else:
            out.append(path)
    return out


def file_ids(paths: Sequence[Path]) -> list[str]:
    """A file's id is its stem (Flickr8k's image ids are); two files with one stem are an error."""
    ids = [p.stem for p in paths]
    seen: dict[str, Path] = {}
    for i, p in zip(ids, paths):
        if i in seen:
            raise UserError(f"{p} and {seen[i]} would share the id {i!r}; rename one or embed them separately")
        seen[i] = p
    return ids


def input_ids(kind: str, inputs: Sequence[str | Path], ids: Sequence[str] | None = None) -> list[str]:
    """The row id of each input: `ids` as given (each once), else text -> "0", "1", ...; files -> their stems."""
    if ids is None:
        return [str(i) for i in range(len(inputs))] if kind == "text" else file_ids([Path(p) for p in inputs])
    out = [str(i) for i in ids]
    if len(out) != len(inputs):
        raise UserError(f"{len(out)} ids for {len(inputs)} inputs; give one id per input")
    seen: set[str] = set()
    for i in out:
        if i in seen:
            raise UserError(f"id {i!r} is given twice; ids must be unique")
        seen.add(i)
    return out


def inputs_digest(kind: str, inputs: Sequence[str | Path], ids: Sequence[str]) -> str:
    """sha256 of what decides a set of embeddings besides the run: each id with its text, or with its file's
    absolute path, size and modification time (nanoseconds). Files are not read: stat() of a million images
    takes seconds where hashing their bytes takes minutes, and an edited file changes its mtime. A missing file
    is listed without size, so it counts as changed once it appears."""
    entries: list[list] = []
    for i, item in zip(ids, inputs):
        if kind == "text":
            entries.append([i, str(item)])
            continue
        path = Path(item).absolute()
        try:
            st = path.stat()
            entries.append([i, str(path), st.st_size, st.st_mtime_ns])
        except OSError:
            entries.append([i, str(path), None, None])
    text = json.dumps(entries, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def iter_encoded(
    backbone: Backbone,
    inputs: Sequence[str | Path],
    ids: Sequence[str],
    *,
    batch_size: int = 64,
    workers: int = 0,
    head: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Iterator[Encoded | Skipped]:
    """Inputs through the backbone batch by batch, in input order: `Encoded(records, features)` per batch
    (features through `head` when given) and `Skipped(record, reason)` per input that cannot be encoded."""
    kind = backbone.modality_kind
    if kind == "text":
        records = [Record(i, {}, text=str(t)) for i, t in zip(ids, inputs)]
        batches = text_batches(backbone, records, batch_size)
    else:
        records = [Record(i, {}, path=Path(p)) for i, p in zip(ids, inputs)]
        if kind == "image":
            batches = image_batches(backbone, records, batch_size, workers)
        else:
            batches = audio_batches(backbone, records, batch_size, workers)
    for item in batches:
        if isinstance(item, Encoded) and head is not None:
            item = Encoded(item.records, head(item.features))
        yield item


def encode_inputs(
    backbone: Backbone,
    inputs: Sequence[str | Path],
    *,
    ids: Sequence[str] | None = None,
    batch_size: int = 64,
    workers: int = 0,
    head: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Features:
    """Texts (text backbones) or file paths (image, audio) -> Features. ids default: text -> "0", "1", ...;
    files -> their stems. head: applied to each batch's features as it comes, and only its outputs are kept, so
    memory holds N head outputs rather than N backbone features (HuBERT's 13 x 768 per clip is 40 KB; a 256-d
    embedding 1 KB)."""
    ids = input_ids(backbone.modality_kind, inputs, ids)
    rows: dict[str, np.ndarray] = {}
    skipped: dict[str, str] = {}
    for item in iter_encoded(backbone, inputs, ids, batch_size=batch_size, workers=workers, head=head):
        if isinstance(item, Encoded):
            rows.update({r.id: f for r, f in zip(item.records, item.features)})
        else:
            skipped[item.record.id] = item.reason
    kept = [i for i in ids if i in rows]
    if kept:
        feats = np.stack([rows[i] for i in kept])
    else:
        feats = np.zeros((0, *backbone.feature_shape), np.float32)
        feats = feats if head is None else head(feats)
    return Features(kept, feats, skipped)
