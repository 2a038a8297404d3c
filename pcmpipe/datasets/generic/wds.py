"""webdataset tar shards: the members of one sample share a key (`0003.jpg`, `0003.txt`, `0003.json`).

Keys and extensions are split as webdataset splits them (`webdataset.tariterators.base_plus_ext`: the key is
the name up to its first dot), so shards written with `webdataset.TarWriter` read as they are. A column is an
extension (`jpg`, `txt`, `wav`, `npy`, `cls`); a `json` member's fields are columns too, so ids, links and the
split can live there. `__key__` is the sample's key (the default id).

Text, class and json members and `.npy` vectors are small and read while indexing. Images and audio stay in
the shard: a record holds a `TarMember` (the member's byte range), which the decoding workers read with one
seek, so a shard is never unpacked and never held in memory. That needs uncompressed tars (webdataset's
usual form); a compressed shard is refused with the command that decompresses it.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from pcmpipe.datasets.generic.records import Row, row_split
from pcmpipe.datasets.generic.spec import DatasetSpec
from pcmpipe.datasets.generic.table import expand
from pcmpipe.errors import UserError, file_errors
from pcmpipe.readback import parse_json

TEXT_EXTS = ("txt", "text", "cls", "cls2", "caption")
# text, json and npy members are read while indexing and held for the whole extraction; a caption or a vector
# is kilobytes, so a member of more than this is a mistake (or crafted)
MAX_MEMBER_BYTES = 1 << 24


@dataclass(frozen=True)
class TarMember:
    """Bytes [offset, offset + size) of an uncompressed tar file: one member's data."""

    tar: Path
    name: str  # the member's name in the shard, for .errors.jsonl
    offset: int  # where its data starts in the file (tarfile's offset_data: after the member's header)
    size: int

    def open(self) -> BinaryIO:
        with open(self.tar, "rb") as f:
            f.seek(self.offset)
            data = f.read(self.size)
        if len(data) != self.size:
            raise OSError(f"{self.tar} ends inside member {self.name}")
        return io.BytesIO(data)

    def describe(self) -> str:
        return f"{self.tar.name} member {self.name}"


def _split_name(path: str) -> tuple[str | None, str | None]:
    from webdataset.tariterators import base_plus_ext

    return base_plus_ext(path)


def _read(tar: tarfile.TarFile, info: tarfile.TarInfo, where: str) -> bytes:
    """A small member's bytes, refused over MAX_MEMBER_BYTES (it is held in memory for the whole extraction)."""
    if info.size > MAX_MEMBER_BYTES:
        raise UserError(
            f"{where} is {info.size:,} bytes; text, json and npy members are read up front and may be at most "
            f"{MAX_MEMBER_BYTES:,} (keep large payloads in media members)"
        )
    f = tar.extractfile(info)
    return f.read() if f is not None else b""


def _text(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8-sig").strip()
    except UnicodeDecodeError as e:
        raise UserError(
            f"{where} is not UTF-8: byte 0x{data[e.start]:02x} at offset {e.start}; save it as UTF-8"
        ) from None


def _vector(data: bytes) -> np.ndarray:
    """A .npy member -> its array, or an empty one (listed by the extraction as 'no vector') when it is no .npy
    of numbers: empty, cut short, a pickle, or a header whose shape the bytes do not hold. The header is read
    first, so a crafted shape never allocates."""
    f = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        count = int(np.prod(shape, dtype=np.int64))
        if dtype.hasobject or dtype.kind not in "biuf" or count * dtype.itemsize != len(data) - f.tell():
            return np.zeros(0, np.float32)
        return np.frombuffer(data, dtype, count, f.tell()).reshape(shape, order="F" if fortran else "C")
    except Exception:  # numpy parses the header with ast: a damaged one raises SyntaxError, TokenError, ...
        return np.zeros(0, np.float32)


def _member_values(tar: tarfile.TarFile, info: tarfile.TarInfo, ext: str, where: str) -> dict[str, Any]:
    """The columns one small member gives: a text or npy member its extension, a json object its fields."""
    if ext == "json":
        doc = parse_json(_read(tar, info, where), where)
        return doc if isinstance(doc, dict) else {}
    data = _read(tar, info, where)
    return {ext: _vector(data) if ext == "npy" else _text(data, where)}


def _open(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, mode="r:")
    except tarfile.ReadError:
        raise UserError(
            f"{path} is not an uncompressed tar; decompress it (e.g. `gunzip -k {path.name}`) and list the .tar"
        ) from None


def _check_end(path: Path, tar: tarfile.TarFile) -> None:
    """tarfile ends its listing quietly at a header that is cut off or damaged, so a shard cut short at a member
    boundary or in a header would lose its later samples unnoticed: the listing must end at tar's
    end-of-archive block of zeros."""
    with open(path, "rb") as f:
        f.seek(tar.offset)
        block = f.read(tarfile.BLOCKSIZE)
    if block != tarfile.NUL * tarfile.BLOCKSIZE:
        raise UserError(
            f"webdataset shard {path} ends without tar's end-of-archive block after {tar.offset:,} bytes: it is "
            "cut short or damaged there; copy or write it again"
        )


def _where(path: Path, name: str) -> str:
    """'a.tar member 0001.jpg', with bytes of a name that is no UTF-8 shown as \\xNN."""
    shown = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return f"{path} member {shown}"


def shard_samples(path: Path, media: set[str]) -> list[tuple[str, dict[str, Any]]]:
    """One shard -> [(key, {column: value})], in shard order; media extensions become TarMembers."""
    samples: dict[str, dict[str, Any]] = {}
    with file_errors(path, "read", "webdataset shard", "copy or write it again"), _open(path) as tar:
        for info in tar:
            if not info.isfile():
                continue
            where = _where(path, info.name)
            if any(0xDC80 <= ord(c) <= 0xDCFF for c in info.name):  # tarfile keeps undecodable bytes as surrogates
                raise UserError(f"{where}: the member's name is not UTF-8, and ids and cache files need UTF-8")
            key, ext = _split_name(info.name)
            if key is None or ext is None:
                continue
            ext = ext.lower()
            values = samples.setdefault(key, {"__key__": key})
            if ext in media:
                values[ext] = TarMember(path, info.name, info.offset_data, info.size)
            elif ext == "json":  # its fields never replace a member's column
                values.update({k: v for k, v in _member_values(tar, info, ext, where).items() if k not in values})
            elif ext in TEXT_EXTS or ext == "npy":
                values.update(_member_values(tar, info, ext, where))
        _check_end(path, tar)
    return list(samples.items())


def wds_rows(spec: DatasetSpec) -> list[Row]:
    media = {m.column.lower() for m in spec.modalities.values() if m.kind in ("image", "audio")}
    rows: list[Row] = []
    for split, patterns in spec.files.items():
        for path in expand(spec, patterns):
            for key, values in shard_samples(path, media):
                where = f"{path} sample {key}"
                rows.append(Row(row_split(spec, split, values, where), values, where))
    return rows
