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
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from pcmpipe.datasets.generic.records import Row, row_split
from pcmpipe.datasets.generic.spec import DatasetSpec
from pcmpipe.datasets.generic.table import expand
from pcmpipe.errors import UserError

TEXT_EXTS = ("txt", "text", "cls", "cls2", "caption")


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


def _read(tar: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    f = tar.extractfile(info)
    return f.read() if f is not None else b""


def _value(ext: str, data: bytes, where: str) -> Any:
    if ext in TEXT_EXTS:
        return data.decode("utf-8", errors="replace").strip()
    if ext == "npy":
        try:
            return np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError:
            return np.zeros(0, np.float32)  # listed by the extraction as 'no vector'
    raise AssertionError(ext)


def shard_samples(path: Path, media: set[str]) -> list[tuple[str, dict[str, Any]]]:
    """One shard -> [(key, {column: value})], in shard order; media extensions become TarMembers."""
    try:
        tar = tarfile.open(path, mode="r:")
    except tarfile.ReadError:
        raise UserError(
            f"{path} is not an uncompressed tar; decompress it (e.g. `gunzip -k {path.name}`) and list the .tar"
        ) from None
    samples: dict[str, dict[str, Any]] = {}
    with tar:
        for info in tar:
            if not info.isfile():
                continue
            key, ext = _split_name(info.name)
            if key is None or ext is None:
                continue
            ext = ext.lower()
            values = samples.setdefault(key, {"__key__": key})
            where = f"{path.name} member {info.name}"
            if ext in media:
                values[ext] = TarMember(path, info.name, info.offset_data, info.size)
            elif ext == "json":
                try:
                    doc = json.loads(_read(tar, info))
                except json.JSONDecodeError as e:
                    raise UserError(f"{where}: not JSON ({e.msg})") from None
                if isinstance(doc, dict):
                    values.update({k: v for k, v in doc.items() if k not in values})
            elif ext in TEXT_EXTS or ext == "npy":
                values[ext] = _value(ext, _read(tar, info), where)
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
