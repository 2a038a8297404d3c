"""The settings of the smaller commands: `evaluate` (`EvaluateConfig`), `synth` (`SynthConfig`), `index`
(`IndexConfig`), `import-features` (`ImportConfig`), `download` (`DownloadConfig`), `cache-info`
(`CacheInfoConfig`) and `backbones` (`BackbonesConfig`).

Like the stage schemas, each field is a setting once (flag, help, choices, default), and the command takes
`--config FILE` and `--set key=value` (pcmpipe.cli.options.settings_command). `arguments` are the command's
positional arguments.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from pcmpipe.config.base import CommandLine, Settings
from pcmpipe.config.bounds import within_memory
from pcmpipe.config.extract import Format
from pcmpipe.config.schema import Device, MatchLevel, csv_list
from pcmpipe.datasets.archive import UnpackLimits
from pcmpipe.errors import UserError

Speech = Literal["tones", "espeak", "auto"]
IndexKind = Literal["auto", "flat", "ivf", "ivfpq"]  # pcmpipe.index.INDEX_KINDS
_UNPACK = UnpackLimits()  # download's defaults are the library's


class EvaluateConfig(Settings):
    """What `pcmpipe evaluate` scores, and where it writes the metrics."""

    cli = CommandLine(
        kind="evaluate setting",
        arguments=("run_dir",),
        metavars={"run_dir": "<path>", "cache_root": "<path>", "out": "<path>", "csv": "<path>"},
        set_example="recall_k=[1,5,10]",
    )

    run_dir: str = Field(
        description="a finished run directory, e.g. cache/runs/<name>, or a folder written by `pcmpipe export`"
    )
    match: MatchLevel | None = Field(None, description="instance or class (default: every level available)")
    split: str | None = Field(None, description="cached split to score (default: the run's test split)")
    dataset: str | None = Field(
        None, description="score another cached dataset extracted with the run's backbones (default: the run's)"
    )
    cache_root: str | None = Field(None, description="cache root of --dataset (default: the run's)")
    recall_k: list[int] = Field(
        default_factory=lambda: [1, 5], description="comma-separated k of recall@k, e.g. 1,5,10"
    )
    out: str | None = Field(None, description="also write the metrics as JSON here")
    csv: str | None = Field(None, description="also write the metrics as CSV here (one row per value)")
    device: Device = Field("auto", description="auto (cuda if available), cpu or cuda")

    @field_validator("recall_k", mode="before")
    @classmethod
    def _ks(cls, value: Any) -> Any:
        parts = csv_list(value)
        if isinstance(parts, list) and all(isinstance(k, int) or str(k).strip().isdigit() for k in parts):
            return [int(k) for k in parts]
        raise ValueError(f"--recall-k {value!r}: give comma-separated integers, e.g. 1,5,10")


class SynthConfig(Settings):
    """What `pcmpipe synth` writes: a small synthetic dataset in the real one's on-disk layout."""

    cli = CommandLine(kind="synth setting", arguments=("dataset",), metavars={"out": "<path>"}, set_example="images=12")

    dataset: str = Field(description="flickr8k or cub")
    out: str = Field(description="new (or empty) directory to write the dataset into")
    images: int | None = Field(
        None, description="flickr8k: images in all (default 60, split 4:1:1); cub: images per class (default 3)"
    )
    seed: int = Field(0, description="same seed and flags -> same files")
    text_subdir: bool = Field(
        False, description="flickr8k: text files under Flickr8k_text/; cub: captions under cub_text/text_c10"
    )
    speech: Speech = Field(
        "tones", description="flickr8k spoken captions: tones (deterministic), espeak, or auto (espeak-ng if installed)"
    )


class IndexConfig(Settings):
    """What `pcmpipe index` builds over an embeddings cache; the sizes are checked against the gallery when it
    is read (pcmpipe.index.params)."""

    # `kind` names the settings in messages (CommandLine.kind), so the index's kind is the field index_kind
    cli = CommandLine(
        kind="index setting",
        arguments=("emb_dir",),
        flags={"index_kind": "--kind"},
        labels={"index_kind": "index kind"},
        metavars={"emb_dir": "<path>", "out": "<path>"},
        set_example="nprobe=16",
    )

    emb_dir: str = Field(description="an embeddings cache written by `pcmpipe embed`")
    out: str | None = Field(None, description="index folder (default: <EMB_DIR>.index beside it)")
    index_kind: IndexKind = Field(
        "auto", description="auto (from size and --memory-budget), flat (exact), ivf or ivfpq"
    )
    nlist: int | None = Field(None, description="ivf/ivfpq: k-means cells, 1 to N (default ~4 sqrt(N), at most N/39)")
    nprobe: int | None = Field(
        None, description="ivf/ivfpq: cells visited per query, 1 to nlist (default min(8, nlist))"
    )
    pq_m: int | None = Field(
        None, description="ivfpq: bytes per vector, a divisor of the dimension (default: the largest up to 16)"
    )
    memory_budget: float = Field(
        4096.0, gt=0, description="auto: MiB the index may take in memory (picks flat, ivf or ivfpq)"
    )

    @model_validator(mode="after")
    def _budget_fits_the_machine(self) -> IndexConfig:
        """A budget the user gives is at most this machine's memory: above it, auto would choose an index (flat)
        that cannot be held in memory where it is searched."""
        if "memory_budget" in self.model_fields_set:
            try:
                within_memory(self.flag_of("memory_budget"), self.memory_budget)
            except UserError as e:
                raise ValueError(str(e)) from None
        return self


class ImportConfig(Settings):
    """What `pcmpipe import-features` writes as a cached modality, and from which files."""

    # labels: the message import-features has always given
    cli = CommandLine(
        kind="import setting",
        arguments=("name",),
        required=("name", "dataset", "split"),
        flags={"fmt": "--format"},
        labels={"fmt": "--format"},
        metavars={"npy": "<path>", "ids": "<path>", "parquet": "<path>", "cache_root": "<path>"},
        set_example="key=caption_id",
    )

    name: str = Field(description="modality name for the new features ([A-Za-z0-9_-]+), e.g. MYEMB")
    dataset: str = Field(description="dataset the ids belong to, e.g. flickr8k or cub")
    split: str = Field(description="train, val or test")
    npy: str | None = Field(None, description="array [N, D] (or [N, *shape]) saved with numpy.save")
    ids: str | None = Field(
        None, description="with --npy: one id per line, or a .tsv with a header (id + link columns)"
    )
    parquet: str | None = Field(None, description="table with an id column and a list-of-numbers vector column")
    id_column: str = Field("id", description="id column of --parquet or of a TSV --ids file")
    vector_column: str | None = Field(None, description="vector column of --parquet")
    key: str = Field("image_id", description="what an id is: image_id, caption_id, class_id or your own")
    links: Annotated[list[str] | None, BeforeValidator(csv_list)] = Field(
        None, description="comma-separated link columns to keep, e.g. class_id"
    )
    fmt: Format = Field("parquet", description="parquet or hdf5")
    cache_root: str = Field("cache", description="cache root (default cache/)")
    overwrite: bool = Field(False, description="replace an existing cache of this name with other contents")
    lock_timeout: float | None = Field(
        None,
        description="seconds to wait for another job writing or training on the same cache split, then stop "
        "(default: wait)",
    )


class DownloadConfig(Settings):
    """Which dataset `pcmpipe download` fetches, from where, into which root, and how large an archive may unpack."""

    cli = CommandLine(
        kind="download setting", arguments=("dataset",), metavars={"root": "<path>"}, set_example="retries=10"
    )

    dataset: str = Field(description="flickr8k (images, text, audio corpus) or cub")
    root: str = Field(description="dataset root: archives go to ROOT/downloads, contents unpack into ROOT")
    base_url: str | None = Field(
        None, description="fetch every archive from this folder URL instead (mirror); also $PCMPIPE_DOWNLOAD_BASE"
    )
    # its bounds are the library's (pcmpipe.datasets.download.MAX_RETRIES), which checks them for every caller
    retries: int = Field(5, description="resume attempts per file when the connection drops")
    max_unpack_gb: float = Field(
        _UNPACK.max_bytes / (1 << 30), gt=0, description="refuse an archive that unpacks to more"
    )
    max_ratio: float = Field(
        _UNPACK.max_ratio, ge=1, description="refuse an archive (zip: a member) that expands more (x)"
    )

    def unpack_limits(self) -> UnpackLimits:
        return UnpackLimits(max_bytes=int(self.max_unpack_gb * (1 << 30)), max_ratio=self.max_ratio)


class CacheInfoConfig(Settings):
    """Which caches `pcmpipe cache-info` lists, and whether it reads every byte to check them."""

    cli = CommandLine(
        kind="cache-info setting", arguments=("root",), metavars={"root": "<path>"}, set_example="verify=true"
    )

    root: str = Field("cache", description="cache root (or one cache directory)")
    verify: bool = Field(
        False, description="also check every shard's sha256 (reads all bytes; sizes are always checked)"
    )


class BackbonesConfig(Settings):
    """What `pcmpipe backbones` lists besides the registered backbones."""

    cli = CommandLine(kind="backbones setting", set_example="tags=false")

    tags: bool = Field(True, description="also list open_clip's pretrained tags per model (its own table, no network)")
