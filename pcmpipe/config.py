"""Typed configuration of a stage-two training run (`TrainConfig`), its validation and fingerprint.

A config comes from CLI flags, from a YAML file (`load_config`) or from a pipeline section (`TrainConfig.from_dict`);
all three go through `from_dict`, which rejects unknown keys and coerces simple types, then `validate`.
Defaults follow the paper's recipe (Sec. 4, "Model design and training strategy").
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from pcmpipe.errors import UserError

# Plain registries of the choices a user can make; error messages list them.
LOSSES = ("pcmc", "pcmr")
MATCH_LEVELS = ("instance", "class")
LOGIT_SCALE_MODES = ("learnable", "fixed")
DEVICES = ("auto", "cpu", "cuda")
# Datasets the project knows; any dataset that has a directory under cache_root is accepted too
# (features brought with `pcmpipe import-features`).
DATASET_BATCH_SIZE = {"flickr8k": 80, "cub": 128}
DEFAULT_BATCH_SIZE = 128
# The paper's modality names; users may add their own through import-features.
from pcmpipe.modalities import NAMES as KNOWN_MODALITIES  # noqa: E402
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
MODALITY_RE = re.compile(r"^[A-Za-z0-9_-]+$")  # no ".": modality names key nn.ModuleDict entries

# Fields that do not change the numbers a run produces; left out of the fingerprint so that renaming a
# run or moving where runs are written does not make a finished run look different.
_NOT_FINGERPRINTED = ("name", "runs_root", "num_workers", "progress", "threads", "stream_val_mb")


@dataclass
class TrainConfig:
    """Everything that defines a stage-two run. `None` fields are resolved by `resolved()`."""

    dataset: str
    modalities: list[str]
    loss: str = "pcmc"  # pcmc | pcmr
    rho: float = 1.0  # PCMR power factor, Eq. 6
    threshold: float = 0.99  # PCMR target threshold t, Eq. 7
    lr: float = 1e-4
    weight_decay: float = 0.2
    epochs: int = 50
    patience: int = 5  # epochs without gain in mean val r@1 before stopping
    batch_size: Optional[int] = None  # None -> dataset default (flickr8k 80, cub 128, else 128)
    logit_scale: str = "learnable"  # learnable | fixed (PCMC temperature, Eq. 5)
    logit_scale_init: float = 1 / 0.07
    logit_scale_max: float = 100.0  # CLIP's clamp
    seed: int = 0
    match: str = "instance"  # level of the validation metric used for early stopping
    split_train: str = "train"
    split_val: str = "val"
    split_test: str = "test"
    cache_root: str = "cache"
    runs_root: str = "cache/runs"
    name: Optional[str] = None  # None -> derived from dataset, modalities, loss, seed, fingerprint
    device: str = "auto"  # auto | cpu | cuda
    dim: int = 256  # D, the common embedding size
    num_workers: int = 0  # reserved: batches are gathered in-process by index_select
    eval_batch: int = 4096  # rows per forward pass when embedding a whole split
    # On CPU, a validation modality whose features exceed this many MiB is decoded from its cache at every
    # validation instead of held in memory (None: always held). Same numbers either way.
    stream_val_mb: Optional[float] = 8.0
    compile: bool = False  # torch.compile the heads (off: the heads are tiny, compile time dominates)
    progress: bool = True  # rich progress bar on a terminal
    threads: Optional[int] = None  # CPU intra-op threads while training (None: torch's default)

    # ---- construction ----
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Build and validate a config from plain data; unknown keys raise one clear UserError."""
        if not isinstance(data, dict):
            raise UserError(f"a training config must be a mapping of settings, got {type(data).__name__}")
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise UserError(
                f"unknown training setting(s) {', '.join(unknown)}; valid settings: {', '.join(sorted(names))}"
            )
        missing = [n for n in ("dataset", "modalities") if data.get(n) in (None, "", [])]
        if missing:
            raise UserError(f"missing training setting(s): {', '.join(missing)} (e.g. --dataset flickr8k --modalities I,T,S)")
        kwargs = {k: _coerce(names[k], v) for k, v in data.items()}
        cfg = cls(**kwargs)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some settings changed, validated again."""
        return type(self).from_dict({**self.to_dict(), **changes})

    # ---- checks ----
    def validate(self) -> None:
        """Raise UserError on any setting a user got wrong; list the valid choices."""
        _choice("loss", self.loss, LOSSES)
        _choice("match", self.match, MATCH_LEVELS)
        _choice("logit_scale", self.logit_scale, LOGIT_SCALE_MODES)
        _choice("device", self.device, DEVICES)
        if not NAME_RE.match(self.dataset):
            raise UserError(f"invalid dataset name {self.dataset!r}; use letters, digits, '_', '.', '-'")
        known = sorted(set(DATASET_BATCH_SIZE) | set(cached_datasets(self.cache_root)))
        if self.dataset not in known:
            raise UserError(
                f"unknown dataset {self.dataset!r}; valid choices: {', '.join(known)} "
                f"(datasets are known by name or by a cache under {self.cache_root}/)"
            )
        if len(self.modalities) < 2:
            raise UserError(f"need at least two modalities to coordinate, got {','.join(self.modalities) or 'none'}")
        if len(set(self.modalities)) != len(self.modalities):
            raise UserError(f"modality listed twice in {','.join(self.modalities)}")
        valid_mods = sorted(set(KNOWN_MODALITIES) | set(cached_modalities(self.cache_root, self.dataset)))
        for m in self.modalities:
            if not MODALITY_RE.match(m) or m not in valid_mods:
                raise UserError(f"unknown modality {m!r}; valid choices: {', '.join(valid_mods)}")
        for name, value in (("lr", self.lr), ("rho", self.rho), ("threshold", self.threshold),
                            ("weight_decay", self.weight_decay), ("logit_scale_init", self.logit_scale_init),
                            ("logit_scale_max", self.logit_scale_max)):
            if not math.isfinite(value):
                raise UserError(f"--{name.replace('_', '-')} must be a finite number, got {value}")
        if self.lr <= 0 or self.weight_decay < 0 or self.rho < 0:
            raise UserError("--lr must be > 0, --weight-decay and --rho >= 0")
        if not 0 < self.logit_scale_init <= self.logit_scale_max:
            raise UserError("the logit scale init must be in (0, logit_scale_max]")
        if self.epochs < 1 or self.patience < 1 or self.dim < 1 or self.eval_batch < 1:
            raise UserError("--epochs, patience, dim and eval_batch must be >= 1")
        if self.stream_val_mb is not None and not self.stream_val_mb >= 0:
            raise UserError(f"stream_val_mb must be >= 0 (MiB) or null, got {self.stream_val_mb}")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"--threads must be >= 1, got {self.threads}")
        if self.batch_size is not None and self.batch_size < 2:
            raise UserError(f"--batch-size must be >= 2 (contrastive batches need negatives), got {self.batch_size}")
        if self.name is not None and not NAME_RE.match(self.name):
            raise UserError(f"invalid run name {self.name!r}; use letters, digits, '_', '.', '-'")

    # ---- derived values ----
    def resolved(self) -> "TrainConfig":
        """Fill the `None` defaults (batch size, run name) so the run records what it actually used."""
        out = dataclasses.replace(self, modalities=list(self.modalities))
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
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def read_yaml(yaml_path: str | Path) -> dict[str, Any]:
    """The mapping of settings in a YAML file (not validated yet); one-line UserError if unreadable."""
    path = Path(yaml_path)
    if not path.is_file():
        raise UserError(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of settings")
    return data


def load_config(yaml_path: str | Path, **overrides: Any) -> TrainConfig:
    """Read a YAML mapping of TrainConfig settings; `overrides` (non-None values) win over the file."""
    data = read_yaml(yaml_path)
    data.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(data)


from pcmpipe.cache.layout import cached_datasets, cached_modalities  # noqa: E402  (the cache tree's listing)


def _choice(name: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise UserError(f"unknown {name} {value!r}; valid choices: {', '.join(valid)}")


def _coerce(f: dataclasses.Field, value: Any) -> Any:
    """Turn YAML/CLI values into the field's type: 'I,T,S' -> list, '1e-4' -> float, ...; bad values -> UserError."""
    typ = str(f.type)
    if value is None:
        return None
    try:
        if f.name == "modalities":
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            return [str(v) for v in value]
        if typ.startswith("Optional[int]") or typ == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if typ == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if typ == "bool":
            if isinstance(value, str):
                if value.lower() in ("true", "yes", "1", "on"):
                    return True
                if value.lower() in ("false", "no", "0", "off"):
                    return False
                raise ValueError
            return bool(value)
        if typ.startswith("Optional[str]") or typ == "str":
            if isinstance(value, (dict, list)):
                raise ValueError
            return str(value)
    except (TypeError, ValueError):
        raise UserError(f"setting {f.name}={value!r} has the wrong type (expected {typ})") from None
    return value
