"""The manifest beside a cache's shards: what the cache is (fingerprint) and which shards are finished.

`.manifest.json` is rewritten atomically after every finished shard, so it always lists exactly the
shards a resumed writer must keep. Distributed ranks each write `.manifest.rNNN.json` beside their own
`part-rNNN-*` shards; `merge_manifests` joins them into the final `.manifest.json`. `hide_legacy_names`
moves a cache written before the names were hidden (`manifest.json`, `errors.jsonl`) to the hidden names.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pcmpipe.atomic import replace, write_text

# the file names belong to the tree (MANIFEST and rank_manifest_name are re-exported here for the writer)
from pcmpipe.cache.layout import (  # noqa: F401
    LEGACY_NAMES,
    MANIFEST,
    legacy_files,
    manifest_in,
    rank_manifest_name,
    rank_manifests,
)
from pcmpipe.cache.manifest_model import FORMAT_VERSION, Manifest
from pcmpipe.cache.shard import ShardError, ShardSchema, read_ids
from pcmpipe.errors import UserError, file_errors
from pcmpipe.readback import first_error, parse_json, read_json


def canonical_json(obj) -> str:
    """Key-sorted, whitespace-free JSON: equal content gives equal bytes, hence equal hashes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def feature_spec(features: dict[str, tuple[tuple[int, ...], str]]) -> dict[str, dict]:
    return {n: {"shape": [int(d) for d in shape], "dtype": str(dtype)} for n, (shape, dtype) in features.items()}


def fingerprint_inputs(meta: dict, features: dict[str, dict], key: str, links: list[str], fmt: str) -> dict:
    return {"meta": meta, "features": features, "key": key, "links": list(links), "format": fmt}


def fingerprint(inputs: dict) -> str:
    return hashlib.sha256(canonical_json(inputs).encode()).hexdigest()


def new_manifest(inputs: dict, expected_rows: int | None) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        **inputs,
        "fingerprint": fingerprint(inputs),
        "expected_rows": expected_rows,
        "shards": [],
        "num_rows": 0,
        "complete": False,
    }


def differing_fields(a: dict, b: dict) -> list[str]:
    """Which fingerprint inputs differ between two manifests, e.g. ['meta.weights_sha256', 'links']."""
    out = []
    for field in ("meta", "features", "key", "links", "format"):
        va, vb = a.get(field), b.get(field)
        if field == "meta" and isinstance(va, dict) and isinstance(vb, dict):
            out += [f"meta.{k}" for k in sorted(set(va) | set(vb)) if va.get(k) != vb.get(k)]
        elif canonical_json(va) != canonical_json(vb):
            out.append(field)
    return out


def load_manifest(path: Path) -> dict:
    """Parse a manifest and validate it against `manifest_model.Manifest` (the format's definition); one
    UserError line naming the file (and the field) if it is not one this version of pcmpipe can read.

    Returns the parsed JSON as it is (a dict whose every key a reader indexes has the type the model states;
    keys this version does not know are kept)."""
    where = f"cache manifest {path}"
    redo = f"delete {path.parent} and rebuild it (pcmpipe extract, or import-features for imported vectors)"
    try:
        manifest = read_json(path, "cache manifest")
    except UserError as e:  # not UTF-8, not JSON, nested too deeply, too large: readback's words after "it"
        raise UserError(f"cannot read {where}: it {str(e).removeprefix(where).strip()}; {redo}") from None
    except OSError as e:
        raise UserError(f"cannot read {where} ({e.strerror or type(e).__name__}); {redo}") from None
    if not isinstance(manifest, dict) or "fingerprint" not in manifest or "shards" not in manifest:
        raise UserError(f"{path} is not a pcmpipe cache manifest; {redo}")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise UserError(
            f"{where} has format version {version!r}, this pcmpipe reads version "
            f"{FORMAT_VERSION}; upgrade pcmpipe or rerun the extraction into a new directory"
        )
    try:
        Manifest.model_validate(manifest)
    except ValidationError as e:
        raise UserError(f"{where} is damaged ({first_error(e)}); {redo}") from None
    # The fingerprint is the hash of what the cache is (meta, feature shapes and dtypes, key, links, format): an
    # edited or damaged field would otherwise describe shards it no longer fits (a shape [32] read as [] gives
    # other values, silently), so the recorded hash must still be the hash of the recorded content.
    recorded = {f: manifest.get(f) for f in ("meta", "features", "key", "links", "format")}
    if fingerprint(recorded) != manifest["fingerprint"]:
        raise UserError(f"{where} is damaged (its fields no longer hash to its fingerprint); {redo}")
    return manifest


def write_manifest(path: Path, manifest: dict) -> None:
    manifest["num_rows"] = sum(s["rows"] for s in manifest["shards"])
    with file_errors(path, "write", "cache manifest"):  # a full disk names the manifest, not "a file"
        write_text(path, json.dumps(manifest, indent=1, sort_keys=False) + "\n")


def schema_of(manifest: dict) -> ShardSchema:
    feats = {n: (tuple(f["shape"]), f["dtype"]) for n, f in manifest["features"].items()}
    return ShardSchema(manifest["key"], tuple(manifest["links"]), feats, manifest["fingerprint"])


def merge_manifests(directory: str | Path) -> dict:
    """Join the finished per-rank manifests `.manifest.rNNN.json` of `directory` into `.manifest.json`.

    Every rank must share one fingerprint and be complete, and no id may appear in two ranks. Shards are
    listed rank by rank (in file-name order within a rank). Idempotent: merging again rewrites the same
    manifest. Returns the merged manifest.
    """
    directory = Path(directory)
    ranks = list(rank_manifests(directory).values())
    if not ranks:
        raise UserError(f"no per-rank manifests (.manifest.rNNN.json) in {directory}; did the ranks run?")
    parts = [load_manifest(p) for p in ranks]
    first = parts[0]
    for path, part in zip(ranks[1:], parts[1:]):
        if part["fingerprint"] != first["fingerprint"]:
            raise UserError(
                f"{path.name} has fingerprint {part['fingerprint'][:12]} but {ranks[0].name} has "
                f"{first['fingerprint'][:12]} (differs in {', '.join(differing_fields(first, part))}); "
                "all ranks must extract with the same settings"
            )
    for path, part in zip(ranks, parts):
        if not part["complete"]:
            raise UserError(
                f"rank manifest {path.name} in {directory} is incomplete ({part['num_rows']} rows); "
                "rerun that rank to finish before merging"
            )
    final_path = directory / MANIFEST
    if manifest_in(directory).exists():
        final = load_manifest(manifest_in(directory))
        if final["fingerprint"] != first["fingerprint"]:
            raise UserError(
                f"{final_path} has fingerprint {final['fingerprint'][:12]}, the ranks "
                f"{first['fingerprint'][:12]}; delete {directory} and rerun the extraction"
            )
    shards: list[dict[str, Any]] = []
    seen: set[str] = set()
    owner: dict[str, bool] = {}
    for part in parts:
        for shard in sorted(part["shards"], key=lambda s: s["file"]):
            if shard["file"] in owner:
                raise UserError(f"shard {shard['file']} is listed by two rank manifests in {directory}")
            owner[shard["file"]] = True
            try:
                ids = read_ids(directory / shard["file"], first["format"])
            except (OSError, ShardError, KeyError, ValueError) as e:
                raise UserError(
                    f"shard {shard['file']} of {directory} is missing or unreadable; rerun the rank that wrote it"
                ) from e
            dup = seen.intersection(ids)
            if dup:
                raise UserError(
                    f"id {sorted(dup)[0]!r} appears in two ranks of {directory} (again in "
                    f"{shard['file']}); give each rank a disjoint part of the dataset"
                )
            seen.update(ids)
            shards.append(shard)
    merged = {k: v for k, v in first.items() if k not in ("shards", "num_rows", "complete")}
    merged["expected_rows"] = None
    merged.update(shards=shards, complete=True)
    write_manifest(final_path, merged)
    return merged


def hide_legacy_names(directory: str | Path) -> list[str]:
    """Move a cache written before its files were hidden to the hidden names; returns the old names it moved.

    `errors.jsonl` -> `.errors.jsonl`, `manifest.rNNN.json` -> `.manifest.rNNN.json`, then `manifest.json` ->
    `.manifest.json` with its `side_files` entries renamed too. Shards and fingerprints stay as they are, so an
    intact old cache is reused, not rebuilt. Each step is one atomic rename or write, and the lookups in
    `cache.layout` find either name, so a kill between two steps leaves a cache that reads (and is finished by
    the next call). Where a hidden file exists already, this version wrote it: the old one is dropped. Call it
    with the split's lock held (a writer about to open `directory`).
    """
    moved = []
    for old, new in legacy_files(directory):
        if new.exists():
            old.unlink()
        elif old.name == "manifest.json" or old.name.startswith("manifest.r"):
            _rewrite_side_names(old, new)
        else:
            replace(old, new)
        moved.append(old.name)
    return moved


def _rewrite_side_names(old: Path, new: Path) -> None:
    """Write manifest `old` to `new` with its side files under their hidden names, then drop `old`."""
    try:
        manifest = parse_json(old.read_text(encoding="utf-8"), str(old))
        for side in manifest.get("side_files", []):
            side["file"] = LEGACY_NAMES.get(side["file"], side["file"])
    except (UserError, ValueError, AttributeError, TypeError, KeyError):  # damaged: keep its bytes, reading says so
        replace(old, new)
        return
    write_text(new, json.dumps(manifest, indent=1, sort_keys=False) + "\n")
    old.unlink()
