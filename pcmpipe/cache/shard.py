"""One shard file on disk: atomic writes, checksums, and its Parquet or HDF5 encoding.

A shard holds N rows: string columns (`id`, the key column, the link columns) and one array per feature
[N, *shape]. Parquet stores each feature as a fixed-size-list column, so generic
readers (pyarrow.dataset, Hugging Face `datasets`, DuckDB, Spark) read the files as they are. The shape is
the type itself: a feature of shape (13, 768) is a fixed-size list of 13 fixed-size lists of 768 values (shards
written before that kept such features flat; readers take both), and it is also in the field and schema metadata.
HDF5 stores one contiguous, uncompressed dataset [N, *shape] per feature, which h5py can memory-map.

Every file is written through pcmpipe.atomic (dot-prefixed temp file in the same directory, fsync, rename,
fsync of the directory), so a reader or a resumed writer only ever sees whole files (pyarrow.dataset skips dot files).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from pcmpipe.atomic import atomic_path
from pcmpipe.checksums import file_sha256
from pcmpipe.errors import file_errors

if TYPE_CHECKING:
    import ctypes

FORMATS = {"parquet": ".parquet", "hdf5": ".h5"}
# The schema-metadata key under which a shard records what it belongs to.
META_KEY = "pcmpipe"
_PARQUET_ROW_GROUP = 1024  # bounded memory for readers that stream row groups
_READ_BATCH = 256  # rows decoded at a time by read_feature_into (10 MB of HuBERT features)


class ShardError(Exception):
    """A shard file is unreadable or does not match the cache's schema (the message says why)."""


@dataclass(frozen=True)
class ShardSchema:
    """What every shard of one cache holds: string columns and features {name: (shape, dtype)}."""

    key: str
    links: tuple[str, ...]
    features: dict[str, tuple[tuple[int, ...], str]]
    fingerprint: str

    @property
    def columns(self) -> list[str]:
        """`id`, the key column (unless the key is `id` itself), then the link columns."""
        cols = ["id"] if self.key == "id" else ["id", self.key]
        return cols + [c for c in self.links if c not in cols]

    def metadata_json(self) -> str:
        feats = {n: {"shape": list(s), "dtype": d} for n, (s, d) in self.features.items()}
        return json.dumps(
            {"fingerprint": self.fingerprint, "key": self.key, "links": list(self.links), "features": feats},
            sort_keys=True,
        )


# ---------------------------------------------------------------- writing


def write_shard(
    path: Path, fmt: str, schema: ShardSchema, columns: dict[str, np.ndarray], features: dict[str, np.ndarray]
) -> str:
    """Write one shard atomically and return its sha256. Arrays are already validated and cast.

    A write that fails (a full disk: pyarrow's and h5py's errors carry no file name) names the shard, not its
    temp file, so the CLI's one line says which file could not be written."""
    with file_errors(path, "write", "cache shard"), atomic_path(path) as tmp:
        if fmt == "parquet":
            _write_parquet(tmp, schema, columns, features)
        else:
            _write_hdf5(tmp, schema, columns, features)
        digest = file_sha256(tmp)
    return digest


def arrow_schema(schema: ShardSchema):
    import pyarrow as pa

    fields = [pa.field(c, pa.string(), nullable=False) for c in schema.columns]
    for name, (shape, dtype) in schema.features.items():
        meta = {b"shape": json.dumps(list(shape)).encode(), b"dtype": dtype.encode()}
        fields.append(
            pa.field(name, _list_type(pa.from_numpy_dtype(np.dtype(dtype)), shape), nullable=False, metadata=meta)
        )
    return pa.schema(fields, metadata={META_KEY.encode(): schema.metadata_json().encode()})


def _list_type(value_type, shape: tuple[int, ...]):
    """Nested fixed-size lists, innermost the last axis: (13, 768) -> list<list<value, 768>, 13>."""
    import pyarrow as pa

    out = value_type
    for size in reversed(shape):
        out = pa.list_(out, size)
    return out


def _nested(flat, shape: tuple[int, ...]):
    """A flat array of N * prod(shape) values -> the FixedSizeListArray [N] of `_list_type(..., shape)`."""
    import pyarrow as pa

    out = flat
    for size in reversed(shape):
        out = pa.FixedSizeListArray.from_arrays(out, size)
    return out


def _leaf(chunk):
    """The values array under (possibly nested) fixed-size lists, and where `chunk`'s first value sits in it."""
    import pyarrow as pa

    arr, at = chunk, chunk.offset
    while pa.types.is_fixed_size_list(arr.type):
        child = arr.values  # ignores arr's own offset: carried in `at`
        at = child.offset + at * arr.type.list_size
        arr = child
    return arr, at


def _write_parquet(
    tmp: Path, schema: ShardSchema, columns: dict[str, np.ndarray], features: dict[str, np.ndarray]
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = [pa.array(columns[c].tolist(), pa.string()) for c in schema.columns]
    for name, (shape, _) in schema.features.items():
        arrays.append(_nested(pa.array(np.ascontiguousarray(features[name]).reshape(-1)), shape))
    table = pa.Table.from_arrays(arrays, schema=arrow_schema(schema))
    strings = schema.columns
    # Dictionaries, statistics and compression only pay off for the id columns; on float vectors they cost
    # write time for nothing (embeddings do not compress), and uncompressed pages read fastest.
    compression = {c: ("snappy" if c in strings else "none") for c in table.column_names}
    pq.write_table(
        table,
        tmp,
        row_group_size=_PARQUET_ROW_GROUP,
        use_dictionary=strings,
        write_statistics=strings,
        compression=compression,
    )


def _write_hdf5(
    tmp: Path, schema: ShardSchema, columns: dict[str, np.ndarray], features: dict[str, np.ndarray]
) -> None:
    import h5py

    with h5py.File(tmp, "w") as h:
        h.attrs[META_KEY] = schema.metadata_json()
        for c in schema.columns:
            h.create_dataset(c, data=np.asarray(columns[c].tolist(), dtype=object), dtype=h5py.string_dtype())
        for name in schema.features:
            # contiguous and uncompressed, so the dataset can be memory-mapped
            h.create_dataset(name, data=np.ascontiguousarray(features[name]))


# ---------------------------------------------------------------- reading


def shard_rows(path: Path, fmt: str) -> int:
    """Row count from the file's own metadata (cheap). Raises ShardError if unreadable."""
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
        import h5py

        with h5py.File(path, "r") as h:
            return len(h["id"])
    except Exception as e:  # OSError, KeyError, pyarrow's ArrowInvalid ...: the file is broken either way
        raise ShardError(f"unreadable ({type(e).__name__})") from e


def iter_shard(
    path: Path, fmt: str, schema: ShardSchema, batch_rows: int, features: list[str]
) -> Iterator[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """Yield (columns, features) slices of at most `batch_rows` rows, in file order.

    columns: name -> str array [n]; features: name -> array [n, *shape] in the stored dtype.
    """
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=batch_rows, columns=schema.columns + features):
            cols = {c: np.asarray(batch.column(c).to_pylist(), dtype=str) for c in schema.columns}
            feats = {}
            for name in features:
                shape = schema.features[name][0]
                leaf, at = _leaf(batch.column(name))
                values = leaf.slice(at - leaf.offset, len(batch) * math.prod(shape)).to_numpy(zero_copy_only=False)
                feats[name] = values.reshape(len(batch), *shape)
            yield cols, feats
        return
    import h5py

    with h5py.File(path, "r") as h:
        n = len(h["id"])
        for start in range(0, n, batch_rows):
            stop = min(n, start + batch_rows)
            cols = {c: np.asarray(h[c].asstr()[start:stop].tolist(), dtype=str) for c in schema.columns}
            feats = {name: h[name][start:stop] for name in features}
            yield cols, feats


def read_feature_into(path: Path, fmt: str, name: str, out: np.ndarray) -> int:
    """Copy feature `name` of one shard into `out[:rows]` (out: [>= rows, *shape], any numeric dtype); return rows.

    No intermediate copies: the shard is decoded 256 rows at a time, each batch's fixed-size-list values buffer
    is viewed in place (np.frombuffer) and written straight into `out` (numpy casts if dtypes differ), then freed
    before the next one, so the extra memory is a few batches whatever the shard's size.
    Decoded buffers come from the system allocator, which returns them to the OS (pyarrow's default pool keeps
    freed memory, hundreds of MB for HuBERT-sized shards). HDF5 reads directly into `out` (h5py read_direct).
    """
    flat = out.reshape(out.shape[0], -1)
    if fmt == "parquet":
        at = 0
        for chunk in _parquet_feature_batches(path, name, _READ_BATCH):
            at = _copy_list_chunk(chunk, flat, at)
            del chunk  # the batch's buffers are trimmed away before the next one is decoded
        return at
    import h5py

    with h5py.File(path, "r") as h:
        ds = h[name]
        n = len(ds)
        if ds.dtype == out.dtype and out[:n].flags.c_contiguous:
            ds.read_direct(out, dest_sel=np.s_[:n])
        else:  # a cast: bounded slices
            for start in range(0, n, _PARQUET_ROW_GROUP):
                stop = min(n, start + _PARQUET_ROW_GROUP)
                out[start:stop] = ds[start:stop]
        return n


def iter_feature_into(path: Path, fmt: str, name: str, out: np.ndarray) -> Iterator[int]:
    """Decode feature `name` of one shard into `out` ([R, *shape], reused) R rows at a time; yield each count.

    The rows of one step are out[:k] until the next step overwrites them: a caller streams a cache through a
    fixed buffer (the trainer's per-epoch validation of large caches) instead of holding it.
    """
    flat = out.reshape(out.shape[0], -1)
    rows = out.shape[0]
    if fmt == "parquet":
        for chunk in _parquet_feature_batches(path, name, rows):
            k = _copy_list_chunk(chunk, flat, 0)
            del chunk  # as in read_feature_into
            yield k
        return
    import h5py

    with h5py.File(path, "r") as h:
        ds = h[name]
        for start in range(0, len(ds), rows):
            k = min(rows, len(ds) - start)
            out[:k] = ds[start : start + k]
            yield k


def _parquet_feature_batches(path: Path, name: str, rows: int) -> Iterator:
    """The FixedSizeListArray of feature `name` in one Parquet shard, `rows` rows at a time.

    Small record batches over a 1 MB buffered stream: pyarrow never holds a whole column chunk. Decoded buffers
    come from the system allocator, and the heap is trimmed when the caller asks for the next batch (it must drop
    its reference first), so freed memory goes back to the OS; pyarrow's default pool keeps it.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    pool = pa.default_memory_pool()  # process-wide setting: restored below
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        pf = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
        for batch in pf.iter_batches(batch_size=rows, columns=[name], use_threads=False):
            yield batch.column(0)
            del batch
            _trim_heap()
    finally:
        pa.set_memory_pool(pool)


_LIBC: ctypes.CDLL | Literal[False] | None = None  # ctypes handle of glibc, False where there is none


def _trim_heap() -> None:
    """Give malloc's freed pages back to the OS (glibc keeps them on its heap otherwise); no-op elsewhere."""
    global _LIBC
    if _LIBC is None:
        try:
            import ctypes

            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


def _copy_list_chunk(chunk, flat: np.ndarray, at: int) -> int:
    """Write one FixedSizeListArray chunk [n] of width w into flat[at:at + n] ([*, w]); return at + n."""
    import pyarrow as pa

    n, width = len(chunk), flat.shape[1]
    values, start = _leaf(chunk)  # flat (older shards) or nested lists alike
    if pa.types.is_boolean(values.type):  # bit-packed: no byte view possible
        piece = values.slice(start - values.offset, n * width).to_numpy(zero_copy_only=False)
        flat[at : at + n] = piece.reshape(n, width)
        return at + n
    dtype = np.dtype(values.type.to_pandas_dtype())
    buf = values.buffers()[1]
    view = np.frombuffer(buf, dtype=dtype, count=n * width, offset=start * dtype.itemsize)
    flat[at : at + n] = view.reshape(n, width)
    return at + n


def read_columns(path: Path, fmt: str, columns: list[str]) -> dict[str, np.ndarray]:
    """The string columns of one shard: name -> str array [rows]."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        # One thread: pq.read_table's thread pool and its per-thread allocator arenas cost ~50 MB of resident
        # memory for a few kB of ids.
        table = pq.ParquetFile(path, pre_buffer=False).read(columns=columns, use_threads=False)
        return {c: np.asarray(table.column(c).to_pylist(), dtype=str) for c in columns}
    import h5py

    with h5py.File(path, "r") as h:
        return {c: np.asarray(h[c].asstr()[:].tolist(), dtype=str) for c in columns}


def read_ids(path: Path, fmt: str) -> list[str]:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path, columns=["id"]).column("id").to_pylist()
    import h5py

    with h5py.File(path, "r") as h:
        return h["id"].asstr()[:].tolist()


def check_shard(path: Path, fmt: str, schema: ShardSchema) -> list[str]:
    """Fully read a shard found on disk and check it belongs to this cache; return its ids.

    Used to adopt a shard that was renamed into place but never entered the manifest (a writer killed
    between the two steps). Raises ShardError naming the first problem.
    """
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            found = (table.schema.metadata or {}).get(META_KEY.encode(), b"{}")
            if json.loads(found).get("fingerprint") != schema.fingerprint:
                raise ShardError("written for another cache (fingerprint differs)")
            if not table.schema.remove_metadata().equals(arrow_schema(schema).remove_metadata()):
                raise ShardError("columns or types differ from the manifest")
            return table.column("id").to_pylist()
        import h5py

        with h5py.File(path, "r") as h:
            if json.loads(h.attrs.get(META_KEY, "{}")).get("fingerprint") != schema.fingerprint:
                raise ShardError("written for another cache (fingerprint differs)")
            n = len(h["id"])
            for c in schema.columns:
                if len(h[c]) != n:
                    raise ShardError(f"column {c} has {len(h[c])} rows, id has {n}")
            for name, (shape, dtype) in schema.features.items():
                ds = h[name]
                if ds.shape != (n, *shape) or ds.dtype != np.dtype(dtype):
                    raise ShardError(f"feature {name} is {ds.shape} {ds.dtype}, expected {(n, *shape)} {dtype}")
                ds[...]  # read every byte: a truncated file fails here
            return h["id"].asstr()[:].tolist()
    except ShardError:
        raise
    except Exception as e:  # any decoding failure means the file is broken
        raise ShardError(f"unreadable ({type(e).__name__}: {str(e)[:80]})") from e
