"""Data of the fine-tuning stage: which modality comes from where, and batches of raw inputs.

Per split, every modality becomes a `pcmpipe.samples.ModalityData` so the usual join (`samples.join`) and
evaluation (pcmpipe.training.evaluate) apply unchanged:

- an unfrozen modality (I or T) is *live*: its rows are the dataset's records, its features are computed
  each step from raw pixels / captions by the tower being trained (placeholder features [N, 0] here);
- any other modality is read from the feature cache `cache_root/<dataset>/<m>/<split>`; a missing cache is
  computed once by `pcmpipe.extract.extract` (frozen I/T backbone as configured, A/C the dataset's vectors)
  and is then an ordinary cache that a resume, `pcmpipe train` or the report reuse.
Validation and test rows of a live modality are re-encoded by the current tower through the functions
extraction uses (pcmpipe.extract.sources), without augmentation.

`LiveInputs` loads one sample's raw inputs (augmented when training: timm for images, EDA for captions,
both seeded per (run seed, epoch, sample) so a resumed run sees the same pixels and words).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pcmpipe.augment import EDA, SeededImageTransform, image_train_transform, sample_seed
from pcmpipe.backbones import Backbone
from pcmpipe.datasets import Record
from pcmpipe.datasets.media import check_image_size
from pcmpipe.errors import UserError
from pcmpipe.extract.sources import Encoded, decoding_loader, image_batches, text_batches

# TOWER_KINDS: modality -> the kind of frozen backbone that extracts it when no cache exists (others: the records'
# vectors)
from pcmpipe.modalities import TOWER_KINDS as FROZEN_KIND
from pcmpipe.samples import ModalityData, load_modality
from pcmpipe.training.events import Note, OnEvent


def _columns(records: list[Record], key: str) -> dict[str, np.ndarray]:
    """'id' + every link column of the records (the cache's column layout)."""
    names = sorted({k for r in records for k in r.links} | {key})
    cols = {"id": np.asarray([r.id for r in records], dtype=str)}
    for n in names:
        cols[n] = np.asarray([r.links.get(n, "") for r in records], dtype=str)
    return cols


def placeholder(modality: str, key: str, records: list[Record], source: str) -> ModalityData:
    """A live modality: the records' ids and links, features [N, 0] (computed per batch instead)."""
    return ModalityData(modality, key, _columns(records, key), torch.empty(len(records), 0), "", source)


def encode_records(
    modality: str, key: str, records: list[Record], backbone: Backbone, batch: int, workers: int, source: str
) -> ModalityData:
    """Features of `records` through `backbone` (its inference preprocessing) -> ModalityData [N_ok, D].

    Records that cannot be encoded (missing image, empty caption) are left out, as extraction does.
    """
    if backbone.modality_kind == "image":
        parts = image_batches(backbone, records, batch, workers)
    elif backbone.modality_kind == "text":
        parts = text_batches(backbone, records, batch)
    else:
        raise UserError(f"fine-tuning handles image and text backbones, not {backbone.modality_kind}")
    kept: list[Record] = []
    feats: list[np.ndarray] = []
    for part in parts:
        if isinstance(part, Encoded):
            kept.extend(part.records)
            feats.append(part.features)
    if not kept:
        first = records[0].id if records else "-"
        raise UserError(f"none of the {len(records)} {modality} records could be encoded (first: {first})")
    order = np.argsort(np.asarray([r.id for r in kept], dtype=str), kind="stable")  # text batches come length-sorted
    kept = [kept[i] for i in order]
    features = torch.from_numpy(np.ascontiguousarray(np.concatenate(feats)[order], dtype=np.float32))
    return ModalityData(modality, key, _columns(kept, key), features, "", source)


def cached_or_none(cache_root: str | Path, dataset: str, modality: str, split: str) -> ModalityData | None:
    """The cached features of (dataset, modality, split), or None when that cache does not exist."""
    from pcmpipe.cache.layout import manifest_path

    if not manifest_path(cache_root, dataset, modality, split).is_file():
        return None
    return load_modality(cache_root, dataset, modality, split)


class LiveInputs(torch.utils.data.Dataset):
    """Raw inputs of the live modalities for one split: item = sample index -> (sample, {m: tensor | str})."""

    def __init__(
        self,
        records: dict[str, list[Record]],
        kinds: dict[str, str],
        idx: dict[str, torch.Tensor],
        image_transform: Callable | None,  # None when no image modality is live
        augment: bool,
        eda: EDA | None,
        seed: int,
        size: int,
    ) -> None:
        self.records, self.kinds, self.size = records, kinds, size
        self.idx = {m: idx[m].cpu() for m in records}
        self.seeded = SeededImageTransform(image_transform) if augment and image_transform is not None else None
        self.plain = image_transform
        self.eda = eda if augment else None
        self.seed, self.epoch = seed, 0

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, sample: int):
        from PIL import Image

        out = {}
        for m, recs in self.records.items():
            rec = recs[int(self.idx[m][sample])]
            s = sample_seed(self.seed, self.epoch, sample)
            if self.kinds[m] == "image":
                assert rec.path is not None and self.plain is not None, "an image record has a path and a transform"
                try:
                    with Image.open(rec.path) as im:
                        check_image_size(*im.size, rec.path)  # a crafted header must not reach the resize
                        im.load()
                        out[m] = self.seeded(im, s) if self.seeded else self.plain(im.convert("RGB"))
                except (OSError, ValueError, TypeError) as e:
                    raise UserError(
                        f"cannot read training image {rec.path} ({type(e).__name__}); fix or remove it "
                        "(extraction lists such files in its error report)"
                    ) from None
            else:
                text = rec.text or ""
                out[m] = self.eda(text, s) if self.eda else text
        return sample, out


def collate(items) -> tuple[torch.Tensor, dict[str, list]]:
    samples = torch.tensor([s for s, _ in items], dtype=torch.long)
    return samples, {m: [x[m] for _, x in items] for m in items[0][1]}


def live_transform(backbone: Backbone, augment: bool) -> Callable:
    """timm's training transform at the tower's input size (augment) or the tower's own inference transform."""
    if not augment:
        return backbone.preprocess
    size = backbone.meta.get("preprocess", {}).get("size", 224)
    size = size[0] if isinstance(size, (list, tuple)) else int(size)
    return image_train_transform(size)


def live_loader(dataset: LiveInputs, batches: list[list[int]], workers: int, pin: bool):
    """Batches in the given order (the epoch's seeded permutation), decoded and augmented by `workers` processes."""
    return decoding_loader(dataset, batches, workers, collate, pin, prefetch=2)


def _check_backbone(directory: str, name: str, weights: str) -> None:
    """A cached frozen modality must come from the backbone the run is configured with (else mixed towers)."""
    from pcmpipe.backbones import parse_weights
    from pcmpipe.cache.layout import manifest_in
    from pcmpipe.cache.manifest import load_manifest

    meta = load_manifest(manifest_in(directory)).get("meta", {})
    want = (name, parse_weights(weights).label)
    have = (meta.get("backbone"), meta.get("weights"))
    if have[0] is not None and (have[0] != want[0] or (want[1] != "checkpoint" and have[1] != want[1])):
        raise UserError(
            f"cache {directory} was extracted with {have[0]} ({have[1]}), but this run's frozen backbone "
            f"is {want[0]} ({want[1]}); pass matching --image-backbone/--text-backbone/--weights-* "
            "or another --cache-root"
        )


class Sources:
    """Builds each split's modalities (live / cached / computed once) and keeps the live records."""

    def __init__(self, cfg, ds, live_backbones: dict, device: torch.device, emit: OnEvent) -> None:
        self.cfg, self.ds, self.live, self.device, self.emit = cfg, ds, live_backbones, device, emit
        self.provenance: dict[str, dict] = {}

    def _extract(self, m: str, split: str) -> None:
        """Write the missing cache of a frozen modality with the configured frozen backbone (or its vectors)."""
        from pcmpipe.config import ExtractConfig
        from pcmpipe.extract import extract

        cfg = self.cfg
        kind = FROZEN_KIND.get(m)
        what = f"the frozen {cfg.backbone_spec(kind)[0]}" if kind else "the dataset's vectors"
        self.emit(Note(f"no cache for {m} {split} under {cfg.cache_root}: extracting it once with {what}"))
        backbones = {k: cfg.backbone_spec(k)[0] for k in ("image", "text")}
        weights = {k: cfg.backbone_spec(k)[1] for k in ("image", "text")}
        extract(
            ExtractConfig.from_dict(
                {
                    "dataset": cfg.dataset,
                    "root": cfg.data_root,
                    "modalities": [m],
                    "splits": [split],
                    "backbones": backbones,
                    "weights": weights,
                    "device": str(self.device),
                    "batch_size": min(cfg.encode_batch, 256),
                    "workers": cfg.num_workers,
                    "cache_root": cfg.cache_root,
                }
            )
        )

    def split(self, split: str):
        """-> (SplitData over all modalities, live modality -> records aligned with its placeholder rows)."""
        from pcmpipe.samples import join

        cfg, mods, records, prov = self.cfg, {}, {}, {}
        for m in cfg.modalities:
            key = self.ds.key(m)
            if m in self.live:
                records[m] = self.ds.records(m, split)
                mods[m] = placeholder(m, key, records[m], f"{cfg.data_root} (live)")
                bb = self.live[m]
                prov[m] = {"live": True, "backbone": bb.name, "base_weights": bb.meta.get("weights")}
                continue
            d = cached_or_none(cfg.cache_root, cfg.dataset, m, split)
            if d is not None and m in FROZEN_KIND:
                _check_backbone(d.directory, *cfg.backbone_spec(FROZEN_KIND[m]))
            if d is None:  # computed once, through `pcmpipe extract`, into the cache (so a resume reads it)
                self._extract(m, split)
                d = load_modality(cfg.cache_root, cfg.dataset, m, split)
            prov[m] = {"path": d.directory, "fingerprint": d.fingerprint, "rows": d.rows}
            mods[m] = d
        self.provenance[split] = prov
        return join(split, mods), records

    def standardisation(self, split: str, data, standardize: str) -> dict:
        """m -> (mean, scale or None) for `standardize`, as stage two computes them (`samples.standardisation`).

        A frozen modality's moments are of its cached rows. A live modality has no fixed rows, so its moments
        are those of its tower's *initial* weights on the split: the cache of that backbone (extracted once when
        missing, like a frozen modality's), so a fine-tuned run starts from exactly the standardisation of the
        frozen run it is compared with, and keeps it while the tower moves (docs/conventions.md).
        """
        from pcmpipe.samples import standardisation

        if standardize == "none":
            return {}
        rows = {}
        for m, d in data.modalities.items():
            if m in self.live:
                d = cached_or_none(self.cfg.cache_root, self.cfg.dataset, m, split)
                if d is None:
                    self._extract(m, split)
                    d = load_modality(self.cfg.cache_root, self.cfg.dataset, m, split)
                _check_backbone(d.directory, *self.cfg.backbone_spec(self.live[m].modality_kind))
                self.provenance[split][m]["standardised_from"] = d.fingerprint
            rows[m] = d
        return standardisation(rows, standardize)


def eval_modalities(model, live: dict, data, records: dict, cfg, device) -> dict:
    """The split's modalities for evaluation: live ones re-encoded by the current towers (inference transform)."""
    mods = {}
    was = model.training
    model.eval()
    for m, d in data.modalities.items():
        if m in live:
            d = encode_records(m, d.key, records[m], live[m], cfg.encode_batch, cfg.num_workers, d.directory)
        d.features = d.features.to(device)
        mods[m] = d
    model.train(was)
    return mods
