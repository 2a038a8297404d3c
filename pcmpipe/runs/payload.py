"""What a search result is, besides its id and score: the caption text, or the image/audio file it was made from.

A run's stored embeddings are rows of the caches it was trained on, and extraction records in each cache's
manifest the dataset and the dataset root the rows were read from (`data_root`). So the payload of a stored row
is found by reading the dataset's records of that split again (`pcmpipe.datasets.open_dataset`), once per
modality, and looking the id up. A cache extracted before roots were recorded, an exported run, a dataset
whose root moved, or a streamed dataset (media inside tar shards) gives results without payloads, and
`ItemSources.note` says why; ids and scores are never affected.

Only the run's own stored gallery is looked up this way: an embeddings cache from `pcmpipe embed` names rows
by file stem or position, which are not the dataset's ids. Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pcmpipe.errors import UserError


class Hit(tuple):
    """One search result: the pair (id, cosine score), as results always were (`for rid, score in hits`), with
    the row's caption `text` or media `path` as attributes when known. Equality is that of the pair."""

    text: str | None
    path: str | None

    def __new__(cls, id: str, score: float, text: str | None = None, path: str | None = None) -> Hit:
        self = super().__new__(cls, (str(id), float(score)))
        self.text, self.path = text, path
        return self

    @property
    def id(self) -> str:
        return str(self[0])

    @property
    def score(self) -> float:
        return float(self[1])

    def __repr__(self) -> str:
        extra = f", text={self.text!r}" if self.text is not None else f", path={self.path!r}" if self.path else ""
        return f"Hit({self.id!r}, {self.score:.4f}{extra})"

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "score": self.score}
        if self.text is not None:
            out["text"] = self.text
        if self.path is not None:
            out["path"] = self.path
        return out


@dataclass(frozen=True)
class ItemSource:
    """Where one modality's stored rows were read from: the dataset, its root and the split."""

    dataset: str
    root: Path
    split: str


def _manifest_of(run_dir: Path, entry: Any, dataset: str, modality: str, split: str) -> dict | None:
    """The manifest of the cache a run read for (modality, split): the recorded path, else the default place
    beside the run (<cache_root>/runs/<name>)."""
    from pcmpipe.cache.layout import cache_dir, manifest_in
    from pcmpipe.cache.manifest import load_manifest

    candidates = [Path(entry.path)] if entry is not None and entry.path else []
    try:
        candidates.append(cache_dir(run_dir.resolve().parent.parent, dataset, modality, split))
    except UserError:
        pass
    for directory in candidates:
        if manifest_in(directory).is_file():
            try:
                found = load_manifest(manifest_in(directory))
            except UserError:
                return None
            return found if isinstance(found, dict) else None
    return None


@dataclass
class ItemSources:
    """Per modality, where a run's stored rows came from, and (read lazily, once) each row's payload."""

    sources: dict[str, ItemSource]
    notes: dict[str, str]  # modality -> why its rows have no payload
    _items: dict[str, dict[str, tuple[str | None, str | None]]] = field(default_factory=dict, repr=False)

    def note(self, modality: str) -> str | None:
        return self.notes.get(modality)

    def roots(self) -> list[Path]:
        """The dataset roots media may be served from (resolved)."""
        return sorted({s.root for s in self.sources.values()})

    def items(self, modality: str) -> dict[str, tuple[str | None, str | None]]:
        """id -> (text, path) of every row of the modality's split (empty when not known; see `note`)."""
        if modality not in self._items:
            self._items[modality] = self._read(modality)
        return self._items[modality]

    def _read(self, modality: str) -> dict[str, tuple[str | None, str | None]]:
        from pcmpipe.datasets import open_dataset

        src = self.sources.get(modality)
        if src is None:
            return {}
        try:
            records = open_dataset(src.dataset, src.root).records(modality, src.split)
        except (UserError, OSError, KeyError, ValueError, TypeError) as err:
            self.notes[modality] = f"the {src.dataset} files under {src.root} could not be read again: {err}"
            return {}
        return {r.id: (r.text, str(r.path) if r.path is not None else None) for r in records}

    def attach(self, modality: str, hits: list[tuple[str, float]]) -> list[Hit]:
        """(id, score) pairs of stored `modality` rows -> Hits with their text or media path where known."""
        found = self.items(modality)
        return [Hit(i, s, *found.get(i, (None, None))) for i, s in hits]


def item_sources(run_dir: str | Path, split: str | None = None) -> ItemSources:
    """Where each modality's rows of the run's `split` (default: its test split, the stored one) came from,
    as the caches it read recorded it. Never raises for a missing or old cache: that modality gets a note."""
    from pcmpipe.training.rundir.record import ExportRecord, read_record

    run_dir = Path(run_dir)
    record = read_record(run_dir)
    if isinstance(record, ExportRecord):
        mods = list(record.modalities)
        why = "an exported run records no dataset files; search the run directory it was exported from"
        return ItemSources({}, dict.fromkeys(mods, why))
    cfg = record.config
    split = split or cfg.split_test
    sources: dict[str, ItemSource] = {}
    notes: dict[str, str] = {}
    for m in cfg.modalities:
        entry = record.caches.get(split, {}).get(m)
        manifest = _manifest_of(run_dir, entry, cfg.dataset, m, split)
        root = manifest.get("data_root") if manifest else None
        meta = manifest.get("meta") if manifest else None
        dataset = meta.get("dataset") if isinstance(meta, dict) else None
        if not isinstance(root, str) or not isinstance(dataset, str):
            notes[m] = f"the {m} {split} cache does not record its dataset root (extracted by an older pcmpipe)"
        elif not Path(root).is_dir():
            notes[m] = f"the dataset root {root} recorded by the {m} {split} cache is gone"
        else:
            sources[m] = ItemSource(dataset, Path(root).resolve(), split)
    return ItemSources(sources, notes)
