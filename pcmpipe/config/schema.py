"""The stage-two training schema (`TrainConfig`): every setting once, with type, bounds, choices and help.

A config comes from CLI flags, a YAML file or a pipeline section; all of them go through
`TrainConfig.from_dict` (pcmpipe.config.base), usually after `pcmpipe.config.merge.merge_settings`.
Validation checks names and values only: whether a dataset or modality is cached is checked where the run
opens its caches (pcmpipe.samples), so a config can be checked away from its cache.
Defaults follow the paper's Sec. 4 settings ("Model design and training strategy"), except the readings and
departures listed in pcmpipe.config.paper_recipe.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal, get_args

from pydantic import Field, field_validator, model_validator

from pcmpipe.config.base import CommandLine, Settings
from pcmpipe.config.bounds import check_sizes
from pcmpipe.limits import max_threads

Loss = Literal["pcmc", "pcmr"]
MatchLevel = Literal["instance", "class"]
LogitScaleMode = Literal["learnable", "fixed"]
Device = Literal["auto", "cpu", "cuda"]
Tracker = Literal["tensorboard", "wandb", "mlflow"]
PcmrTarget = Literal["shared", "features", "projections"]  # how Eq. 7 decides a shared view (docs/conventions.md)
Standardize = Literal["none", "center", "scale"]  # per-modality input standardisation, from the train split
RhoOn = Literal["entries", "norm"]  # what Eq. 6's power 2 + rho applies to (docs/conventions.md)
# Plain registries of the choices a user can make; error messages list them.
LOSSES: tuple[str, ...] = get_args(Loss)
MATCH_LEVELS: tuple[str, ...] = get_args(MatchLevel)
LOGIT_SCALE_MODES: tuple[str, ...] = get_args(LogitScaleMode)
DEVICES: tuple[str, ...] = get_args(Device)
TRACKERS: tuple[str, ...] = get_args(Tracker)
# Datasets the project knows; any other dataset is read from its cache (features brought with
# `pcmpipe import-features`).
DATASET_BATCH_SIZE = {"flickr8k": 80, "cub": 128}
DEFAULT_BATCH_SIZE = 128
NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
NAME_RE = re.compile(NAME_PATTERN)
MODALITY_RE = re.compile(r"^[A-Za-z0-9_-]+$")  # no ".": modality names key nn.ModuleDict entries
# Entries of a runs root that start with these are pcmpipe's own, not runs: `.tmp-<name>` (a run in progress),
# `.damaged-<name>`, `.<name>.lock`, `_pipelines/`. A run named `.tmp-x` would be taken for run x's temp folder.
RESERVED_RUN_PREFIXES = (".", "_")


def run_name_problem(name: str) -> str | None:
    """Why `name` cannot name a run directory, or None: a reserved first character, or `.`/`..`."""
    if name.startswith(RESERVED_RUN_PREFIXES):
        return (
            f"run name {name!r} starts with {name[0]!r}, which marks pcmpipe's own entries under a runs root "
            "(.tmp-<name>, .damaged-<name>, .<name>.lock, _pipelines); start it with a letter or digit"
        )
    return None


# Fields that do not change the numbers a run produces; left out of the fingerprint so that renaming a
# run or moving where runs are written does not make a finished run look different.
_NOT_FINGERPRINTED = (
    "name",
    "runs_root",
    "num_workers",
    "progress",
    "threads",
    "stream_val_mb",
    "memory_budget_mb",
    "spill_dir",
    "log_to",
    "checkpoint_every",
)
# Settings added after runs were first written, with the value that reproduces what runs did before the
# setting existed. The fingerprint leaves a setting out while it has that value, so every earlier run keeps
# its fingerprint; a run record without the key had that value (see `setting_of`).
LEGACY_VALUES: dict[str, Any] = {
    "target": "features",
    "standardize": "none",
    "rho_on": "norm",
    # Streamed training data (pcmpipe.samples.stream) visits samples in another order than the in-memory
    # permutation, so the loading mode a run used is part of its fingerprint: `stream` is resolved to True or
    # None (in memory) when the run starts, and the shuffle settings count too.
    "stream": None,
    "shuffle": True,
    "shuffle_buffer": 16384,
    # every run before the setting existed drew from the views its cache held
    "cached_views": True,
}


MAX_DIM = 65_536


def csv_list(value: Any) -> Any:
    """'I,T,S' (a flag or a YAML string) -> ['I', 'T', 'S']; lists pass through."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


class TrainConfig(Settings):
    """Everything that defines a stage-two run. `None` fields are resolved by `resolved()`."""

    # cli_order: `pcmpipe train`'s flags, in help order; every other setting is given with --set
    cli = CommandLine(
        kind="training setting",
        required=("dataset", "modalities"),
        required_hint=" (e.g. --dataset flickr8k --modalities I,T,S)",
        cli_order=(
            "loss", "dataset", "modalities", "split_train", "split_val", "split_test", "epochs", "patience",
            "batch_size", "lr", "weight_decay", "rho", "rho_on", "threshold", "target", "standardize", "logit_scale",
            "seed", "match", "cache_root", "runs_root", "name", "config", "device", "threads", "log_to", "set",
        ),
    )  # fmt: skip

    dataset: str = Field(pattern=NAME_PATTERN, description="flickr8k, cub, or any dataset cached under --cache-root")
    modalities: list[str] = Field(description="comma-separated, e.g. I,T,S")
    loss: Loss = Field("pcmc", description="pcmc (contrastive) or pcmr (regression)")
    rho: float = Field(1.0, ge=0, description="PCMR power factor rho")  # Eq. 6
    rho_on: RhoOn = Field(
        "entries", description="PCMR power 2 + rho on each residual entry (entries) or on the Frobenius norm (norm)"
    )
    threshold: float = Field(0.99, ge=-1, le=1, description="PCMR target threshold t")  # a cosine, Eq. 7
    target: PcmrTarget = Field(
        "shared", description="PCMR target: shared (same cached row), features or projections (cosine > t)"
    )
    standardize: Standardize = Field(
        "center", description="per-modality features: none, center (minus the train mean) or scale (and / train std)"
    )
    lr: float = Field(1e-4, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(0.2, ge=0, description="decoupled weight decay")
    epochs: int = Field(50, ge=1, description="at most this many epochs")
    patience: int = Field(5, ge=1, description="stop after this many epochs without gain")  # in mean val r@1
    batch_size: int | None = Field(None, ge=2, description="default: flickr8k 80, cub 128, else 128")
    logit_scale: LogitScaleMode = Field("learnable", description="PCMC temperature: learnable or fixed")  # Eq. 5
    logit_scale_init: float = Field(1 / 0.07, gt=0, description="initial PCMC logit scale")
    logit_scale_max: float = Field(100.0, gt=0, description="upper clamp of the logit scale (CLIP's)")
    seed: int = Field(0, description="seed of head init and shuffling")
    match: MatchLevel = Field("instance", description="instance or class: level of the early-stopping metric")
    split_train: str = Field("train", description="cached split to train on")
    split_val: str = Field("val", description="split for early stopping")
    split_test: str = Field("test", description="split for the final metrics")
    cache_root: str = Field("cache", description="feature cache root")
    runs_root: str = Field("cache/runs", description="where runs are written (default <cache-root>/runs)")
    name: str | None = Field(None, pattern=NAME_PATTERN, description="run name (default derived from the config)")
    device: Device = Field("auto", description="auto, cpu or cuda")
    # D above 65,536 is no embedding size anyone means (the paper uses 256): one head alone would hold
    # in_dim x D weights, gigabytes before the first step, so a typo such as `dim: 1e8` stops here
    dim: int = Field(256, ge=1, le=MAX_DIM, description="D, the common embedding size")
    num_workers: int = Field(0, ge=0, description="reserved: batches are gathered in-process by index_select")
    eval_batch: int = Field(4096, ge=1, description="rows per forward pass when embedding a whole split")
    # On CPU, a validation modality whose features exceed this many MiB is decoded from its cache at every
    # validation instead of held in memory (None: always held). Same numbers either way.
    stream_val_mb: float | None = Field(8.0, ge=0, description="CPU: stream validation features above this many MiB")
    # Training data larger than this (features as held: fp16 caches at 2 bytes a value) is streamed from its
    # cache shard by shard (pcmpipe.samples.stream) instead of loaded; not fingerprinted, but the mode it picks
    # is (`stream`).
    memory_budget_mb: float = Field(4096.0, gt=0, description="stream the training split above this many MiB")
    stream: bool | None = Field(None, description="stream the training split: None (auto, by the budget), true, false")
    shuffle: bool = Field(True, description="shuffle training samples each epoch (off: cache order)")
    # the readings grid (pipelines/readings.yaml) compares K = 4 views with none on one cache: the number of views
    # is an extraction setting of the dataset, so turning them off per run is what keeps the comparison one run
    cached_views: bool = Field(
        True,
        description="stage two: train on the cache's augmented views (extract --views K); false: clean rows",
    )
    shuffle_buffer: int = Field(16384, ge=1, description="streamed: rows shuffled together (whole shards)")
    spill_dir: str | None = Field(None, description="streamed: where large looked-up modalities are spilled")
    # Stage two also checkpoints within an epoch every this many steps (None: after each epoch only), so a kill
    # loses at most that many steps; the resumed run continues the same batch order to the same numbers.
    checkpoint_every: int | None = Field(None, ge=1, description="stage two: also checkpoint every this many steps")
    # the step (heads and loss arithmetic) fused by torch.compile: on a GPU a step of small kernels is bound by
    # their launches; on CPU compile time dominates runs this small
    compile: bool = Field(False, description="torch.compile the training step: heads and loss (off by default)")
    progress: bool = Field(True, description="rich progress bar on a terminal")
    threads: int | None = Field(None, ge=1, description="CPU threads for training (default: torch's choice)")
    # metrics.jsonl is always written; these are extra sinks (pcmpipe.training.tracking)
    log_to: list[Tracker] = Field(
        default_factory=list, description="also log to tensorboard, wandb and/or mlflow (comma-separated)"
    )

    # ---- checks (a bool where a number belongs: Settings._plain_values) ----
    @field_validator("threads")
    @classmethod
    def _threads_fit_the_machine(cls, value: int | None) -> int | None:
        """At most 4 threads per core: beyond that torch only adds context switches, and each thread's stack
        and arena add up (`--threads 100000` ends in a MemoryError, then a segfault, inside the thread pool)."""
        most = max_threads()
        if value is not None and value > most:
            raise ValueError(f"--threads must be <= {most} (4 per CPU core of this machine), got {value}")
        return value

    @field_validator("name")
    @classmethod
    def _name_not_reserved(cls, value: str | None) -> str | None:
        problem = None if value is None else run_name_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="before")
    @classmethod
    def _recorded_before_new_settings(cls, data: Any) -> Any:
        """A run's recorded config (config.json: every setting of its time spelled out) that lacks a setting
        added later was run with that setting's legacy value, not today's default: fill it in, so the run
        keeps its fingerprint and is recognised as done. Partial configs (flags, YAML) get today's defaults."""
        if isinstance(data, dict):
            older = set(cls.model_fields) - set(LEGACY_VALUES) - set(_NOT_FINGERPRINTED)
            if older <= set(data) and any(k not in data for k in LEGACY_VALUES if k in cls.model_fields):
                data = {**{k: v for k, v in LEGACY_VALUES.items() if k in cls.model_fields}, **data}
        return data

    @field_validator("modalities", "log_to", mode="before")
    @classmethod
    def _split_modalities(cls, value: Any) -> Any:
        return csv_list(value)

    @field_validator("modalities")
    @classmethod
    def _check_modalities(cls, mods: list[str]) -> list[str]:
        if len(mods) < 2:
            raise ValueError(f"need at least two modalities to coordinate, got {','.join(mods) or 'none'}")
        if len(set(mods)) != len(mods):
            raise ValueError(f"modality listed twice in {','.join(mods)}")
        for m in mods:
            if not MODALITY_RE.match(m):
                raise ValueError(f"invalid modality name {m!r}; use letters, digits, '_', '-'")
        return mods

    @model_validator(mode="after")
    def _check_scale(self) -> TrainConfig:
        if not self.logit_scale_init <= self.logit_scale_max:
            raise ValueError("the logit scale init must be in (0, logit_scale_max]")
        return self

    @model_validator(mode="after")
    def _fits_the_machine(self) -> TrainConfig:
        """Settings that size memory, processes or output, bounded before any work (pcmpipe.config.bounds)."""
        check_sizes(self)
        return self

    # ---- derived values ----
    def to_cli_args(self) -> list[str]:
        """As `Settings.to_cli_args`, and the runs root whenever the cache root is given: runs otherwise go under
        <cache_root>/runs (`merge_settings`), which may not be where this config puts them."""
        args = super().to_cli_args()
        if "--cache-root" in args and "--runs-root" not in args:
            args += ["--runs-root", self.runs_root]
        return args

    def resolved(self) -> Any:
        """Fill the `None` defaults (batch size, run name) so the run records what it actually used."""
        out = self.model_copy(update={"modalities": list(self.modalities)})
        if out.batch_size is None:
            out.batch_size = DATASET_BATCH_SIZE.get(out.dataset, DEFAULT_BATCH_SIZE)
        if out.name is None:
            out.name = f"{out.dataset}-{'+'.join(out.modalities)}-{out.loss}-s{out.seed}-{config_fingerprint(out)[:8]}"
        return out


def config_fingerprint(cfg: TrainConfig) -> str:
    """sha256 of the canonical JSON of every setting that changes the numbers (not name/runs_root/workers).

    The batch size is resolved first so `None` and the dataset default fingerprint alike.
    """
    data = cfg.to_dict()
    if data["batch_size"] is None:
        data["batch_size"] = DATASET_BATCH_SIZE.get(cfg.dataset, DEFAULT_BATCH_SIZE)
    for k in _NOT_FINGERPRINTED:
        data.pop(k, None)
    for k, legacy in LEGACY_VALUES.items():
        if k in data and data[k] == legacy:
            del data[k]
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def setting_of(recorded: dict[str, Any], key: str) -> Any:
    """A setting from a run's recorded config; a run written before the setting existed had its legacy value."""
    if key in recorded:
        return recorded[key]
    if key in LEGACY_VALUES:
        return LEGACY_VALUES[key]
    raise KeyError(key)
