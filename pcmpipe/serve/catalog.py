"""The runs a service answers for, each loaded once: heads, backbones (built on the first query), galleries.

A gallery is, per modality, the run's stored test embeddings (with their captions and media files:
`pcmpipe.runs.payload`), or a folder given with `--gallery [RUN:]M=DIR` (`pcmpipe embed` / `pcmpipe index`),
checked to be of the run and the modality like `pcmpipe search --gallery`. Everything is read at start-up, so
a damaged run or gallery stops the service before it listens, and no file of the run is held open or locked:
training can go on beside the service, and a killed service leaves nothing to repair.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pcmpipe.errors import UserError
from pcmpipe.runs.payload import Hit, ItemSources


@dataclass
class Gallery:
    """One modality's searchable rows: an EmbeddingIndex, and whether they are the run's own stored rows."""

    index: Any  # pcmpipe.index.EmbeddingIndex
    stored: bool
    source: str  # what it is, in words

    @property
    def size(self) -> int:
        return len(self.index.ids)


@dataclass
class ServedRun:
    name: str
    run: Any  # pcmpipe.runs.Run
    galleries: dict[str, Gallery]
    sources: ItemSources
    _stored: dict[str, dict[str, int]] = field(default_factory=dict, repr=False)

    def describe(self) -> dict:
        """The run as the explorer and /api/runs show it."""
        return {
            "name": self.name,
            "fingerprint": self.run.fingerprint,
            "dim": self.run.dim,
            "modalities": [
                {
                    "name": m,
                    "kind": self.run.kind(m) or "vector",
                    "gallery": self.galleries[m].size if m in self.galleries else 0,
                    "gallery_source": self.galleries[m].source if m in self.galleries else None,
                    "payload_note": self.describe_payload(m),
                }
                for m in self.run.modalities
            ],
        }

    def describe_payload(self, modality: str) -> str | None:
        """Why a modality's hits carry no caption or file, or None when they do."""
        gallery = self.galleries.get(modality)
        if gallery is None or gallery.stored:
            return self.sources.note(modality)
        return f"the gallery {gallery.source} records ids only (no captions or files)"

    def vector_of(self, modality: str, row_id: str) -> np.ndarray:
        """A row's embedding [dim] from the modality's gallery (a click on a result searches from it)."""
        gallery = self._gallery(modality)
        rows = self._stored.setdefault(modality, {str(i): n for n, i in enumerate(gallery.index.ids)})
        if row_id not in rows:
            raise UserError(f"no {modality} row {row_id[:80]!r} in the gallery of run {self.name}")
        index = gallery.index.index
        if hasattr(index, "vectors"):  # flat: the stored rows themselves
            return np.asarray(index.vectors[rows[row_id]], dtype=np.float32)
        try:
            return np.asarray(index.reconstruct(rows[row_id]), dtype=np.float32)
        except RuntimeError:  # an IVF index without its direct map keeps no row vectors to search from
            raise UserError(
                f"the {modality} index of run {self.name} cannot give back a row's vector; search "
                "from a text or a file, or serve an embeddings cache of it"
            ) from None

    def _gallery(self, modality: str) -> Gallery:
        if modality not in self.galleries:
            have = ", ".join(self.galleries) or "none"
            raise UserError(f"run {self.name} has no gallery of modality {modality!r} (galleries: {have})")
        return self.galleries[modality]

    def search(self, modality: str, queries: np.ndarray, k: int) -> list[list[Hit]]:
        gallery = self._gallery(modality)
        ids, scores = gallery.index.search(queries, k)
        out = []
        for ri, rs in zip(ids, scores):
            pairs = [(str(i), float(s)) for i, s in zip(ri, rs) if i != ""]
            out.append(self.sources.attach(modality, pairs) if gallery.stored else [Hit(i, s) for i, s in pairs])
        return out

    def item(self, modality: str, row_id: str) -> tuple[str | None, str | None]:
        """(text, media path) of a stored row; (None, None) when not known."""
        if modality not in self.galleries or not self.galleries[modality].stored:
            return None, None
        return self.sources.items(modality).get(row_id, (None, None))


def parse_gallery_flags(flags: list[str], names: list[str]) -> dict[str, dict[str, Path]]:
    """`[RUN:]M=DIR` flags -> run name -> modality -> folder (RUN may be left out when one run is served)."""
    out: dict[str, dict[str, Path]] = {}
    for flag in flags:
        target, sep, folder = flag.partition("=")
        run, colon, modality = target.rpartition(":")
        if not sep or not modality or not folder:
            raise UserError(f"--gallery {flag!r}: write it as M=DIR or RUN:M=DIR (e.g. I=emb/I.index)")
        if not colon:
            if len(names) > 1:
                raise UserError(f"--gallery {flag!r}: name the run (RUN:M=DIR); {len(names)} runs are served")
            run = names[0]
        if run not in names:
            raise UserError(f"--gallery {flag!r}: no served run is named {run!r} (served: {', '.join(names)})")
        out.setdefault(run, {})[modality] = Path(folder)
    return out


def _own_gallery(run: Any, modality: str) -> Gallery | None:
    from pcmpipe.index import EmbeddingIndex, build_index

    if not (run.path / "embeddings" / f"{modality}.safetensors").is_file():
        return None
    ids, vectors = run.gallery(modality)
    split = run.split_test
    return Gallery(EmbeddingIndex(build_index(vectors, "flat"), ids), True, f"the {split} split stored in the run")


def _folder_gallery(run: Any, modality: str, folder: Path) -> Gallery:
    from pcmpipe.index import EmbeddingIndex, build_index
    from pcmpipe.runs.gallery import open_gallery

    found = open_gallery(folder, run.dim, run=run, modality=modality)
    if not isinstance(found, EmbeddingIndex):
        ids, vectors = found
        found = EmbeddingIndex(build_index(vectors, "flat"), ids)
    return Gallery(found, False, str(folder))


def served_name(path: Path, taken: set[str]) -> str:
    """A run's name in URLs: its folder name, made unique with -2, -3, ..."""
    base = path.resolve().name or "run"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


def load_served(paths: list[Path], gallery_flags: list[str] | None = None) -> dict[str, ServedRun]:
    """Load every run once (heads now, backbones on first use) with its galleries -> name -> ServedRun."""
    from pcmpipe.runs import load_run

    names: list[str] = []
    for p in paths:
        names.append(served_name(p, set(names)))
    folders = parse_gallery_flags(list(gallery_flags or []), names)
    served: dict[str, ServedRun] = {}
    for name, path in zip(names, paths):
        run = load_run(path)
        for m in folders.get(name, {}):
            run.kind(m)  # an unknown modality is one line naming the run's
        galleries: dict[str, Gallery] = {}
        for m in run.modalities:
            given = folders.get(name, {}).get(m)
            gallery = _folder_gallery(run, m, given) if given is not None else _own_gallery(run, m)
            if gallery is not None:
                galleries[m] = gallery
        if not galleries:
            raise UserError(f"run {path} has no stored embeddings and no --gallery was given for it: nothing to search")
        served[name] = ServedRun(name, run, galleries, run.sources)
    return served
