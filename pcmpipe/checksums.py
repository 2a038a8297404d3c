"""Checksums: of a file's bytes (`file_sha256`: cache shards, index files, imported inputs), and of a set of
tensors (weights, heads, checkpoints, saved embeddings) with the one writer of the safetensors files that carry it
(`save_tensors`) and the check its readers make (`check_tensors`).

Each file carries two digests in its metadata: `sha256` over the tensors alone (`state_sha256`: what a weights
checksum means elsewhere), and `content_sha256` over that digest and every other metadata entry, so that the JSON a
file keeps beside its tensors (a checkpoint's training state, optimizer groups and scheduler; the heads' shapes)
cannot change unnoticed either. Files written before a digest existed carry none and are checked for what they do
carry.

Its own module, importing torch alone and only when a tensor is hashed: `pcmpipe.backbones` (where weights specs
live) imports open_clip and transformers, 0.25 GiB resident and seconds of start-up, which a training run that only
writes checksums never needs (docs/performance.md, stage-two memory); and the cache and index, which hash files,
never import torch at all.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, hex, read 1 MiB at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def state_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over (name, dtype, shape, raw bytes) of every tensor, names sorted: one digest per set of weights."""
    import torch

    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        # a uint8 view hashes every dtype (bf16 included) without a lossy conversion
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# the metadata keys that hold the digests themselves (never part of what `content_sha256` covers)
DIGEST_KEYS = ("sha256", "content_sha256")


def content_sha256(tensors_sha256: str, metadata: Mapping[str, str]) -> str:
    """sha256 over the tensors' digest and the metadata (digests left out), keys sorted: one digest per file
    content, whatever order safetensors writes the header in."""
    rest = {k: v for k, v in metadata.items() if k not in DIGEST_KEYS}
    text = json.dumps([tensors_sha256, rest], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_tensors(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> None:
    """Compare a file's tensors and metadata with the digests its metadata records -> ValueError("checksum
    mismatch") on a difference. A digest the file does not carry (written before it existed) is not checked."""
    if "sha256" not in metadata and "content_sha256" not in metadata:
        return
    digest = state_sha256(tensors)
    if "sha256" in metadata and metadata["sha256"] != digest:
        raise ValueError("checksum mismatch")
    if "content_sha256" in metadata and metadata["content_sha256"] != content_sha256(digest, metadata):
        raise ValueError("checksum mismatch")


def save_tensors(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str], what: str) -> str:
    """Write `tensors` as the safetensors file `path` with `metadata` plus `sha256` (their `state_sha256`) and
    `content_sha256` (that digest and the metadata, `content_sha256`) -> the tensors' digest. The one writer of
    pcmpipe's safetensors files (heads, checkpoints, embeddings, towers).

    Durable and all-or-nothing (pcmpipe.atomic), and byte-identical for the same tensors and metadata:
    safetensors writes its metadata from a Rust HashMap, randomly seeded in every process (PYTHONHASHSEED has no
    say), so the header is written again with the keys sorted (`_sorted_header`). A failed write (a full disk raises
    SafetensorError, not OSError) is one line naming `path` (pcmpipe.errors.file_errors). `what` names the file
    in that line ("heads file").
    """
    from safetensors.torch import save_file

    from pcmpipe import atomic
    from pcmpipe.errors import file_errors

    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    digest = state_sha256(flat)
    with file_errors(path, "write", what), atomic.atomic_path(path) as tmp:
        signed = {**metadata, "sha256": digest}
        save_file(flat, str(tmp), metadata={**signed, "content_sha256": content_sha256(digest, signed)})
        _sorted_header(tmp)
    return digest


def _sorted_header(path: Path) -> None:
    """Rewrite a safetensors file's JSON header in place with its `__metadata__` keys sorted.

    The header is 8 bytes of little-endian length, then that many bytes of JSON (padded with spaces), then the
    tensor data at offsets relative to the header's end. Only the order of the metadata's keys changes, and
    Python's compact JSON escapes strings as serde_json does, so the sorted header has the same length and
    the data does not move; it is padded to the old length in case it ever comes out shorter.
    """
    with open(path, "r+b") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
        meta = header.pop("__metadata__", None)
        if meta is not None:
            header = {"__metadata__": dict(sorted(meta.items())), **header}
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(text) > size:  # never seen: the data would have to move; leave the file as safetensors wrote it
            return
        f.seek(8)
        f.write(text + b" " * (size - len(text)))
