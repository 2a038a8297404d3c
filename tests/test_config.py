"""TrainConfig: defaults from the paper, coercion, validation messages, YAML loading, fingerprint."""

from __future__ import annotations

import math

import pytest

from pcmpipe.config import TrainConfig, config_fingerprint, load_config
from pcmpipe.errors import UserError


def test_paper_defaults_and_dataset_batch_sizes():
    cfg = TrainConfig.from_dict({"dataset": "flickr8k", "modalities": ["I", "T", "S"]})
    assert (cfg.loss, cfg.lr, cfg.weight_decay, cfg.epochs, cfg.patience) == ("pcmc", 1e-4, 0.2, 50, 5)
    assert (cfg.rho, cfg.threshold, cfg.dim, cfg.seed) == (1.0, 0.99, 256, 0)
    assert math.isclose(cfg.logit_scale_init, 1 / 0.07) and cfg.logit_scale_max == 100.0
    assert cfg.batch_size is None and cfg.resolved().batch_size == 80
    assert TrainConfig.from_dict({"dataset": "cub", "modalities": "I,T"}).resolved().batch_size == 128


def test_user_dataset_from_cache_dir_gets_generic_batch(tmp_path):
    (tmp_path / "mydata" / "X").mkdir(parents=True)
    cfg = TrainConfig.from_dict({"dataset": "mydata", "modalities": "I,X", "cache_root": str(tmp_path)})
    assert cfg.resolved().batch_size == 128
    assert cfg.modalities == ["I", "X"]


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"dataset": "imagenet", "modalities": "I,T"}, "unknown dataset 'imagenet'; valid choices: cub, flickr8k"),
        ({"dataset": "cub", "modalities": "I,Z"}, "unknown modality 'Z'; valid choices: A, C, I, P, S, T"),
        ({"dataset": "cub", "modalities": "I,T", "loss": "clip"}, "unknown loss 'clip'; valid choices: pcmc, pcmr"),
        ({"dataset": "cub", "modalities": "I,T", "match": "image"}, "valid choices: instance, class"),
        ({"dataset": "cub", "modalities": "I,T", "lr_head": 1}, "unknown training setting(s) lr_head"),
        ({"dataset": "cub", "modalities": "I"}, "at least two modalities"),
        ({"dataset": "cub", "modalities": "I,T", "epochs": "many"}, "epochs='many' has the wrong type"),
        ({"dataset": "cub", "modalities": "I,T", "lr": float("nan")}, "--lr must be a finite number"),
        ({"dataset": "cub", "modalities": "I,T", "batch_size": 1}, "--batch-size must be >= 2"),
        ({"modalities": "I,T"}, "missing training setting(s): dataset"),
    ],
)
def test_validation_errors_are_one_clear_line(data, fragment, tmp_path):
    with pytest.raises(UserError) as info:  # an empty cache root: only the known datasets are valid
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
    with pytest.raises(UserError, match="unknown training setting"):
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
