"""What a query is, on the service's side: the request bodies (validated), how each is encoded in a batch, and how
a hit is shown (its caption, or URLs of its media the service will send).

The HTTP routes (`pcmpipe.serve.app`) only parse and answer; encoding and scoring run on the batcher's thread.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pcmpipe.errors import UserError
from pcmpipe.runs.payload import Hit
from pcmpipe.serve.catalog import ServedRun

MAX_K = 1000
MAX_TEXT = 2000  # characters of one text query (a caption is a few dozen words)


class Query(BaseModel):
    """POST /api/search and /api/embed: a text or a stored row id of modality `from`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    run: str | None = Field(None, description="the run's name (default: the first one served)")
    from_: str = Field(alias="from", min_length=1, max_length=32)
    to: str | None = Field(None, min_length=1, max_length=32, description="search: the modality to search")
    k: int = Field(10, ge=1, le=MAX_K)
    text: str | None = Field(None, max_length=MAX_TEXT)
    id: str | None = Field(None, min_length=1, max_length=512, description="a row id of the `from` gallery")

    @model_validator(mode="after")
    def _one_input(self) -> Query:
        if (self.text is None) == (self.id is None):
            raise ValueError("pass one of text or id")
        if self.text is not None and not self.text.strip():
            raise ValueError("text is empty")
        return self


def pick_run(served: dict[str, ServedRun], name: str | None) -> ServedRun:
    if name is None:
        return next(iter(served.values()))
    if name not in served:
        raise UserError(f"no run named {name[:80]!r} is served (served: {', '.join(served)})")
    return served[name]


def encode_group(served: dict[str, ServedRun], group: tuple, items: list) -> list[Any]:
    """The batcher's encoder: one group's items -> per item a vector or the exception that item fails with.
    Groups: (run, modality, "text") texts, (run, modality, "file") uploaded files, (run, modality, "vector")."""
    name, modality, kind = group
    run = served[name].run
    if kind == "vector":
        return list(items)
    if kind == "text":
        return list(run.embed(modality, [str(t) for t in items]))
    ids = [str(n) for n in range(len(items))]
    kept, emb, skipped = run.embed_inputs(modality, [str(p) for p in items], ids=ids)
    found = dict(zip(kept, emb))
    return [found[i] if i in found else UserError(f"the uploaded file cannot be used: {skipped.get(i)}") for i in ids]


def search_group(served: dict[str, ServedRun], target: tuple, queries: np.ndarray) -> list[list[Hit]]:
    name, to, k = target
    return served[name].search(to, queries, k)


def hit_json(served: ServedRun, modality: str, hit: Hit, token_query: str = "") -> dict:
    """A hit as the API returns it: id, score, and its caption or a path (relative to its dataset root) and URLs."""
    out: dict[str, Any] = {"id": hit.id, "score": round(hit.score, 6)}
    if hit.text is not None:
        out["text"] = hit.text
    if hit.path is not None:
        where = f"{quote(served.name, safe='')}/{quote(modality, safe='')}/{quote(hit.id, safe='')}"
        out["path"] = _relative(hit.path, served.sources.roots())
        out["media_url"] = f"/api/media/{where}{token_query}"
        if served.run.kind(modality) == "image":
            out["thumb_url"] = f"/api/thumb/{where}{token_query}"
    return out


def _relative(path: str, roots: list[Path]) -> str:
    """A media path as the API shows it: relative to its dataset root (the server's layout stays private)."""
    real = Path(path)
    for root in roots:
        if real.is_relative_to(root):
            return str(real.relative_to(root))
    return real.name


class UploadDir:
    """A private folder for uploaded query files while they are encoded (each removed right after)."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="pcmpipe-serve-"))

    def write(self, data: bytes, suffix: str) -> Path:
        fd, name = tempfile.mkstemp(suffix=suffix, dir=self.path)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return Path(name)

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.path, ignore_errors=True)
