"""Where settings come from, merged in one place: defaults < YAML file < CLI flags < `--set key=value`.

Every command that takes settings (extract, train, finetune, run) goes through here, so a value means the same
whether it is typed in a file, as a flag or as `--set`; the schema (pcmpipe.config.schema) then validates it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pcmpipe.cache.layout import runs_root
from pcmpipe.config.base import Settings
from pcmpipe.config.schema import TrainConfig
from pcmpipe.errors import UserError
from pcmpipe.readback import check_shape
from pcmpipe.readback import read_yaml as read_yaml_file

# a settings file is a few dozen values: one of megabytes, or an alias bomb, is no settings file
MAX_SETTINGS_BYTES = 1 << 20
MAX_SETTINGS_VALUES = 100_000


def read_yaml(yaml_path: str | Path) -> dict[str, Any]:
    """The mapping of settings in a YAML file (not validated yet); one-line UserError if unreadable."""
    path = Path(yaml_path)
    if not path.is_file():
        raise UserError(f"config file {path} not found")
    data = read_yaml_file(path, "config file", max_bytes=MAX_SETTINGS_BYTES, max_nodes=MAX_SETTINGS_VALUES) or {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of settings")
    return data


def parse_value(text: str) -> Any:
    """A `--set` value is a YAML scalar or list, as in a config file: '2' -> 2, '1e-4' -> 0.0001, '[I,T]' -> list."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    except RecursionError:
        raise UserError(f"--set value {text[:40]!r}... is nested too deeply to read") from None
    check_shape(value, f"--set value {text[:40]!r}", max_nodes=MAX_SETTINGS_VALUES)
    return value


def parse_set(item: str) -> tuple[str, Any]:
    """'epochs=2' -> ('epochs', 2); a missing '=' is one UserError line."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserError(f"--set expects key=value (e.g. epochs=2), got {item!r}")
    return key, parse_value(value)


def merge_settings(
    config: str | Path | None = None,
    flags: dict[str, Any] | None = None,
    sets: list[str] | None = None,
    defaults: dict[str, Any] | None = None,
    model: type[Settings] = TrainConfig,
) -> dict[str, Any]:
    """defaults < the YAML file `config` < flags that were given (not None) < `--set key=value` items.

    Runs live beside the cache they came from: for a training config (`model` a TrainConfig), a cache_root from
    any source places them under <cache_root>/runs unless runs_root is given. Other schemas leave an empty
    runs_root to their command (`pcmpipe run` picks <cache_root>/runs or, for the paper's recipe, runs-paper).
    """
    settings = dict(defaults or {})
    if config is not None:
        settings.update(read_yaml(config))
    settings.update({k: v for k, v in (flags or {}).items() if v is not None})
    settings.update(dict(parse_set(item) for item in sets or []))
    if issubclass(model, TrainConfig) and settings.get("cache_root") is not None and settings.get("runs_root") is None:
        settings["runs_root"] = str(runs_root(str(settings["cache_root"])))
    return settings


def load_config(yaml_path: str | Path, **overrides: Any) -> TrainConfig:
    """Read a YAML mapping of TrainConfig settings; `overrides` (non-None values) win over the file."""
    return TrainConfig.from_dict(merge_settings(yaml_path, overrides))
