"""`load_run(path) -> Run`: a finished run (or a folder written by `pcmpipe export`) ready to embed and search.

A run knows, per modality, its trained head and the backbone its features came from: the backbone name and
weights are read from the manifests of the caches the run was trained on (`config.json` records them), or, for an
exported folder, from its `config.json`. The backbone is built lazily on the first raw input, and checked against
the weights checksum the cache recorded, so a run never silently embeds with other weights. A feature cache
passed to `embed --cache` must come from the same backbone and weights (`Run.expects`).

config.json is read through `pcmpipe.training.rundir.record` (bounded, validated: a damaged or crafted file is one
line), and a weights string is only ever a known weights name or, in an export, a file inside the export.

Embeddings are the heads' outputs L2-normalised: the cosine the losses trained, as inner products.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pcmpipe.backbones import Backbone, backbone_kind, create_backbone
from pcmpipe.backbones.identity import same_encoder
from pcmpipe.cache import cache_dir
from pcmpipe.cache.layout import manifest_in
from pcmpipe.cache.manifest import load_manifest
from pcmpipe.errors import UserError, file_errors
from pcmpipe.heads import ProjectionHead
from pcmpipe.index import EmbeddingIndex, normalise
from pcmpipe.limits import check_int, check_workers
from pcmpipe.runs.gallery import open_gallery, search_gallery, stored_embedding, stored_gallery  # noqa: F401
from pcmpipe.runs.inputs import encode_inputs
from pcmpipe.runs.outdir import MAX_BATCH_SIZE
from pcmpipe.runs.payload import Hit, ItemSources, item_sources
from pcmpipe.training.rundir.files import COMPLETE_MARKER, is_complete
from pcmpipe.training.rundir.record import EXPORT_KIND, ExportRecord, LiveTower, RunRecord, read_record, settings_of
from pcmpipe.training.rundir.tensors import load_heads

__all__ = ["EXPORT_KIND", "Run", "load_run"]
# Keys of a backbone record: enough to rebuild it and to check it is the one the features came from.
BACKBONE_KEYS = ("backbone", "weights", "weights_sha256")


@dataclass
class Run:
    """A trained run's heads and backbones. Build it with `load_run`."""

    path: Path
    config: dict  # resolved settings (config.json's "config")
    heads: torch.nn.ModuleDict
    logit_scale: float
    shapes: dict[str, tuple[int, ...]]
    backbones: dict[str, dict | None]  # modality -> {"backbone", "weights", "weights_sha256"} or None (vectors)
    fingerprint: str
    record: dict = field(default_factory=dict, repr=False)  # the whole config.json
    _built: dict[str, Backbone] = field(default_factory=dict, repr=False)
    _sources: ItemSources | None = field(default=None, repr=False)

    @property
    def modalities(self) -> list[str]:
        return list(self.shapes)

    @property
    def dim(self) -> int:
        return int(heads_dim(self.heads))

    def _check_modality(self, modality: str) -> None:
        if modality not in self.heads:
            raise UserError(f"run {self.path.name} has no modality {modality!r}; it has {', '.join(self.heads)}")

    def kind(self, modality: str) -> str | None:
        """'image' | 'text' | 'audio' of a modality's backbone; None for vector modalities (A, C, imported)."""
        self._check_modality(modality)
        bb = self.backbones.get(modality)
        return backbone_kind(bb["backbone"]) if bb else None

    def expects(self, modality: str) -> dict[str, str]:
        """What this modality's head was trained on, as messages name it: the backbone and weights checksum where
        the run has a backbone (a fine-tuned tower's own checksum included), else the modality's name (vectors:
        imported, attributes, synthetic). Whether a cache fits is `same_encoder`'s answer (`embed.check_source`)."""
        self._check_modality(modality)
        spec = self.backbones.get(modality)
        if spec is None:
            return {"modality": modality}
        return {k: str(spec[k]) for k in ("backbone", "weights_sha256") if spec.get(k)}

    def backbone(self, modality: str, device: str | torch.device = "cpu") -> Backbone:
        """The backbone that made this modality's features (built once, checked against the recorded weights)."""
        self._check_modality(modality)
        spec = self.backbones.get(modality)
        if spec is None:
            raise UserError(
                f"modality {modality} of run {self.path.name} has no backbone (its features were imported or "
                "computed from vectors); pass features instead (`--cache DIR`, or an array in Python)"
            )
        if modality not in self._built:
            bb = create_backbone(spec["backbone"], spec["weights"], device=device)
            # built from the recorded name, which a family's meta records as resolved: the weights decide
            if not same_encoder({**spec, "backbone": bb.meta.get("backbone")}, bb.meta):
                want = str(spec.get("weights_sha256"))
                raise UserError(
                    f"the weights {spec['weights']!r} of {spec['backbone']} differ from the ones modality {modality} "
                    f"was trained on (sha256 {str(bb.meta.get('weights_sha256'))[:12]} vs {want[:12]}); "
                    "restore them, or re-extract and retrain"
                )
            self._built[modality] = bb
        return self._built[modality]

    # ---- embedding ----
    @torch.no_grad()
    def project(self, modality: str, features: np.ndarray | torch.Tensor, batch: int = 4096) -> np.ndarray:
        """Backbone features [N, *shape] through the modality's head -> L2-normalised float32 [N, dim]."""
        self._check_modality(modality)
        x = torch.as_tensor(np.asarray(features, dtype=np.float32))
        if tuple(x.shape[1:]) != self.shapes[modality]:
            raise UserError(
                f"features of shape {tuple(x.shape[1:])} do not fit the {modality} head of run "
                f"{self.path.name}, which takes {self.shapes[modality]}"
            )
        head = self.heads[modality]
        device = next(head.parameters()).device
        out = [head(x[i : i + batch].to(device)).float().cpu() for i in range(0, x.shape[0], batch)]
        emb = torch.cat(out).numpy() if out else np.zeros((0, self.dim), np.float32)
        return normalise(emb)

    def embed(
        self, modality: str, inputs: Sequence[str | Path] | np.ndarray, *, batch_size: int = 64, strict: bool = True
    ) -> np.ndarray:
        """Coordinated embeddings [N, dim] (normalised) of texts, image/audio files, or features (an array).

        strict: an input the backbone cannot take (missing file, empty text) is a UserError; with False it is
        left out (use `embed_inputs` to learn which)."""
        if isinstance(inputs, np.ndarray | torch.Tensor):
            return self.project(modality, inputs)
        ids, emb, skipped = self.embed_inputs(modality, inputs, batch_size=batch_size)
        if strict and skipped:
            first = next(iter(skipped))
            raise UserError(f"cannot embed {modality} input {first!r}: {skipped[first]}; fix it or leave it out")
        return emb

    def embed_inputs(
        self,
        modality: str,
        inputs: Sequence[str | Path],
        *,
        ids: Sequence[str] | None = None,
        batch_size: int = 64,
        workers: int = 0,
    ) -> tuple[list[str], np.ndarray, dict[str, str]]:
        """Raw inputs -> (ids kept, embeddings [N, dim], skipped id -> reason). Text ids default to input
        positions (0, 1, ...); file ids to file stems. workers: image/audio decoding processes (0: this one)."""
        if isinstance(inputs, str | Path):
            raise TypeError("inputs is a list of texts or paths, not one string")
        check_int("batch_size", batch_size, low=1, high=MAX_BATCH_SIZE, why="inputs per forward pass")
        check_workers("workers", workers)
        bb = self.backbone(modality)
        if ids is None and bb.modality_kind == "text":
            ids = [str(i) for i in range(len(inputs))]
        # each batch goes through the head as it is encoded: only embeddings accumulate, not backbone features
        emb = encode_inputs(
            bb, list(inputs), ids=ids, batch_size=batch_size, workers=workers, head=lambda f: self.project(modality, f)
        )
        return emb.ids, emb.features, emb.skipped

    # ---- galleries and search ----
    @property
    def split_test(self) -> str:
        """The split whose embeddings the run stored (what `gallery` searches by default)."""
        return str(self.config.get("split_test", "test"))

    def gallery(self, modality: str) -> tuple[np.ndarray, np.ndarray]:
        """(ids, normalised embeddings) the run stored for its test split (`embeddings/<m>.safetensors`)."""
        self._check_modality(modality)
        return stored_gallery(self.path, modality, self.split_test)

    def embedding_of(self, modality: str, row_id: str) -> np.ndarray:
        """The stored test embedding [1, dim] of one row (a cached id) of the run."""
        return stored_embedding(self, modality, row_id)

    @property
    def sources(self) -> ItemSources:
        """Where the stored rows of each modality came from (their caption or media file; runs.payload)."""
        if self._sources is None:
            self._sources = item_sources(self.path)
        return self._sources

    def search(
        self,
        query: str | Path | np.ndarray,
        from_: str,
        to: str,
        k: int = 10,
        gallery: EmbeddingIndex | tuple[np.ndarray, np.ndarray] | str | Path | None = None,
    ) -> list[Hit]:
        """The `k` rows of modality `to` closest to `query` (a text, a file, or one row's features of `from_`),
        best first, each a `Hit` (id, score, and for the run's own rows their caption `text` or media `path`).

        gallery: an `EmbeddingIndex`, (ids, vectors), a folder written by `pcmpipe embed` / `pcmpipe index`, or
        None for the run's own stored test embeddings. Without an index the scores are one exact matmul."""
        self._check_modality(to)
        q = self.project(from_, query[None]) if isinstance(query, np.ndarray) else self.embed(from_, [query])
        found = search_gallery(self, to, q, k, gallery)[0]
        if gallery is None:
            return self.sources.attach(to, found)
        return [Hit(i, s) for i, s in found]


def heads_dim(heads: torch.nn.ModuleDict) -> int:
    """D of the heads (every head of a run has the same output size)."""
    head = next(iter(heads.values()))
    assert isinstance(head, ProjectionHead), "build_heads makes ProjectionHeads"
    return head.dim


# ---- loading ----
# Weights names that are never paths (pcmpipe.backbones.weights.parse_weights reads any other string that names
# an existing file as a checkpoint), and an open_clip pretrained tag: letters, digits, "_" and "-" only.
KNOWN_WEIGHTS = re.compile(r"^(default|random(:-?[0-9]+)?|hf:[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)$")
WEIGHTS_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def safe_weights(weights: str, where: str, folder: Path | None = None) -> str:
    """A recorded weights string that can only load what it should: a known weights name or tag, or (for an
    export, `folder`) a file inside the folder, resolved, so neither `..`, an absolute path nor a symbolic
    link reaches outside it. -> the string to build the backbone with; one UserError line otherwise."""
    if KNOWN_WEIGHTS.match(weights):
        return weights
    if folder is not None and weights not in ("", ".", "..") and "/" not in weights and "\\" not in weights:
        inside = folder / weights
        if inside.exists() or inside.is_symlink():
            real = inside.resolve()
            if real.is_relative_to(folder.resolve()) and real.is_file():
                return str(real)
            raise UserError(f"{where}: weights {weights!r} lead outside {folder}; an export names only its own files")
    if WEIGHTS_TAG.match(weights) and not Path(weights).exists():
        return weights
    inside_note = f"a file inside {folder} nor " if folder is not None else ""
    raise UserError(
        f"{where}: weights {weights[:80]!r} is neither {inside_note}a known weights name (default, an open_clip "
        "tag, hf:ORG/NAME, random[:SEED])"
    )


def _cache_meta(run_dir: Path, rec: RunRecord, modality: str) -> dict | None:
    """The manifest meta of the cache the run trained `modality` on (recorded path, else beside the run)."""
    cfg = rec.config
    entry = rec.caches.get(cfg.split_train, {}).get(modality)
    candidates = [Path(entry.path)] if entry is not None and entry.path else []
    # runs live at <cache_root>/runs/<name> by default: a relative path recorded elsewhere still resolves
    candidates.append(cache_dir(run_dir.resolve().parent.parent, cfg.dataset, modality, cfg.split_train))
    for directory in candidates:
        if manifest_in(directory).is_file():
            meta = load_manifest(manifest_in(directory)).get("meta")
            return meta if isinstance(meta, dict) else None
    return None


def _tower(run_dir: Path, modality: str, tower: LiveTower) -> dict:
    """The backbone record of a tower fine-tuning unfroze: its weights file in the run and their checksum (the
    file's metadata records it), so an embedding cache from the frozen tower is never taken for its features."""
    from safetensors import safe_open

    path = run_dir / f"{tower.kind}_backbone.safetensors"
    sha = None
    if path.is_file():
        with file_errors(path, "read", "fine-tuned tower"), safe_open(str(path), framework="pt") as f:
            sha = (f.metadata() or {}).get("tower_sha256")
    return {"backbone": tower.name, "weights": str(path), "weights_sha256": sha}


def backbones_of(run_dir: Path, rec: RunRecord) -> dict[str, dict | None]:
    """modality -> backbone record (BACKBONE_KEYS) of a training run; None where features had no backbone."""
    out: dict[str, dict | None] = {}
    for m in rec.config.modalities:
        if m in rec.backbones:  # an unfrozen tower of fine-tuning: its best epoch's weights are in the run
            out[m] = _tower(run_dir, m, rec.backbones[m])
            continue
        meta = _cache_meta(run_dir, rec, m)
        out[m] = None
        if meta is not None and isinstance(meta.get("backbone"), str) and isinstance(meta.get("weights"), str):
            try:
                backbone_kind(meta["backbone"])
            except UserError:
                continue  # "synthetic", "imported", ...: not a backbone pcmpipe can build
            where = f"the {m} cache of run {run_dir}"
            out[m] = {k: meta.get(k) for k in BACKBONE_KEYS} | {"weights": safe_weights(meta["weights"], where)}
    return out


def _export_backbones(path: Path, rec: ExportRecord) -> dict[str, dict | None]:
    """An export's backbone records, each weights string checked to stay inside the folder (safe_weights)."""
    out: dict[str, dict | None] = {}
    for m, bb in rec.backbones.items():
        where = f"export {path} (backbones.{m}.weights)"
        out[m] = None if bb is None else {**bb.model_dump(), "weights": safe_weights(bb.weights, where, path)}
    return out


def load_run(path: str | Path, device: str | torch.device = "cpu") -> Run:
    """A finished run directory (`cache/runs/<name>`) or a folder written by `pcmpipe export`. A damaged or
    crafted config.json is one UserError line naming the field (pcmpipe.training.rundir.record)."""
    path = Path(path)
    rec = read_record(path)
    if isinstance(rec, ExportRecord):
        backbones = _export_backbones(path, rec)
    else:
        if not is_complete(path):
            raise UserError(f"run {path} is not finished (no {COMPLETE_MARKER}); train it to the end first")
        backbones = backbones_of(path, rec)
    heads, scale = load_heads(path, device)
    shapes = {m: tuple(h.in_shape) for m, h in heads.items()}
    cfg = settings_of(rec).model_dump(mode="json")
    return Run(path, cfg, heads, scale, shapes, backbones, rec.fingerprint, rec.model_dump(mode="json"))
