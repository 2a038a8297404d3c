"""Writing a cache: `ShardWriter` appends rows to one (dataset, modality, split) directory.

It is safe to kill at any moment: reopening it resumes, keeping every finished shard byte for byte.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import numpy as np

from pcmpipe.cache.layout import cache_dir  # noqa: F401  (re-exported: pcmpipe.cache.writer.cache_dir)
from pcmpipe.cache.lock import exclusive
from pcmpipe.cache.manifest import (
    MANIFEST,
    differing_fields,
    feature_spec,
    fingerprint,
    fingerprint_inputs,
    hide_legacy_names,
    load_manifest,
    new_manifest,
    rank_manifest_name,
    write_manifest,
)
from pcmpipe.cache.shard import FORMATS, ShardError, ShardSchema, check_shard, read_ids, write_shard
from pcmpipe.checksums import file_sha256
from pcmpipe.errors import UserError

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
# Modality names also key the heads' nn.ModuleDict and safetensors entries, where "." separates submodules.
MODALITY_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_NUMERIC_KINDS = "fiub"  # float, signed, unsigned, bool


def _check_name(what: str, name: str) -> None:
    if not isinstance(name, str) or not NAME_RE.match(name) or name in (".", ".."):
        raise UserError(f"{what} {name!r} is not a valid name; use letters, digits, '_', '.', '-'")


def _normalise(
    features: dict[str, tuple[tuple[int, ...], str]], key: str, links: list[str]
) -> tuple[dict[str, tuple[tuple[int, ...], str]], list[str]]:
    """Validated (features with int shapes and numpy dtype names, links without repeats or the key)."""
    _check_name("key column", key)
    for name in links:
        _check_name("link column", name)
    links = [c for c in dict.fromkeys(links) if c != key]
    if "id" in links:
        raise UserError("'id' is always a column; do not list it among the links")
    if not features:
        raise ValueError("a cache needs at least one feature")
    spec = {}
    for name, (shape, dtype) in features.items():
        _check_name("feature", name)
        if name in ("id", key, *links):
            raise UserError(f"feature name {name!r} collides with an id column; rename the feature")
        shape = tuple(int(d) for d in shape)
        if any(d < 1 for d in shape) or np.dtype(dtype).kind not in _NUMERIC_KINDS:
            raise ValueError(f"feature {name}: shape {shape} and dtype {dtype} must be positive and numeric")
        spec[name] = (shape, np.dtype(dtype).name)
    return spec, links


def _entry(path: Path, rows: int, digest: str) -> dict:
    """A finished shard as the manifest lists it; its size lets every open catch truncation with one stat."""
    return {"file": path.name, "rows": rows, "sha256": digest, "bytes": path.stat().st_size}


def cache_fingerprint(
    *, features: dict[str, tuple[tuple[int, ...], str]], key: str, links: list[str], meta: dict, fmt: str = "parquet"
) -> str:
    """The fingerprint a `ShardWriter` with these arguments gives its cache (to compare before writing)."""
    spec, links = _normalise(features, key, links)
    return fingerprint(fingerprint_inputs(meta, feature_spec(spec), key, links, fmt))


class ShardWriter:
    """Append rows to one cache directory; a context manager. Resumes where a killed writer stopped.

    features: name -> (shape, dtype), e.g. {"feat": ((13, 768), "float32")}; every row gets one array of
    that shape. key: the column equal to `id` (`image_id`, `caption_id`, ...). links: the coarser id
    columns each row carries. meta: free JSON dict (backbone, weights checksum, preprocessing, dataset,
    split); with features, key, links and fmt it makes the fingerprint. rank: for distributed extraction,
    rank r writes `part-rNNN-*` shards and `.manifest.rNNN.json` (join them with `merge_manifests`).
    expected_rows: optional total, only used to say "N of M rows" about an incomplete cache.
    listing: optional digest of the inputs the rows come from (extract: the dataset's records), recorded beside
    the fingerprint so a reuse check can tell a changed dataset from an unchanged one.
    origin: optional "synthetic" or "real" (extract: whether the dataset root is a `pcmpipe synth` one), recorded
    beside the fingerprint (not in it) so runs and the report can say SYNTHETIC.
    lock: hold `cache.lock.exclusive` on the directory while open (True waits for another writer, a number
    waits that many seconds, False takes no lock: the caller holds it). Ranks of one job never lock: their
    shard names are disjoint and their launcher holds the lock.

    After construction: `complete` is True if the directory already holds this finished cache (skip the
    work); `done_ids` holds the ids of every finished shard (skip those samples).
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        features: dict[str, tuple[tuple[int, ...], str]],
        key: str,
        links: list[str],
        meta: dict,
        fmt: str = "parquet",
        rows_per_shard: int = 4096,
        rank: int | None = None,
        expected_rows: int | None = None,
        listing: str | None = None,
        lock: bool | float = True,
        origin: str | None = None,
    ):
        if fmt not in FORMATS:
            raise UserError(f"unknown cache format {fmt!r}; choose one of {', '.join(FORMATS)}")
        if rows_per_shard < 1:
            raise ValueError("rows_per_shard must be >= 1")
        self.directory = Path(directory)
        self.fmt, self.key, self.rows_per_shard = fmt, key, rows_per_shard
        spec, links = _normalise(features, key, links)
        self.features, self.links = spec, links
        inputs = fingerprint_inputs(meta, feature_spec(spec), key, self.links, fmt)
        self._manifest = new_manifest(inputs, expected_rows)
        if listing is not None:
            self._manifest["listing"] = listing
        if origin is not None:
            self._manifest["origin"] = origin
        self.fingerprint: str = self._manifest["fingerprint"]
        self._schema = ShardSchema(key, tuple(self.links), spec, self.fingerprint)
        # each rank of a distributed extraction writes its own shard names into the shared directory
        shard_prefix = "part" if rank is None else f"part-r{rank:03d}"
        self.shard_prefix = shard_prefix
        self._rank = rank
        self._manifest_path = self.directory / (MANIFEST if rank is None else rank_manifest_name(rank))
        self._shard_re = re.compile(rf"^{re.escape(shard_prefix)}-(\d{{5,}}){re.escape(FORMATS[fmt])}$")
        self.done_ids: set[str] = set()
        self.complete = False
        self._closed = False
        self._pending: list[tuple[list[str], dict[str, list[str]], dict[str, np.ndarray]]] = []
        self._pending_ids: set[str] = set()
        self._pending_rows = 0
        self._lock = contextlib.ExitStack()
        if lock is not False and rank is None:
            self._lock.enter_context(exclusive(self.directory, f"cache {self.directory}", wait=lock))
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._open()
        except BaseException:
            self._lock.close()
            raise

    # ------------------------------------------------------------ resume
    def _check_fingerprint(self, path: Path) -> dict:
        found = load_manifest(path)
        if found["fingerprint"] != self.fingerprint:
            diff = ", ".join(differing_fields(found, self._manifest)) or "fields"
            raise UserError(
                f"cache {self.directory} holds other features (fingerprint {found['fingerprint'][:12]}, "
                f"requested {self.fingerprint[:12]}; differs in {diff}); delete it or write elsewhere"
            )
        return found

    def _open(self) -> None:
        if self._rank is None:  # ranks share the directory: their launcher moved old names before they started
            hide_legacy_names(self.directory)
        final = self.directory / MANIFEST
        if final.exists():
            found = self._check_fingerprint(final)
            if found["complete"]:
                # finished earlier (or merged from ranks): nothing to write, but report what is there
                self.complete = True
                self._manifest = found
                for shard in found["shards"]:
                    try:
                        self.done_ids.update(read_ids(self.directory / shard["file"], self.fmt))
                    except Exception as e:  # missing or broken file: the cache cannot be trusted
                        raise UserError(
                            f"shard {shard['file']} of complete cache {self.directory} is missing or "
                            "unreadable; delete the cache directory and rerun the extraction"
                        ) from e
                return
        own = self._manifest_path
        for leftover in self.directory.iterdir():  # temp files of a killed writer with our prefix
            if leftover.name.startswith((f".{self.shard_prefix}-", f".{own.name}")) and leftover.name.endswith(".tmp"):
                leftover.unlink()
        if own.exists():
            found = self._check_fingerprint(own)
            self._manifest["shards"] = found["shards"]
            for kept in ("listing", "origin", "data_root"):
                if kept in found and kept not in self._manifest:
                    self._manifest[kept] = found[kept]
            if found.get("expected_rows") is not None and self._manifest["expected_rows"] is None:
                self._manifest["expected_rows"] = found["expected_rows"]
        listed = {s["file"] for s in self._manifest["shards"]}
        for shard in self._manifest["shards"]:
            path = self.directory / shard["file"]
            if not path.exists() or file_sha256(path) != shard["sha256"]:
                state = "missing" if not path.exists() else "corrupt (sha256 mismatch)"
                raise UserError(
                    f"finished shard {shard['file']} of cache {self.directory} is {state}; "
                    "delete the cache directory and rerun the extraction"
                )
            self._add_done(read_ids(path, self.fmt), shard["file"])
        # a shard renamed into place whose manifest update never happened: adopt it if whole, else drop it
        for path in sorted(self.directory.iterdir()):
            if path.name in listed or not self._shard_re.match(path.name):
                continue
            try:
                ids = check_shard(path, self.fmt, self._schema)
                if self.done_ids.intersection(ids) or len(set(ids)) != len(ids) or not ids:
                    raise ShardError("repeats ids of finished shards")
            except ShardError:
                path.unlink()
                continue
            self.done_ids.update(ids)
            self._manifest["shards"].append(_entry(path, len(ids), file_sha256(path)))
        self._manifest["shards"].sort(key=lambda s: s["file"])
        self._next_index = 1 + max(
            (int(m.group(1)) for s in self._manifest["shards"] if (m := self._shard_re.match(s["file"]))),
            default=-1,
        )
        write_manifest(self._manifest_path, self._manifest)

    def _add_done(self, ids: list[str], where: str) -> None:
        dup = self.done_ids.intersection(ids)
        if dup:
            raise UserError(
                f"id {sorted(dup)[0]!r} appears twice in cache {self.directory} (again in {where}); "
                "delete the cache directory and rerun the extraction"
            )
        self.done_ids.update(ids)

    # ------------------------------------------------------------ writing
    @property
    def num_rows(self) -> int:
        """Rows in finished shards plus rows buffered for the next one."""
        return sum(s["rows"] for s in self._manifest["shards"]) + self._pending_rows

    def add(self, ids: list[str], links: dict[str, list[str]], features: dict[str, np.ndarray]) -> None:
        """Buffer n rows; write a shard whenever `rows_per_shard` rows are buffered.

        ids: n strings; links: column -> n strings (every link column; the key column may be given
        too and must then equal ids); features: name -> array [n, *shape], cast to the declared dtype.
        """
        if self.complete or self._closed:
            raise RuntimeError(f"writer for {self.directory} is {'complete' if self.complete else 'closed'}")
        ids = [str(i) for i in ids]
        n = len(ids)
        cols = {"id": ids}
        if self.key != "id":
            if self.key in links and [str(v) for v in links[self.key]] != ids:
                raise ValueError(f"links[{self.key!r}] must equal ids: {self.key} is this cache's key")
            cols[self.key] = ids
        missing = set(self.links) - set(links)
        extra = set(links) - set(self.links) - {self.key}
        if missing or extra:
            raise ValueError(f"link columns: missing {sorted(missing)}, unexpected {sorted(extra)}")
        for c in self.links:
            cols[c] = [str(v) for v in links[c]]
            if len(cols[c]) != n:
                raise ValueError(f"link column {c} has {len(cols[c])} values for {n} ids")
        if set(features) != set(self.features):
            raise ValueError(f"features {sorted(features)} != declared {sorted(self.features)}")
        feats = {}
        for name, (shape, dtype) in self.features.items():
            arr = np.asarray(features[name])
            if arr.shape != (n, *shape):
                raise ValueError(f"feature {name} has shape {arr.shape}, expected {(n, *shape)}")
            with np.errstate(over="ignore"):  # an overflow shows up as inf, rejected just below
                # always a copy: callers may refill their batch buffer while these rows wait for a shard
                arr = np.array(arr, dtype=dtype, copy=True)
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                bad = ids[int(np.flatnonzero(~np.isfinite(arr.reshape(n, -1)).all(axis=1))[0])]
                raise UserError(
                    f"feature {name} of id {bad!r} is NaN or infinite (after casting to {dtype}); "
                    "check the input or the backbone's precision"
                )
            feats[name] = arr
        seen: set[str] = set()
        for i in ids:
            if i in seen or i in self.done_ids or i in self._pending_ids:
                raise UserError(f"id {i!r} appears twice in cache {self.directory}; ids must be unique")
            seen.add(i)
        self._pending.append((ids, cols, feats))
        self._pending_ids.update(ids)
        self._pending_rows += n
        while self._pending_rows >= self.rows_per_shard:
            self._flush(self.rows_per_shard)

    def _flush(self, rows: int) -> None:
        """Write the first `rows` buffered rows as one finished shard, then record it in the manifest."""
        cols = {
            c: np.concatenate([np.asarray(p[1][c], dtype=object) for p in self._pending]) for c in self._schema.columns
        }
        feats = {f: np.concatenate([p[2][f] for p in self._pending]) for f in self.features}
        name = f"{self.shard_prefix}-{self._next_index:05d}{FORMATS[self.fmt]}"
        digest = write_shard(
            self.directory / name,
            self.fmt,
            self._schema,
            {c: v[:rows] for c, v in cols.items()},
            {f: v[:rows] for f, v in feats.items()},
        )
        written = cols["id"][:rows].tolist()
        self._manifest["shards"].append(_entry(self.directory / name, rows, digest))
        write_manifest(self._manifest_path, self._manifest)
        self._next_index += 1
        self.done_ids.update(written)
        self._pending_ids.difference_update(written)
        self._pending_rows -= rows
        rest_ids = cols["id"][rows:].tolist()
        self._pending = (
            [(rest_ids, {c: v[rows:].tolist() for c, v in cols.items()}, {f: v[rows:] for f, v in feats.items()})]
            if self._pending_rows
            else []
        )

    def end_shard(self) -> None:
        """Write the buffered rows now as one shard (possibly shorter than rows_per_shard), so shards follow
        the caller's blocks: extraction's are fixed by global position, the same for any number of ranks."""
        if self.complete or self._closed:
            raise RuntimeError(f"writer for {self.directory} is {'complete' if self.complete else 'closed'}")
        if self._pending_rows:
            self._flush(self._pending_rows)

    def record_data_root(self, root: str | Path) -> None:
        """Record the dataset root the rows were read from (absolute, beside the fingerprint, not in it), so a
        search over a run trained on this cache can show each row's caption or media file."""
        self._manifest["data_root"] = str(Path(root).expanduser().resolve())

    def add_side_file(self, name: str) -> None:
        """List a finished file beside the shards (extract's .errors.jsonl) in the manifest with its size and
        sha256, so a deleted or damaged one is caught like a damaged shard. Call before `close`."""
        path = self.directory / name
        entry = {"file": name, "bytes": path.stat().st_size, "sha256": file_sha256(path)}
        self._manifest["side_files"] = [f for f in self._manifest.get("side_files", []) if f["file"] != name] + [entry]

    def close(self) -> None:
        """Write the buffered rows as the last shard and mark the cache complete."""
        if self.complete or self._closed:
            self._lock.close()  # a cache found complete on open: nothing written, the lock goes back
            return
        if self._pending_rows:
            self._flush(self._pending_rows)
        self._manifest["complete"] = True
        write_manifest(self._manifest_path, self._manifest)
        self.complete = True
        self._closed = True
        self._lock.close()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        # Interrupted: keep the rows already handed over as a finished (not complete) shard, so a resume
        # skips them. If that write fails too, resume simply recomputes them; the original error wins.
        if not self.complete and self._pending_rows:
            try:
                self._flush(self._pending_rows)
            except Exception:
                pass
        self._closed = True
        self._lock.close()
