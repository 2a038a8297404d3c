"""An index on disk: one folder, written whole and swapped in whole, checked against its checksums on open.

    <out>/index.faiss   faiss.write_index's own binary format (never a pickle); a flat index as IndexFlatIP
                        or, for float16 vectors, a QT_fp16 scalar quantizer
    <out>/ids.json      the row ids in index order (a JSON list of strings)
    <out>/index.json    `IndexMeta`: kind, settings, size, what the embeddings came from, and the sha256 of the
                        two files above

Writing: the three files go into a hidden folder `.<out>.tmp-<pid>-<random>` beside `<out>`, are fsynced, and
the folder replaces `<out>` under the exclusive lock of `<out>` (pcmpipe.cache.lock) through pcmpipe.folderswap:
one atomic exchange where Linux offers it, else two renames with the old folder set aside. Two jobs into one
`<out>` write in parallel and swap in turn, so the folder holds one job's three files, never a mix. A job killed
at any point leaves the old folder or the new one; where it was killed between the two renames, the next `index`
into `<out>` puts the old folder back before anything else (the folders of dead processes are found by their
pid, pcmpipe.tempdirs).

Opening: the folder is opened once and its files read through that handle, so a swap in the middle of a read
cannot mix two versions; each file's sha256 must be the one index.json records, before FAISS parses a byte.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, RootModel

from pcmpipe import atomic, folderswap, tempdirs
from pcmpipe.cache.lock import exclusive
from pcmpipe.checksums import file_sha256
from pcmpipe.errors import UserError, file_errors
from pcmpipe.index.params import INDEX_KINDS
from pcmpipe.readback import parse_json, validate

if TYPE_CHECKING:
    from pcmpipe.index.store import EmbeddingIndex

INDEX_FILE, IDS_FILE, META_FILE = "index.faiss", "ids.json", "index.json"
# what an index folder may hold: its files and the temp files of earlier versions' per-file writes
INDEX_NAMES = {INDEX_FILE, IDS_FILE, META_FILE} | {f".{n}.tmp" for n in (INDEX_FILE, IDS_FILE, META_FILE)}
META_BYTES = 16 << 20  # index.json: settings and the embeddings cache's meta, kilobytes in practice
IDS_BYTES = 1 << 30  # ids.json: 10^7 ids of 40 characters are 0.5 GB
SHA256 = r"^[0-9a-f]{64}$"
REBUILD = "rebuild it with `pcmpipe index`"


class EmbeddingsMeta(BaseModel):
    """What an embeddings cache written by `pcmpipe embed` says about its vectors (its manifest's meta)."""

    model_config = ConfigDict(extra="allow", strict=True)
    run: str | None = Field(None, description="name of the run directory (or export) that embedded the rows")
    run_fingerprint: str | None = Field(None, description="that run's fingerprint: the head space of the vectors")
    modality: str | None = Field(None, description="the run's modality the rows were embedded as, e.g. I or T")
    normalised: bool | None = Field(None, description="whether rows were L2-normalised when written")


class IndexChecksums(BaseModel):
    """sha256 (hex) of the folder's two data files, as written."""

    model_config = ConfigDict(strict=True, populate_by_name=True)
    index_faiss: str = Field(alias="index.faiss", pattern=SHA256, description="sha256 of index.faiss")
    ids_json: str = Field(alias="ids.json", pattern=SHA256, description="sha256 of ids.json")


class IndexMeta(BaseModel):
    """index.json: how the index was built and from what, and the checksums its files are opened against."""

    model_config = ConfigDict(extra="allow", strict=True)
    kind: Literal["flat", "ivf", "ivfpq"] = Field(description="flat (exact), ivf or ivfpq (pcmpipe.index.store)")
    rows: int = Field(ge=0, description="vectors in the index, one per id of ids.json")
    dim: int = Field(ge=1, description="values per vector")
    dtype: Literal["float32", "float16"] | None = Field(None, description="stored precision of a flat index")
    nlist: int | None = Field(None, ge=1, description="ivf/ivfpq: k-means cells")
    nprobe: int | None = Field(None, ge=1, description="ivf/ivfpq: cells visited per query")
    pq_m: int | None = Field(None, ge=1, description="ivfpq: bytes per vector")
    recall_at_10: float | None = Field(
        None, ge=0, le=1, description="ivf/ivfpq: recall@10 against exact search, measured when it was built"
    )
    source: str | None = Field(None, description="the embeddings cache the index was built from, as given")
    source_fingerprint: str | None = Field(None, description="that cache's fingerprint")
    meta: EmbeddingsMeta | None = Field(None, description="that cache's meta: the run and modality of the rows")
    sha256: IndexChecksums = Field(description="checksums of index.faiss and ids.json")


class IndexIds(RootModel[list[str]]):
    """ids.json: the id of each row, in index order."""

    model_config = ConfigDict(strict=True)


# ---- writing ----
def check_output(directory: str | Path) -> Path:
    """Refuse (one line) an index folder path that is a file, lies under a file, or is a folder holding
    anything but an index: replacing it would delete that. Called before any work, and again under the lock."""
    directory = Path(directory)
    for place in (directory, *directory.parents):
        if place.exists() and not place.is_dir():
            where = "is a file" if place == directory else f"lies under {place}, which is a file"
            raise UserError(f"{directory} {where}, not a folder; choose a new folder for the index")
    if directory.is_dir():
        others = sorted(set(os.listdir(directory)) - INDEX_NAMES)
        if others:
            raise UserError(
                f"{directory} exists and holds {others[0]!r}, which is not part of an index; choose a new folder "
                "(an index folder is replaced whole)"
            )
    return directory


def save_index(directory: str | Path, index: Any, ids: list[str] | np.ndarray, meta: dict) -> Path:
    """Write `index` (a FlatIndex or FAISS index), its `ids` and `meta` (kind, source, ...) as the folder
    `directory`, replacing a previous index there whole (module docstring)."""
    import faiss

    from pcmpipe.index.flat import FlatIndex, to_faiss

    directory = check_output(directory)
    ids = [str(i) for i in ids]
    if len(ids) != index.ntotal:
        raise ValueError(f"{len(ids)} ids for an index of {index.ntotal} rows")
    record = dict(meta)
    if isinstance(index, FlatIndex):
        record["dtype"] = index.dtype
        index = to_faiss(index)
    if hasattr(index, "nlist"):
        record.update(nlist=int(index.nlist), nprobe=int(record.get("nprobe", index.nprobe)))
    record.update(rows=len(ids), dim=int(index.d))
    parent = directory.parent
    parent.mkdir(parents=True, exist_ok=True)
    tempdirs.remove_dead(parent, f"{directory.name}.tmp")
    tmp = tempdirs.make(parent, f"{directory.name}.tmp")
    try:
        _write_faiss(faiss, index, tmp, directory)
        _write(tmp, directory, IDS_FILE, _json(ids))
        record["sha256"] = {INDEX_FILE: file_sha256(tmp / INDEX_FILE), IDS_FILE: file_sha256(tmp / IDS_FILE)}
        validate(IndexMeta, record, f"index metadata for {directory}")  # what open_index will demand
        _write(tmp, directory, META_FILE, _json(record, indent=2))
        for name in (INDEX_FILE, IDS_FILE, META_FILE, "."):
            atomic.fsync_path(tmp / name)
        _swap_in(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


# FAISS reports a failed fwrite as a RuntimeError ending in "(<strerror>)"; these are the disk's, not FAISS's
_WRITE_ERRNOS = {os.strerror(n): n for n in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS)}


def _write_faiss(faiss: Any, index: Any, tmp: Path, directory: Path) -> None:
    """index.faiss into the temp folder; a full disk or a file-size limit is an OSError naming the file the
    user asked for (the CLI guard's one line, with the free space), any other FAISS error one UserError line."""
    try:
        faiss.write_index(index, str(tmp / INDEX_FILE))
    except RuntimeError as e:
        cause = str(e).rstrip().rstrip(")").rpartition("(")[2]
        if cause in _WRITE_ERRNOS:
            raise OSError(_WRITE_ERRNOS[cause], cause, str(directory / INDEX_FILE)) from None
        with file_errors(directory / INDEX_FILE, "write", "index file"):
            raise


def _json(value: Any, indent: int | None = None) -> bytes:
    import json

    return (json.dumps(value, indent=indent) + "\n").encode("utf-8")


def _write(tmp: Path, directory: Path, name: str, data: bytes) -> None:
    """A file of the temp folder; a filesystem error names the file the user asked for, not the temp folder."""
    try:
        (tmp / name).write_bytes(data)
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(directory / name)) from None


def _swap_in(tmp: Path, directory: Path) -> None:
    """Replace `directory` by the complete folder `tmp` under the folder's lock (module docstring)."""
    with exclusive(directory, f"index folder {directory}"):
        folderswap.finish_dead_swaps(directory)
        check_output(directory)
        folderswap.swap_in(tmp, directory)


# ---- opening ----
def open_index(directory: str | Path) -> EmbeddingIndex:
    """Read a folder written by `save_index`, every file checked against index.json; UserError if it is not one."""
    directory = Path(directory)
    if not directory.is_dir():
        what = "is a file, not an index folder" if directory.exists() else "does not exist"
        raise UserError(f"{directory} {what}; build an index with `pcmpipe index EMB_DIR --out {directory}`")
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        missing = sorted({INDEX_FILE, IDS_FILE, META_FILE} - set(os.listdir(fd)))
        if missing:
            raise UserError(
                f"{directory} is not an index folder (no {', '.join(missing)}); build one with `pcmpipe index`"
            )
        meta = _read_meta(fd, directory)
        ids_bytes = _read_at(fd, directory, IDS_FILE, IDS_BYTES)
        _check_sha(directory, IDS_FILE, hashlib.sha256(ids_bytes).hexdigest(), meta.sha256.ids_json)
        ids = validate(IndexIds, parse_json(ids_bytes, f"{directory / IDS_FILE}"), f"{directory / IDS_FILE}").root
        index = _read_faiss(fd, directory, meta.sha256.index_faiss)
    finally:
        os.close(fd)
    return _checked(directory, index, np.asarray(ids, dtype=str), meta)


def _read_at(fd: int, directory: Path, name: str, max_bytes: int) -> bytes:
    with file_errors(directory / name, "read", "index file", hint=REBUILD):
        f = os.open(name, os.O_RDONLY, dir_fd=fd)
        with os.fdopen(f, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > max_bytes:
                raise UserError(f"{directory / name} is {size:,} bytes, more than such a file can be; {REBUILD}")
            return handle.read()


def _read_meta(fd: int, directory: Path) -> IndexMeta:
    where = f"{directory / META_FILE}"
    value = parse_json(_read_at(fd, directory, META_FILE, META_BYTES), where)
    if isinstance(value, dict) and "sha256" not in value:
        raise UserError(f"{where} records no checksums (an index from an earlier pcmpipe, or not one); {REBUILD}")
    return validate(IndexMeta, value, where)


def _check_sha(directory: Path, name: str, got: str, want: str) -> None:
    if got != want:
        raise UserError(f"{directory / name} is damaged (sha256 {got[:12]}, index.json records {want[:12]}); {REBUILD}")


def _read_faiss(fd: int, directory: Path, want: str) -> Any:
    """index.faiss, hashed in full before FAISS parses it (a damaged header can ask FAISS for any allocation),
    then parsed from the same open file."""
    import faiss

    path = directory / INDEX_FILE
    with file_errors(path, "read", "index file", hint=REBUILD):
        with os.fdopen(os.open(INDEX_FILE, os.O_RDONLY, dir_fd=fd), "rb") as f:
            h = hashlib.sha256()
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
            _check_sha(directory, INDEX_FILE, h.hexdigest(), want)
            f.seek(0)
            return faiss.read_index(faiss.PyCallbackIOReader(f.read, 1 << 20))  # type: ignore[attr-defined]


def _checked(directory: Path, index: Any, ids: np.ndarray, meta: IndexMeta) -> EmbeddingIndex:
    """The parsed index against its metadata: metric, size, dimension, kind and nprobe."""
    import faiss

    from pcmpipe.index.flat import from_faiss
    from pcmpipe.index.store import EmbeddingIndex

    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise UserError(f"{directory / INDEX_FILE} is not an inner-product index (pcmpipe scores by cosine); {REBUILD}")
    if not index.ntotal == len(ids) == meta.rows:
        raise UserError(
            f"index folder {directory} holds {index.ntotal} vectors, {len(ids)} ids and index.json says "
            f"{meta.rows}; {REBUILD}"
        )
    if index.d != meta.dim:
        raise UserError(f"{directory / INDEX_FILE} has {index.d} dimensions, index.json says {meta.dim}; {REBUILD}")
    flat = from_faiss(index)  # flat files (this version's, and IndexFlatIP) are searched by FlatIndex
    ivf = hasattr(index, "nlist")  # read_index returns the concrete type (IndexIVFFlat, ...)
    if (meta.kind == "flat") != (flat is not None) or (meta.kind != "flat") != ivf or meta.kind not in INDEX_KINDS:
        raise UserError(f"index.json of {directory} says kind {meta.kind}, index.faiss holds another; {REBUILD}")
    out = EmbeddingIndex(flat if flat is not None else index, ids, meta.model_dump(by_alias=True))
    if meta.nprobe is not None and ivf:
        if meta.nprobe > out.index.nlist:
            raise UserError(f"index.json of {directory}: nprobe {meta.nprobe} is more than the {out.index.nlist} cells")
        out.set_nprobe(meta.nprobe)
    return out
