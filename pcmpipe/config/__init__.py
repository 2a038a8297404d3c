"""One schema of settings (pydantic): every setting once, with its type, bounds, choices and help text.

- schema.py: `TrainConfig` (stage two) and its fingerprint; the choices (`Loss`, `Device`, ...) as Literals
- finetune.py: `FinetuneConfig` (stage two plus the unfrozen towers)
- extract.py: `ExtractConfig` (stage one: `pcmpipe extract`, a pipeline's `extract:` options)
- commands.py: `EvaluateConfig`, `SynthConfig`, `IndexConfig`, `ImportConfig`, `DownloadConfig`, `CacheInfoConfig`,
  `BackbonesConfig` (evaluate, synth, index, import-features, download, cache-info, backbones)
- use.py: `EmbedConfig`, `SearchConfig`, `ExportConfig`, `ServeConfig` (embed, search, export, serve)
- experiments.py: `RunConfig`, `ReportConfig`, `DemoConfig` (run, report, demo)
- merge.py: defaults < YAML < flags < `--set key=value`, in one function for every command
- base.py: what schemas share, and the one place a pydantic ValidationError becomes a UserError line
"""

from pcmpipe.config.extract import ExtractConfig
from pcmpipe.config.finetune import FinetuneConfig
from pcmpipe.config.merge import load_config, merge_settings, parse_set, parse_value, read_yaml
from pcmpipe.config.schema import (
    DATASET_BATCH_SIZE,
    DEFAULT_BATCH_SIZE,
    DEVICES,
    LOGIT_SCALE_MODES,
    LOSSES,
    MATCH_LEVELS,
    MODALITY_RE,
    NAME_RE,
    TrainConfig,
    config_fingerprint,
    setting_of,
)

__all__ = [
    "DATASET_BATCH_SIZE",
    "DEFAULT_BATCH_SIZE",
    "DEVICES",
    "LOGIT_SCALE_MODES",
    "LOSSES",
    "MATCH_LEVELS",
    "MODALITY_RE",
    "NAME_RE",
    "ExtractConfig",
    "FinetuneConfig",
    "TrainConfig",
    "config_fingerprint",
    "setting_of",
    "load_config",
    "merge_settings",
    "parse_set",
    "parse_value",
    "read_yaml",
]
