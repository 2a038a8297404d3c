"""Whether one (modality, split) of an extraction is already cached: the question `extract` and the pipelines
planner both ask, answered by comparing what extraction WOULD write with what the cache holds.

    cfg = ExtractConfig.from_dict({"dataset": "flickr8k", "root": "data/flickr8k", "cache_root": "cache"})
    plan = plan_split(cfg, "I", "train")
    plan.status, plan.reason     # 'cached' | 'stale' | 'new', and why

A split is `cached` only when its manifest is complete, its fingerprint (backbone, weights and their sha256,
preprocessing, precision, dataset, modality, split, limit, format) equals the one extraction would write, its
listing (a digest of the dataset's records: ids, links, captions, media file names and sizes) equals the
dataset's today, and every shard is intact (size, row count and sha256). Anything else is `stale`, with an
action: `resume` (an unfinished cache of these very inputs), `rebuild` (same settings, but the dataset changed or
a shard is damaged: the features can be recomputed, so extraction does it) or `refuse` (built with other
settings or unreadable: extraction stops and names `--overwrite`, since those features may not be reproducible
here).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pcmpipe.augment.views import AUGMENTED_KINDS, VIEWS_FEATURE, ViewSpec
from pcmpipe.backbones import DEFAULT_BACKBONES, backbone_kinds
from pcmpipe.cache.layout import cache_dir, manifest_in
from pcmpipe.cache.manifest import differing_fields, feature_spec, load_manifest
from pcmpipe.cache.reader import damaged_shards, shard_ids
from pcmpipe.cache.writer import cache_fingerprint
from pcmpipe.config.extract import ExtractConfig
from pcmpipe.errors import UserError
from pcmpipe.extract.summary import read_errors
from pcmpipe.modalities import MODALITIES

FEATURE = "features"


@dataclass(frozen=True)
class SplitSpec:
    """What extraction writes for one (modality, split): the ShardWriter's arguments and the listing digest."""

    directory: Path
    features: dict[str, tuple[tuple[int, ...], str]]
    key: str
    links: list[str]
    meta: dict
    fmt: str
    listing: str
    ids: frozenset[str]

    @property
    def fingerprint(self) -> str:
        return cache_fingerprint(features=self.features, key=self.key, links=self.links, meta=self.meta, fmt=self.fmt)


@dataclass(frozen=True)
class SplitPlan:
    """status: 'cached' | 'stale' | 'new'; action (stale only): 'resume' | 'rebuild' | 'refuse'."""

    status: str
    reason: str
    directory: Path
    action: str = ""


def listing_digest(records: list) -> str:
    """sha256 over every record's id, links and payload identity (caption text, media file name and size, vector
    bytes), in id order: it changes when items are added, removed or replaced, not when the data moves."""
    h = hashlib.sha256()
    for r in sorted(records, key=lambda r: r.id):
        payload: object = r.text
        if r.path is not None:
            try:
                size = Path(r.path).stat().st_size
            except OSError:
                size = -1  # missing now: skipped and listed; its return changes the listing
            payload = [Path(r.path).name, size]
        elif r.vector is not None:
            payload = hashlib.sha256(r.vector.tobytes()).hexdigest()
        h.update(json.dumps([r.id, sorted(r.links.items()), payload], ensure_ascii=True).encode() + b"\n")
    return h.hexdigest()


def split_spec(
    ds,
    m: str,
    split: str,
    records: list,
    backbone,
    *,
    cache_root: Path,
    fmt: str,
    limit,
    options,
    dtype="float32",
    listing: str | None = None,
    views: ViewSpec | None = None,
) -> SplitSpec:
    """The cache extraction writes for `records` of (ds, m, split) with `backbone` (None: the dataset's vectors).

    listing: the digest of a streamed dataset's shards (which never lists its records; `records` is then its
    first record only, for the links and the vectors' shape); None: the digest of `records`. views: see
    `split_views`; only then does the cache get a `views` feature and the fingerprint an `augment` entry."""
    from pcmpipe.extract import precision
    from pcmpipe.extract.sources import vector_shape

    key = ds.key(m)
    links = sorted({c for r in records[:1] for c in r.links if c != key})
    if backbone is not None:
        shape = tuple(backbone.feature_shape)
        meta = {**backbone.meta, "precision": precision.label(backbone)}
    else:
        shape = vector_shape(records) or (1,)
        meta = {"source": f"{ds.name} precomputed vectors", "dataset_options": dict(options)}
    meta.update({"dataset": ds.name, "modality": m, "split": split})
    if limit is not None:
        meta["limit"] = limit
    features = {FEATURE: (shape, dtype)}
    if views is not None and backbone is not None:
        features[VIEWS_FEATURE] = ((views.k, *shape), dtype)
        meta["augment"] = views.meta(backbone.modality_kind)
    return SplitSpec(
        cache_dir(cache_root, ds.name, m, split),
        features,
        key,
        links,
        meta,
        fmt,
        listing if listing is not None else listing_digest(records),
        frozenset(r.id for r in records),
    )


def split_views(views: int, seed: int, modality: str, kind: str | None, split: str) -> ViewSpec | None:
    """The views extraction encodes for one split: K > 0 augmented views of the train split's images and
    captions (I and T, the modalities fine-tuning augments; a user's own image or text modality too). None (no
    views: the cache and fingerprint of a plain extraction) for val and test, whose rows are only ever
    evaluated on their clean view, for speech (the paper augments images and text only), for the class
    prompts P (zero-shot inputs, never trained on) and for the dataset's own vectors."""
    paper = MODALITIES.get(modality)
    augmented = paper.unfreezable if paper is not None else kind in AUGMENTED_KINDS
    if views <= 0 or split != "train" or not augmented:
        return None
    return ViewSpec(views, seed)


def compare(spec: SplitSpec, *, hashes: bool = True) -> SplitPlan:
    """How the cache at spec.directory stands against what extraction would write (see the module doc)."""
    d = spec.directory
    path = manifest_in(d)
    if not path.exists():
        return SplitPlan("new", "not extracted yet", d)
    try:
        found = load_manifest(path)
    except UserError as e:
        return SplitPlan("stale", str(e), d, "refuse")
    if found["fingerprint"] != spec.fingerprint:
        wanted = {
            "meta": spec.meta,
            "features": feature_spec(spec.features),
            "key": spec.key,
            "links": spec.links,
            "format": spec.fmt,
        }
        diff = ", ".join(differing_fields(found, wanted)) or "settings"
        return SplitPlan("stale", f"cache {d} was built with other settings ({diff})", d, "refuse")
    changed = _listing_change(spec, found)
    if changed:
        return SplitPlan("stale", f"the dataset changed since {d} was extracted ({changed})", d, "rebuild")
    damaged = damaged_shards(d, found, hashes=hashes)
    if damaged:
        return SplitPlan("stale", f"shard {damaged[0][0]} of {d} is {damaged[0][1]}", d, "rebuild")
    if not found["complete"]:
        return SplitPlan("stale", f"unfinished ({found['num_rows']} of {len(spec.ids)} items)", d, "resume")
    return SplitPlan("cached", f"{found['num_rows']} rows, fingerprint {spec.fingerprint[:12]}", d)


def _listing_change(spec: SplitSpec, found: dict) -> str:
    """'' when the cache was made from the dataset's records as they are now, else what differs."""
    if "listing" in found:
        return "" if found["listing"] == spec.listing else f"{len(spec.ids)} items now, listing digest differs"
    # written before listings were recorded: compare ids (cached rows plus the skipped inputs) instead
    if not found["complete"]:
        return ""  # a resume adds the missing ids; an unfinished old cache has nothing to compare yet
    try:
        have = shard_ids(spec.directory, found)
        have |= {str(e.get("id")) for e in read_errors(spec.directory)}
    except Exception:  # an unreadable shard or errors file: reported as damage by the caller's checks
        return ""
    if have == spec.ids:
        return ""
    return (
        f"{len(spec.ids)} items now, the cache covers {len(have & spec.ids)} of them and {len(have - spec.ids)} others"
    )


def choose_backbone(
    modality: str, kind: str, backbones: Mapping[str, str], weights: Mapping[str, str]
) -> tuple[str, str, str]:
    """-> (backbone name, weights, kind) for `modality`, whose data is of `kind`: keyed by modality or kind, else
    the paper's backbone and 'default' weights."""
    name = backbones.get(modality) or backbones.get(kind) or DEFAULT_BACKBONES[kind]
    if kind not in backbone_kinds(name):
        raise UserError(
            f"backbone {name} encodes {' or '.join(backbone_kinds(name))}, but modality {modality} needs a {kind} "
            f"backbone (e.g. {DEFAULT_BACKBONES[kind]})"
        )
    return name, weights.get(modality) or weights.get(kind) or "default", kind


def plan_split(cfg: ExtractConfig, modality: str, split: str) -> SplitPlan:
    """Would `extract(cfg)` find (modality, split) cached? For planners: loads the backbone (its weights' sha256 is
    part of the answer) and reads the dataset's listing, but encodes nothing and writes nothing."""
    from pcmpipe.backbones import create_backbone, resolve_device
    from pcmpipe.datasets import open_dataset

    ds = open_dataset(cfg.dataset, cfg.dataset_root(), **cfg.dataset_options)
    records = ds.records(modality, split)
    if cfg.limit is not None:
        records = records[: cfg.limit]
    bb = None
    kind = ds.kind(modality)
    if kind is not None:
        name, w, kind = choose_backbone(modality, kind, cfg.backbone_names(), cfg.weights_names())
        bb = create_backbone(name, w, device=resolve_device(cfg.device), kind=kind)
    spec = split_spec(
        ds,
        modality,
        split,
        records,
        bb,
        cache_root=Path(cfg.cache_root),
        fmt=cfg.fmt,
        limit=cfg.limit,
        options=cfg.dataset_options,
        dtype=cfg.dtype,
        views=split_views(cfg.views, cfg.views_seed, modality, kind, split),
    )
    return compare(spec)
