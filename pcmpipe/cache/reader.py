"""Reading a finished feature cache: `open_cache` verifies it, `CacheReader` returns its rows.

Readers trust nothing but the manifest: a cache must be complete, every listed shard present with the
recorded row count and (by default) sha256, otherwise a `UserError` names the shard. Stage two only ever
reads through here, so a partial shard is never read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pcmpipe.cache.layout import (
    POINT_AT_A_CACHE,
    describe,
    manifest_in,
    manifest_path,
    manifests_under,
    parts_of,
    side_file_in,
)
from pcmpipe.cache.manifest import load_manifest, schema_of
from pcmpipe.cache.shard import (
    ShardError,
    iter_feature_into,
    iter_shard,
    read_columns,
    read_feature_into,
    read_ids,
    shard_rows,
)
from pcmpipe.cache.shards import CacheShard, named_in_manifest, shards_of
from pcmpipe.checksums import file_sha256
from pcmpipe.errors import UserError

MAKE_CACHE = "create it with `pcmpipe extract` (or `pcmpipe import-features` for your own vectors)"


class CacheReader:
    """A complete cache opened by `open_cache`.

    read() -> (columns, features): columns maps `id`, the key and each link column to a str array [N];
    features maps each feature name to an array [N, *shape] in its stored dtype; rows in shard order.
    """

    def __init__(self, directory: Path, manifest: dict):
        self.directory = directory
        self.manifest = manifest
        self.key: str = manifest["key"]
        self.links: list[str] = list(manifest["links"])
        self.fmt: str = manifest["format"]
        self.meta: dict = manifest["meta"]
        self.fingerprint: str = manifest["fingerprint"]
        self.feature_names: list[str] = list(manifest["features"])
        self.num_rows: int = manifest["num_rows"]
        self._schema = schema_of(manifest)
        self.columns: list[str] = self._schema.columns
        self.shapes: dict[str, tuple[int, ...]] = {n: s for n, (s, _) in self._schema.features.items()}
        self.dtypes: dict[str, str] = {n: d for n, (_, d) in self._schema.features.items()}

    def _names(self, features: list[str] | None) -> list[str]:
        names = self.feature_names if features is None else list(features)
        unknown = [f for f in names if f not in self.shapes]
        if unknown:
            raise UserError(
                f"cache {self.directory} has no feature {unknown[0]!r}; it has {', '.join(self.feature_names)}"
            )
        return names

    def read(self, features: list[str] | None = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        names = self._names(features)
        out = {f: np.empty((self.num_rows, *self.shapes[f]), dtype=self.dtypes[f]) for f in names}
        return self.read_into(out), out

    def read_into(self, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Fill preallocated arrays out[name] [num_rows, *shape] (any numeric dtype: values are cast) with every
        row, shard by shard, and return the string columns (name -> str array [num_rows]).

        Peak memory is `out` plus one Parquet row group: shards are decoded straight into `out`
        (`cache_io.read_feature_into`), never held whole or copied.
        """
        names = self._names(list(out))
        for f in names:
            if out[f].shape != (self.num_rows, *self.shapes[f]):
                raise ValueError(f"out[{f!r}] has shape {out[f].shape}, expected {(self.num_rows, *self.shapes[f])}")
        cols: dict[str, list[np.ndarray]] = {c: [] for c in self.columns}
        at = 0
        for shard in self.manifest["shards"]:
            file = self.directory / shard["file"]
            with named_in_manifest(file, self.directory):
                part = read_columns(file, self.fmt, self.columns)
            k = len(part["id"])
            if at + k > self.num_rows:  # more rows than the manifest says: count them, report below
                at += k
                continue
            for f in names:
                with named_in_manifest(file, self.directory):
                    got = read_feature_into(file, self.fmt, f, out[f][at : at + k])
                if got != k:
                    raise UserError(
                        f"shard {shard['file']} of cache {self.directory} is corrupt (feature {f} has "
                        f"{got} rows, id has {k}); delete the cache directory and rerun the extraction"
                    )
            for c in self.columns:
                cols[c].append(part[c])
            at += k
        self._check_rows(at)
        return {c: (np.concatenate(v) if v else np.asarray([], dtype=str)) for c, v in cols.items()}

    def _check_rows(self, seen: int, what: str = "rows") -> None:
        if seen != self.num_rows:
            raise UserError(
                f"cache {self.directory} holds {seen} {what}, its manifest says {self.num_rows}; "
                "delete the cache directory and rerun the extraction"
            )

    def iter_shards(self) -> Iterator[CacheShard]:
        """The cache's shards in row order, each with its place in the cache and its own readers: what a reader
        that streams the cache shard by shard needs (`pcmpipe.samples.stream`), without naming shard files."""
        return shards_of(self.directory, self.manifest)

    def iter_feature(self, name: str, rows: int) -> Iterator[np.ndarray]:
        """Every row of feature `name` in shard order, as float32 arrays of at most `rows` rows.

        The arrays are views of one reused buffer: each is valid until the next one is produced. Memory is that
        buffer plus one decoded record batch, whatever the cache's size.
        """
        (name,) = self._names([name])
        buf = np.empty((rows, *self.shapes[name]), dtype=np.float32)
        seen = 0
        for shard in self.manifest["shards"]:
            with named_in_manifest(self.directory / shard["file"], self.directory):
                for k in iter_feature_into(self.directory / shard["file"], self.fmt, name, buf):
                    seen += k
                    yield buf[:k]
        self._check_rows(seen, f"rows of {name}")

    def iter_batches(
        self, batch_rows: int, features: list[str] | None = None
    ) -> Iterator[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
        """Yield (columns, features) of exactly `batch_rows` rows (the last may be shorter), bounded memory."""
        if batch_rows < 1:
            raise ValueError("batch_rows must be >= 1")
        names = self._names(features)
        buf: list[tuple[dict, dict]] = []
        held = 0
        for shard in self.manifest["shards"]:
            file = self.directory / shard["file"]
            with named_in_manifest(file, self.directory):
                for part in iter_shard(file, self.fmt, self._schema, batch_rows, names):
                    buf.append(part)
                    held += len(part[0]["id"])
                    while held >= batch_rows:
                        batch, buf, held = _take(buf, batch_rows, names, self.columns)
                        yield batch
        if held:
            yield _take(buf, held, names, self.columns)[0]


def _take(buf, rows, names, columns):
    """Split the first `rows` rows off a list of (columns, features) pieces."""
    cols = {c: np.concatenate([p[0][c] for p in buf]) for c in columns}
    feats = {f: np.concatenate([p[1][f] for p in buf]) for f in names}
    head = ({c: v[:rows] for c, v in cols.items()}, {f: v[:rows] for f, v in feats.items()})
    left = len(cols["id"]) - rows
    rest = [({c: v[rows:] for c, v in cols.items()}, {f: v[rows:] for f, v in feats.items()})] if left else []
    return head, rest, left


def open_cache(
    directory: str | Path, *, verify: bool = True, what: str = "cache", make: str | None = None
) -> CacheReader:
    """Open a complete cache for reading. verify=True checks every shard's sha256 (else row counts only).

    UserError if the directory or manifest is missing, the cache is incomplete, or a shard is missing,
    truncated or corrupt (the message names the shard). Where `directory` holds no cache the message says what
    it is (missing, a file, a run, an index folder, a folder holding caches) with `what` naming what the caller
    expected ("embeddings", "gallery") and `make` how to make one (default: extract or import-features).
    """
    directory = Path(directory)
    path = manifest_in(directory)
    if not path.exists():
        found, instead = describe(directory)
        if instead == POINT_AT_A_CACHE:  # something else pcmpipe wrote: how to make the expected thing comes first
            advice = make or instead
        else:
            advice = instead or make or MAKE_CACHE
        raise UserError(f"no {what} at {directory}: {found}; {advice}")
    manifest = load_manifest(path)
    if not manifest["complete"]:
        total = manifest.get("expected_rows")
        of = f"{manifest['num_rows']} of {total} rows" if total is not None else f"{manifest['num_rows']} rows so far"
        raise UserError(f"cache {directory} is incomplete ({of}); rerun the extraction to resume")
    damaged = damaged_shards(directory, manifest, hashes=verify)
    if damaged:
        file, why = damaged[0]
        raise UserError(
            f"shard {file} of cache {directory} is {why}; delete the cache directory and rerun the extraction"
        )
    return CacheReader(directory, manifest)


def damaged_shards(directory: Path, manifest: dict, *, hashes: bool = True) -> list[tuple[str, str]]:
    """(file, what is wrong) for each listed shard that is missing, of the wrong size, unreadable, holds another
    row count or (with `hashes`) another sha256 than the manifest records; [] for an intact cache.

    Sizes are a stat per shard and catch truncation and deletion; a flipped byte needs the sha256 (reading every
    byte, about 1 s per GB). Manifests written before sizes were recorded are checked by row count and hash.
    """
    out: list[tuple[str, str]] = []
    for shard in manifest["shards"]:
        file = directory / shard["file"]
        try:
            size = file.stat().st_size
        except FileNotFoundError:
            out.append((shard["file"], "missing"))
            continue
        except OSError as e:
            out.append((shard["file"], f"unreadable ({e.strerror})"))
            continue
        if "bytes" in shard and size != shard["bytes"]:
            out.append((shard["file"], f"corrupt ({size} bytes, manifest says {shard['bytes']})"))
            continue
        try:
            rows = shard_rows(file, manifest["format"])
        except ShardError as e:
            out.append((shard["file"], f"corrupt ({e})"))
            continue
        if rows != shard["rows"]:
            out.append((shard["file"], f"corrupt ({rows} rows, manifest says {shard['rows']})"))
        elif hashes and file_sha256(file) != shard["sha256"]:
            out.append((shard["file"], "corrupt (sha256 mismatch)"))
    for side in manifest.get("side_files", []):  # small files: always hashed
        file = side_file_in(directory, side["file"])
        if not file.is_file():
            out.append((side["file"], "missing"))
        elif file.stat().st_size != side["bytes"] or file_sha256(file) != side["sha256"]:
            out.append((side["file"], "corrupt (size or sha256 differs from the manifest)"))
    return out


def shard_ids(directory: Path, manifest: dict) -> set[str]:
    """The ids of every listed shard of a cache (complete or not); ShardError or OSError where one is unreadable."""
    return {i for s in shards_of(directory, manifest) for i in read_ids(s.path, s.fmt)}


def source_of(meta: dict) -> str:
    """'clip-tiny-image random:0 (sha256 1a2b3c4d5e6f)': the backbone and weights of a cache, for display."""
    if "backbone" not in meta:
        return str(meta.get("source", ""))
    sha, weights = meta.get("weights_sha256"), meta.get("weights")
    return f"{meta['backbone']}" + (f" {weights}" if weights else "") + (f" (sha256 {str(sha)[:12]})" if sha else "")


def data_origin(manifest: dict) -> str | None:
    """'synthetic' or 'real' as extraction recorded it ('origin'); caches written with the synthetic backbone
    (tests/synthetic_cache.py, benchmarks/_planted.py) are synthetic; None when nothing says (older caches)."""
    if manifest.get("origin") is not None:
        return str(manifest["origin"])
    return "synthetic" if (manifest.get("meta") or {}).get("backbone") == "synthetic" else None


def read_manifest(cache_root: str | Path, dataset: str, modality: str, split: str) -> dict | None:
    """The parsed manifest of one (dataset, modality, split), complete or not; None when there is none yet.

    UserError when the file is there but unreadable (the message says to delete the directory and re-extract).
    """
    path = manifest_path(cache_root, dataset, modality, split)
    return load_manifest(path) if path.is_file() else None


def list_caches(root: str | Path, *, verify: bool = False) -> list[dict[str, Any]]:
    """Every cache under `root` (or `root` itself): one summary dict each, for `pcmpipe cache-info`.

    Each summary's `damaged` lists (file, why) of broken shards: sizes and row counts always, sha256 with
    `verify`. `source` is the backbone and weights behind the features ('' where the manifest names none).
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"cache root {root} does not exist; pass the directory holding your caches")
    rows: list[dict[str, Any]] = []
    for path in manifests_under(root):
        if any(part.startswith(".") for part in path.parent.relative_to(root).parts):
            continue  # temp directories of an unfinished import
        where = parts_of(path.parent)
        try:
            m = load_manifest(path)
        except UserError as e:
            rows.append(
                {
                    "path": str(path.parent),
                    "dataset": where[0],
                    "modality": where[1],
                    "split": where[2],
                    "error": str(e),
                }
            )
            continue
        rows.append(
            {
                "path": str(path.parent),
                "dataset": where[0],
                "modality": where[1],
                "split": where[2],
                "rows": m["num_rows"],
                "format": m["format"],
                "complete": bool(m["complete"]),
                "features": {n: (tuple(f["shape"]), f["dtype"]) for n, f in m["features"].items()},
                "fingerprint": m["fingerprint"],
                "meta": m["meta"],
                "source": source_of(m["meta"]),
                "damaged": damaged_shards(path.parent, m, hashes=verify),
            }
        )
    return rows
