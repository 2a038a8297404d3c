"""The format of a cache manifest (`.manifest.json`, and each rank's `.manifest.rNNN.json`), as a pydantic model.

This model is the format's definition: docs/cache-format.md describes it in prose and points here. Every manifest
pcmpipe reads is validated against it (`pcmpipe.cache.manifest.load_manifest`, through `pcmpipe.readback`), so a
hand-edited, damaged or crafted manifest (a list, a string where a mapping belongs, a row count "12", a shard
named `../x`) is one line naming the file and the field, never a KeyError or TypeError inside a reader.

Types are strict: JSON gives numbers, strings and booleans their own types, and nothing is converted ("12" is not
12, 1 is not true). Keys this version does not know are kept, since manifests outlive the version that wrote them.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

FORMAT_VERSION = 1


class _Part(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class FeatureSpec(_Part):
    """One feature column of every row."""

    shape: list[int] = Field(description="the feature's shape per row, e.g. [512] or [13, 768] (HuBERT's layers)")
    dtype: str = Field(description="numpy dtype name of the stored values: float32, float16, float64 or an int type")

    @field_validator("shape")
    @classmethod
    def _positive(cls, shape: list[int]) -> list[int]:
        if any(d < 0 for d in shape):
            raise ValueError("every dimension must be a whole number >= 0")
        return shape


class _CheckedFile(_Part):
    """A finished file of the split directory, which readers check against its size and sha256 before use."""

    # Whether the name may be hidden: the cache's own files are (`.errors.jsonl`), a shard never is, so that a
    # shard list can never point a reader at the manifest or the lock.
    hidden_name: ClassVar[bool] = False

    file: str = Field(description="its name in the split directory, with no folder part")
    sha256: str = Field(description="sha256 of the file's bytes, hex")

    @field_validator("file")
    @classmethod
    def _in_directory(cls, name: str) -> str:
        plain = name and PurePosixPath(name).name == name and "\\" not in name and name not in (".", "..")
        if not plain or (name.startswith(".") and not cls.hidden_name):
            raise ValueError(f"{name!r} is not a file of this directory")
        return name


class ShardEntry(_CheckedFile):
    """A finished shard, in read order; its name is never hidden (e.g. part-00000.parquet)."""

    rows: int = Field(ge=0, description="rows in the shard")
    bytes: int | None = Field(
        None, ge=0, description="the file's size; absent in caches written before sizes were recorded"
    )

    @field_validator("bytes", mode="before")
    @classmethod
    def _present_means_a_number(cls, value: Any) -> Any:
        if value is None:  # absent is allowed, an explicit null is not: readers compare it with the file's size
            raise ValueError("must be a whole number where present")
        return value


class SideFile(_CheckedFile):
    """Another finished file of the cache (extraction's `.errors.jsonl`, hidden), checked like a shard."""

    hidden_name: ClassVar[bool] = True

    bytes: int = Field(ge=0, description="its size")


class Manifest(_Part):
    """What a cache split is and which of its shards are finished; rewritten atomically after every shard."""

    format_version: Literal[1] = Field(description="the manifest format; readers refuse other versions")
    meta: dict[str, Any] = Field(
        description="free JSON object from the writer: backbone, weights checksum, preprocessing, dataset, split, "
        "or (import-features) the input files' sha256; part of the fingerprint"
    )
    features: dict[str, FeatureSpec] = Field(min_length=1, description="feature name -> shape and dtype")
    key: str = Field(description="the key column (image_id, caption_id, class_id, ...), equal to `id`")
    links: list[str] = Field(description="link columns: the coarser ids each row belongs to (never the key)")
    format: Literal["parquet", "hdf5"] = Field(description="the shards' file format")
    fingerprint: str = Field(description="sha256 of the canonical JSON of meta, features, key, links and format")
    expected_rows: int | None = Field(None, ge=0, description="rows the writer expects (null: unknown)")
    shards: list[ShardEntry] = Field(description="finished shards in read order")
    num_rows: int = Field(ge=0, description="the sum of the shards' rows")
    complete: bool = Field(description="true once the writer closed; readers refuse an incomplete cache")
    listing: str | None = Field(
        None, description="sha256 of the inputs the rows were made from (extract); compared before reuse"
    )
    side_files: list[SideFile] = Field(default_factory=list, description="other finished files, checked like shards")
    origin: str | None = Field(None, description="'synthetic' or 'real': whether extraction read `pcmpipe synth` data")
    data_root: str | None = Field(
        None, description="extract: the dataset root (absolute) its rows were read from; where search finds media"
    )
