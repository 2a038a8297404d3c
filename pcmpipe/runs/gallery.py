"""Galleries a run searches: its own stored test embeddings, an embeddings cache (`pcmpipe embed`) or an index
folder (`pcmpipe index`), each checked to be of the run and the modality it is searched with.

A gallery's vectors only mean something in the head space of the run that embedded them, and only as the
modality they were embedded as: another run's vectors, or text rows searched as images, give scores that look
like any others. So a gallery on disk must name both (`run_fingerprint` and `modality`, which `pcmpipe embed`
writes into its cache's meta and `pcmpipe index` copies into index.json), and they must be the run's and the
searched modality's. An embeddings cache is opened with its shards' sha256 verified (an index folder checks
its own, `pcmpipe.index.folder`): a flipped byte is refused, not scored.

Nothing here builds a backbone or reads heads: `StoredRun` is what config.json says (fingerprint, modalities,
test split), so a search from a stored row (`--query-id`) needs neither torch's model code nor transformers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pcmpipe.errors import UserError

EMBED_HINT = "make one with `pcmpipe embed RUN --modality M ... --out DIR` (and `pcmpipe index DIR` for an index)"


class SearchableRun(Protocol):
    """What searching needs of a run: a `Run` (load_run) or a `StoredRun`."""

    path: Path
    fingerprint: str

    @property
    def split_test(self) -> str: ...

    def gallery(self, modality: str) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class StoredRun:
    """A run directory or exported folder as its config.json describes it, read without torch."""

    path: Path
    fingerprint: str
    modalities: list[str]
    split_test: str

    def check_modality(self, modality: str, flag: str) -> None:
        if modality not in self.modalities:
            raise UserError(
                f"{flag} {modality}: run {self.path.name} has no modality {modality!r}; "
                f"it has {', '.join(self.modalities)}"
            )

    def gallery(self, modality: str) -> tuple[np.ndarray, np.ndarray]:
        return stored_gallery(self.path, modality, self.split_test)


def read_run_record(path: str | Path) -> StoredRun:
    """fingerprint, modalities and test split from config.json (a run's, or an export's); one line otherwise."""
    from pcmpipe.training.rundir.record import read_record, settings_of

    record = read_record(path)
    settings = settings_of(record)
    return StoredRun(Path(path), record.fingerprint, list(settings.modalities), settings.split_test)


def stored_gallery(run_dir: Path, modality: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids, normalised embeddings) the run stored for its test split (`embeddings/<m>.safetensors`)."""
    from pcmpipe.index import normalise
    from pcmpipe.training.rundir.files import EMBEDDINGS
    from pcmpipe.training.rundir.tensors import load_modality_embeddings

    if not (run_dir / EMBEDDINGS / f"{modality}.safetensors").is_file():
        raise UserError(
            f"{run_dir} stores no {modality} embeddings of its {split} split to search; embed a gallery with "
            f"`pcmpipe embed {run_dir} --modality {modality} ... --out DIR` and pass --gallery DIR"
        )
    emb = load_modality_embeddings(run_dir, modality)  # this modality only: serve loads each in turn
    return np.asarray(emb.columns["id"], dtype=str), normalise(emb.embedding.numpy())


def stored_embedding(run: SearchableRun, modality: str, row_id: str) -> np.ndarray:
    """The stored test embedding [1, dim] of one row (a cached id) of the run."""
    ids, emb = run.gallery(modality)
    hit = np.flatnonzero(ids == str(row_id))
    if not hit.size:
        raise UserError(
            f"no {modality} row with id {row_id!r} among the {len(ids)} of the {run.split_test} split stored in "
            f"{run.path.name}"
        )
    return emb[hit[:1]]


def folder_kind(path: str | Path, wanted: str = "an embeddings cache or an index folder") -> str:
    """'index', 'embeddings' or 'run' for a folder that looks like one, from its file names alone (no heavy
    import); otherwise one line saying what the path is and what to pass (`wanted`) instead."""
    from pcmpipe.cache.layout import manifest_in
    from pcmpipe.training.rundir.files import is_run_folder

    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist; pass {wanted}: {EMBED_HINT}")
    if not path.is_dir():
        raise UserError(f"{path} is a file; pass {wanted}: {EMBED_HINT}")
    if (path / "index.json").is_file() or (path / "index.faiss").is_file():
        return "index"
    if manifest_in(path).is_file():
        return "embeddings"
    if is_run_folder(path):
        return "run"
    raise UserError(f"{path} is not {wanted} (it has no manifest or index.json); {EMBED_HINT}")


def gallery_kind(path: str | Path) -> str:
    """'index' or 'embeddings' for a `--gallery` folder; one line for anything else."""
    found = folder_kind(path)
    if found == "run":
        raise UserError(
            f"{path} is a run directory, not a gallery (a run searches its own stored test embeddings without "
            f"--gallery); for other rows, {EMBED_HINT}"
        )
    return found


def check_named(where: str, meta: Any, run: SearchableRun | None, modality: str | None) -> None:
    """The gallery's meta must name the run (fingerprint) and the modality it is searched with."""
    meta = meta if isinstance(meta, dict) else {}
    fp, mod = meta.get("run_fingerprint"), meta.get("modality")
    if not isinstance(fp, str) or not isinstance(mod, str):
        raise UserError(f"{where} does not name the run and modality its rows were embedded with; {EMBED_HINT}")
    if run is not None and fp != run.fingerprint:
        raise UserError(
            f"{where} was embedded by run {meta.get('run')!r} (fingerprint {fp[:12]}), not by {run.path.name} "
            f"({run.fingerprint[:12]}): its vectors are in another head space; embed the gallery with {run.path.name}"
        )
    if modality is not None and mod != modality:
        raise UserError(f"{where} holds {mod} embeddings, not {modality}; pass a gallery of {modality} (or --to {mod})")


def open_gallery(
    path: str | Path, dim: int | None = None, *, run: SearchableRun | None = None, modality: str | None = None
) -> Any:
    """A folder from `pcmpipe index` (-> EmbeddingIndex) or `pcmpipe embed` (-> (ids, normalised vectors)),
    checked to be of `run` and `modality` (when given) and of `dim` values per row."""
    from pcmpipe.index import open_index

    path = Path(path)
    if gallery_kind(path) == "index":
        index = open_index(path)
        check_named(f"index {path}", index.meta.get("meta"), run, modality)
        if dim is not None and index.dim != dim:
            raise UserError(f"index {path} has {index.dim} dimensions, the run's embeddings {dim}")
        return index
    return _open_embeddings(path, dim, run, modality)


def _open_embeddings(path: Path, dim: int | None, run: SearchableRun | None, modality: str | None) -> Any:
    from pcmpipe.cache import open_cache
    from pcmpipe.index import normalise

    reader = open_cache(path)  # every shard's sha256 checked (docs/reliability.md: the cost on 10^5 rows)
    if "embedding" not in reader.feature_names:
        raise UserError(f"{path} is a feature cache, not embeddings; {EMBED_HINT}")
    check_named(f"embeddings cache {path}", reader.meta, run, modality)
    cols, feats = reader.read(["embedding"])
    emb = feats["embedding"].astype(np.float32)
    if dim is not None and emb.shape[1] != dim:
        raise UserError(f"embeddings in {path} have {emb.shape[1]} dimensions, the run's {dim}")
    return np.asarray(cols["id"], dtype=str), normalise(emb)


def search_gallery(
    run: SearchableRun, to: str, queries: np.ndarray, k: int, gallery: Any = None
) -> list[list[tuple[str, float]]]:
    """Top-k (id, score) per query row [Q, dim] against a gallery of modality `to`: a folder (checked as
    `open_gallery`), an `EmbeddingIndex` (checked when its meta names a run), (ids, vectors), or None for the
    run's own stored test embeddings. Without an index the scores are one exact matmul."""
    import torch

    from pcmpipe.index import EmbeddingIndex, normalise

    if k < 1:
        raise UserError("-k must be at least 1")
    dim = int(queries.shape[1])
    if isinstance(gallery, str | Path):
        gallery = open_gallery(gallery, dim, run=run, modality=to)
    if isinstance(gallery, EmbeddingIndex):
        if isinstance(gallery.meta.get("meta"), dict):
            check_named("the index", gallery.meta["meta"], run, to)
        if gallery.dim != dim:
            raise UserError(f"the index has {gallery.dim} dimensions, the run's embeddings {dim}")
        ids, scores = gallery.search(queries, k)
        return [[(str(i), float(s)) for i, s in zip(ri, rs) if i != ""] for ri, rs in zip(ids, scores)]
    g_ids, g_emb = gallery if gallery is not None else run.gallery(to)
    if g_emb.shape[1] != dim:
        raise UserError(f"gallery vectors have {g_emb.shape[1]} dimensions, the run's embeddings {dim}")
    sim = torch.as_tensor(normalise(queries)) @ torch.as_tensor(normalise(g_emb)).T
    top = torch.topk(sim, min(k, sim.shape[1]), dim=1)
    g_ids = np.asarray(g_ids, dtype=str)
    return [
        [(str(g_ids[j]), float(s)) for j, s in zip(rows.tolist(), vals.tolist())]
        for rows, vals in zip(top.indices, top.values)
    ]
