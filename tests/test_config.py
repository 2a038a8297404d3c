"""The settings schema: defaults from the paper, coercion, bounds, choices, messages, merging, fingerprint."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pcmpipe.config import FinetuneConfig, TrainConfig, config_fingerprint, load_config, merge_settings
from pcmpipe.errors import UserError


def test_paper_defaults_and_dataset_batch_sizes():
    cfg = TrainConfig.from_dict({"dataset": "flickr8k", "modalities": ["I", "T", "S"]})
    assert (cfg.loss, cfg.lr, cfg.weight_decay, cfg.epochs, cfg.patience) == ("pcmc", 1e-4, 0.2, 50, 5)
    assert (cfg.rho, cfg.threshold, cfg.dim, cfg.seed) == (1.0, 0.99, 256, 0)
    assert math.isclose(cfg.logit_scale_init, 1 / 0.07) and cfg.logit_scale_max == 100.0
    assert cfg.batch_size is None and cfg.resolved().batch_size == 80
    assert TrainConfig.from_dict({"dataset": "cub", "modalities": "I,T"}).resolved().batch_size == 128


def test_user_dataset_gets_generic_batch(tmp_path):
    cfg = TrainConfig.from_dict({"dataset": "mydata", "modalities": "I,X", "cache_root": str(tmp_path)})
    assert cfg.resolved().batch_size == 128
    assert cfg.modalities == ["I", "X"]


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"dataset": "image net", "modalities": "I,T"}, "invalid dataset 'image net'; use letters"),
        ({"dataset": "cub", "modalities": "I,Z.1"}, "invalid modality name 'Z.1'"),
        ({"dataset": "cub", "modalities": "I,T", "loss": "clip"}, "unknown loss 'clip'; valid choices: pcmc, pcmr"),
        ({"dataset": "cub", "modalities": "I,T", "match": "image"}, "valid choices: instance, class"),
        ({"dataset": "cub", "modalities": "I,T", "lr_head": 1}, "unknown training setting lr_head; did you mean lr?"),
        ({"dataset": "cub", "modalities": "I"}, "at least two modalities"),
        ({"dataset": "cub", "modalities": "I,T", "epochs": "many"}, "epochs='many' has the wrong type"),
        ({"dataset": "cub", "modalities": "I,T", "lr": float("nan")}, "--lr must be a finite number"),
        ({"dataset": "cub", "modalities": "I,T", "batch_size": 1}, "--batch-size must be >= 2, got 1"),
        ({"dataset": "cub", "modalities": "I,T", "epochs": 0}, "--epochs must be >= 1, got 0"),
        ({"dataset": "cub", "modalities": "I,T", "threshold": 2}, "--threshold must be <= 1"),
        ({"dataset": "cub", "modalities": "I,T", "lr": -1}, "--lr must be > 0"),
        (
            {"dataset": "cub", "modalities": "I,T", "device": "tpu"},
            "unknown device 'tpu'; valid choices: auto, cpu, cuda",
        ),
        (
            {"dataset": "cub", "modalities": "I,T", "stream_val_mb": "eight"},
            "setting stream_val_mb='eight' has the wrong type",
        ),
        ({"dataset": "cub", "modalities": "I,T", "threads": "2.5"}, "setting threads='2.5' has the wrong type"),
        ({"dataset": "cub", "modalities": "I,T", "epochs": True}, "epochs=True has the wrong type"),
        (
            {"dataset": "cub", "modalities": "I,T", "learning_rate": 1},
            "unknown training setting learning_rate; did you mean lr?",
        ),
        ({"dataset": "cub", "modalities": "I,T", "epoch": 1}, "unknown training setting epoch; did you mean epochs?"),
        ({"modalities": "I,T"}, "missing training setting(s): dataset"),
    ],
)
def test_validation_errors_are_one_clear_line(data, fragment, tmp_path):
    with pytest.raises(UserError) as info:
        TrainConfig.from_dict({**data, "cache_root": str(tmp_path)})
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_yaml_roundtrip_with_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("dataset: cub\nmodalities: [I, T, A, C]\nloss: pcmr\nlr: 3e-4\nepochs: 7\n")
    cfg = load_config(path, epochs=3, seed=None)
    assert cfg.modalities == ["I", "T", "A", "C"] and cfg.loss == "pcmr"
    assert cfg.lr == 3e-4 and cfg.epochs == 3 and cfg.seed == 0
    (tmp_path / "bad.yaml").write_text("dataset: cub\nmodalities: I,T\nlearning_rate: 1\n")
    with pytest.raises(UserError, match="unknown training setting learning_rate; did you mean lr"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_fingerprint_tracks_numbers_not_names():
    base = TrainConfig.from_dict({"dataset": "cub", "modalities": "I,T"})
    fp = config_fingerprint(base)
    assert config_fingerprint(base.replace(name="other", runs_root="elsewhere", threads=1)) == fp
    assert config_fingerprint(base.replace(batch_size=128)) == fp  # the resolved default
    assert config_fingerprint(base.replace(seed=1)) != fp
    assert config_fingerprint(base.replace(loss="pcmr")) != fp
    assert base.resolved().name == f"cub-I+T-pcmc-s0-{fp[:8]}"


def test_yaml_strings_coerce_to_the_field_type(tmp_path):
    # a quoted number in YAML used to end in a traceback; int | None and float | None fields coerce too
    path = tmp_path / "run.yaml"
    path.write_text(
        'dataset: cub\nmodalities: I,T\nstream_val_mb: "8"\nbatch_size: "64"\nthreads: "2"\n'
        'lr: "3e-4"\ncompile: "yes"\nname: 2024\n'
    )
    cfg = load_config(path)
    assert (cfg.stream_val_mb, cfg.batch_size, cfg.threads, cfg.lr, cfg.compile) == (8.0, 64, 2, 3e-4, True)
    assert cfg.name == "2024" and isinstance(cfg.stream_val_mb, float)
    assert TrainConfig.from_dict({"dataset": "cub", "modalities": "I,T", "stream_val_mb": None}).stream_val_mb is None


def test_whole_numbers_fingerprint_like_floats():
    # `rho: 0` in a YAML file is the float 0.0 the dataclass recorded: finished runs keep their fingerprint
    a = TrainConfig.from_dict({"dataset": "cub", "modalities": "I,T", "rho": 0, "lr": 1})
    b = TrainConfig.from_dict({"dataset": "cub", "modalities": "I,T", "rho": 0.0, "lr": 1.0})
    assert config_fingerprint(a) == config_fingerprint(b) and a.to_dict()["rho"] == 0.0


def test_validation_does_not_touch_the_disk(tmp_path, monkeypatch):
    import os
    import pathlib

    def no_disk(*args, **kwargs):
        raise AssertionError("validation touched the disk")

    for name in ("iterdir", "is_dir", "exists", "is_file", "stat"):
        monkeypatch.setattr(pathlib.Path, name, no_disk)
    monkeypatch.setattr(os, "scandir", no_disk)
    monkeypatch.setattr(os, "listdir", no_disk)
    cfg = TrainConfig.from_dict({"dataset": "mine", "modalities": "I,MYEMB", "cache_root": "/nowhere"})
    assert cfg.resolved().name.startswith("mine-I+MYEMB-pcmc-s0-")
    FinetuneConfig.from_dict({"data_root": "/nowhere/cub"})


def test_finetune_schema_defaults_and_checks():
    cfg = FinetuneConfig.from_dict({"data_root": "data/cub", "unfreeze": "image"})
    assert (cfg.dataset, cfg.modalities, cfg.unfreeze, cfg.backbone_lr) == (
        "cub",
        ["I", "T", "A", "C"],
        ["image"],
        1e-6,
    )
    assert FinetuneConfig.from_dict({"data_root": "d", "unfreeze": "none"}).unfreeze == []
    for data, fragment in (
        ({"unfreeze": "image,foo"}, "unknown unfreeze 'foo'; valid choices: image, text"),
        ({"modalities": "A,T", "unfreeze": "image"}, "--unfreeze image needs modality I"),
        ({"eda_alpha": 2}, "--eda-alpha must be <= 1"),
        ({"data_root": None}, "pass --root"),
        ({"checkpoint_every": 10}, "fine-tuning checkpoints once per epoch"),
    ):
        with pytest.raises(UserError, match=fragment):
            FinetuneConfig.from_dict({"data_root": "d", **data})


def test_merge_order_yaml_then_flags_then_set(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("dataset: cub\nmodalities: [I, T]\nepochs: 9\nlr: 3e-4\nseed: 4\n")
    merged = merge_settings(
        path, {"epochs": "5", "seed": None, "lr": "1e-3"}, ["lr=2e-3", "patience=3"], defaults={"epochs": 1, "rho": 0.5}
    )
    cfg = TrainConfig.from_dict(merged)
    assert (cfg.epochs, cfg.lr, cfg.seed, cfg.patience, cfg.rho) == (5, 2e-3, 4, 3, 0.5)
    with pytest.raises(UserError, match="--set expects key=value"):
        merge_settings(sets=["epochs"])


def test_cache_root_from_any_source_places_the_runs(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(f"dataset: cub\nmodalities: I,T\ncache_root: {tmp_path / 'c'}\n")
    assert TrainConfig.from_dict(merge_settings(path)).runs_root == str(tmp_path / "c" / "runs")
    assert merge_settings(path, {"runs_root": "elsewhere"})["runs_root"] == "elsewhere"
    assert merge_settings(sets=["cache_root=x"])["runs_root"] == str(Path("x") / "runs")
    assert "runs_root" not in merge_settings(flags={"epochs": 2})  # no cache root: the schema's default


def test_bounds_that_protect_the_machine_and_flag_names_in_messages(monkeypatch):
    base = {"dataset": "x", "modalities": "I,T"}
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert TrainConfig.from_dict({**base, "threads": 8}).threads == 8
    with pytest.raises(UserError, match=r"^--threads must be <= 8 \(4 per CPU core of this machine\), got 9$"):
        TrainConfig.from_dict({**base, "threads": 9})
    assert TrainConfig.from_dict({**base, "dim": 65536}).dim == 65536
    with pytest.raises(UserError, match=r"^--dim must be <= 65536, got 100000000.0$"):
        TrainConfig.from_dict({**base, "dim": 1e8})
    # finetune's flag for num_workers is --workers: the message names the flag the user typed
    with pytest.raises(UserError, match=r"^--workers must be >= 0, got -1$"):
        FinetuneConfig.from_dict({"data_root": "d", "num_workers": -1})


def _schemas(cls: type) -> list[type]:
    return [c for sub in cls.__subclasses__() for c in [sub, *_schemas(sub)]]


def test_every_command_schema_declares_its_own_command_line():
    """A schema that forgot its `cli` would name its settings "setting" in messages and borrow train's `--set`
    example; each one's metadata names only fields it has."""
    import pcmpipe.config.commands
    import pcmpipe.config.experiments
    import pcmpipe.config.use  # noqa: F401  (the schemas register as subclasses on import)
    from pcmpipe.config.base import Settings

    schemas = _schemas(Settings)
    assert len(schemas) >= 17
    for schema in schemas:
        cli = schema.__dict__.get("cli")
        assert cli is not None and cli.kind.endswith(" setting"), schema.__name__
        named = {*cli.arguments, *cli.repeated, *cli.required, *cli.flags, *cli.metavars, *cli.short, *cli.not_flags}
        assert named <= set(schema.model_fields), (schema.__name__, named - set(schema.model_fields))
