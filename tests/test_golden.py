"""Golden tests: what must not change when the code moves.

- every command's `--help` (snapshots under tests/golden/help/; a deliberate change is rewritten with
  PCMPIPE_UPDATE_GOLDEN=1 and shows up in the diff for review);
- the fingerprints of a canonical TrainConfig, FinetuneConfig and cache (a changed fingerprint would make every
  finished run and cache look new, and redo them);
- the public import paths;
- a cache and a finished run directory written by an earlier layout of the code (tests/golden/v1, made by
  tests/golden/make_fixtures.py) still load and evaluate to the numbers they recorded.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pcmpipe.cache.layout import manifest_in
from pcmpipe.cli import app

GOLDEN = Path(__file__).parent / "golden"
COMMANDS = [
    "",
    "synth",
    "download",
    "backbones",
    "extract",
    "import-features",
    "cache-info",
    "train",
    "evaluate",
    "finetune",
    "run",
    "report",
    "demo",
    "embed",
    "index",
    "search",
    "export",
    "serve",
]
HELP_ENV = {"COLUMNS": "120", "TERM": "dumb", "NO_COLOR": "1"}


def _help(command: str) -> str:
    args = ([command] if command else []) + ["--help"]
    result = CliRunner().invoke(app, args, env=HELP_ENV)
    assert result.exit_code == 0, result.output
    return "\n".join(line.rstrip() for line in result.output.splitlines()) + "\n"


@pytest.mark.parametrize("command", COMMANDS)
def test_help_snapshot(command):
    path = GOLDEN / "help" / f"{command or 'pcmpipe'}.txt"
    text = _help(command)
    if os.environ.get("PCMPIPE_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.is_file(), f"no snapshot {path}; run with PCMPIPE_UPDATE_GOLDEN=1 once"
    assert text == path.read_text()


def test_every_command_has_a_snapshot():
    listed = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    assert listed <= set(COMMANDS), f"commands without a help snapshot: {sorted(listed - set(COMMANDS))}"


# Values recorded before the layout moved; they key every finished run and cache on disk.
# The two config pins changed once on purpose: the defaults target="shared" and standardize="center" (PCMR's
# Eq. 7 target on real feature geometry, docs/conventions.md) differ from the legacy values "features" and "none",
# so a config that relies on the defaults is a new experiment. Recorded runs keep their fingerprints (their
# config.json lacks the new settings and loads with the legacy values; the v1 run below is still done).
# They changed a second time for rho_on="entries" (Eq. 6's power on each residual entry, docs/conventions.md
# "PCMR power factor"); the *_NORM pins are the values before it, which rho_on="norm" must still give.
# The fine-tuning pins changed a third time when fine-tuning took stage two's default standardize="center" (one
# preprocessing per table: its fine-tuned rows stand beside centred frozen rows, docs/conventions.md). A fine-tuning
# config with standardize="none" keeps the value it had (FINETUNE_FINGERPRINT_UNCENTRED), so runs recorded before
# keep theirs.
TRAIN_FINGERPRINT = "805a39317ac30d980266acdb57cbce306d9f4dda60ec9e9c3d4014cdb2a48021"
FINETUNE_FINGERPRINT = "fe57df902fb3340f0e3799913f0454d50e043c7f099602c30640776616b1385b"
FINETUNE_FINGERPRINT_UNCENTRED = "d2997e438cba64a38eec6743a59f90a593a0773b9200fb1ede849bac5fc8e452"
TRAIN_FINGERPRINT_NORM = "8fd6bfbd0f18d512e5d88dd693b8fb86080596163e91ef0ad9729d32af1e9745"
FINETUNE_FINGERPRINT_NORM = "956fbdd30eb4d1814ad7e31eb130b6765adc729450697909a800741ef0ab9850"
CACHE_FINGERPRINT = "2e6107cb90f6e9761358175b42f1387f06de39649857d8ccf5aba357a8320802"


def _canonical_train():
    from pcmpipe.config import TrainConfig

    return TrainConfig.from_dict({"dataset": "flickr8k", "modalities": ["I", "T", "S"], "loss": "pcmr"})


def test_train_config_fingerprint():
    from pcmpipe.config import config_fingerprint

    assert config_fingerprint(_canonical_train()) == TRAIN_FINGERPRINT
    assert config_fingerprint(_canonical_train().model_copy(update={"rho_on": "norm"})) == TRAIN_FINGERPRINT_NORM


# The loading mode of stage two: `stream` resolves to True (streamed) or None (in memory: the legacy value, left out
# of the fingerprint) when a run starts; `false` forces memory and fingerprints as in memory.
TRAIN_FINGERPRINT_STREAMED = "c7dc276c6bcdf0ee67ffcd31a287a5571ab7459ff00cbe18c760a511f5de7fcb"
TRAIN_FINGERPRINT_STREAMED_BUFFER_64 = "0c52aff78d426cb262251d3ec9d7c10d247f3fa05c1d657d464f2c7a9949e8e8"


def test_streamed_train_config_fingerprint():
    from pcmpipe.config import config_fingerprint
    from pcmpipe.samples_stream import resolve_stream

    def fp(**kw):
        return config_fingerprint(resolve_stream(_canonical_train().model_copy(update=kw)))

    assert fp(stream=False) == TRAIN_FINGERPRINT
    assert fp(stream=True) == TRAIN_FINGERPRINT_STREAMED
    assert fp(stream=True, shuffle_buffer=64) == TRAIN_FINGERPRINT_STREAMED_BUFFER_64


def test_finetune_config_fingerprint():
    from pcmpipe.config import config_fingerprint
    from pcmpipe.training.finetune import FinetuneConfig

    cfg = FinetuneConfig.from_dict({"dataset": "cub", "modalities": ["I", "T", "A", "C"], "data_root": "data/cub"})
    assert config_fingerprint(cfg) == FINETUNE_FINGERPRINT
    assert config_fingerprint(cfg.model_copy(update={"rho_on": "norm"})) == FINETUNE_FINGERPRINT_NORM
    assert config_fingerprint(cfg.model_copy(update={"standardize": "none"})) == FINETUNE_FINGERPRINT_UNCENTRED


def test_cache_fingerprint():
    from pcmpipe.cache import cache_fingerprint

    fp = cache_fingerprint(
        features={"features": ((13, 768), "float32")},
        key="caption_id",
        links=["image_id"],
        meta={
            "backbone": "hubert-base",
            "weights_sha256": "ab" * 32,
            "dataset": "flickr8k",
            "modality": "S",
            "split": "train",
            "precision": "fp32",
        },
        fmt="parquet",
    )
    assert fp == CACHE_FINGERPRINT


PUBLIC = {
    "pcmpipe.errors": ["UserError"],
    "pcmpipe.losses": ["pcmc_loss", "pcmr_loss", "pcmr_target"],
    "pcmpipe.heads": ["ProjectionHead", "build_heads"],
    "pcmpipe.evaluation.metrics": ["recall_at_k", "r_precision", "per_class_accuracy"],
    "pcmpipe.evaluation.retrieval": ["positives_between"],
    "pcmpipe.evaluation.zeroshot": ["zero_shot_t1", "zero_shot_table"],
    "pcmpipe.evaluation.enrichment": ["enrichment_table", "fuse"],
    "pcmpipe.cache": ["open_cache", "ShardWriter", "cache_dir", "cache_fingerprint", "list_caches", "merge_manifests"],
    "pcmpipe.datasets": ["open_dataset", "DATASETS", "Record", "load_audio", "SPLITS"],
    "pcmpipe.datasets.download": ["download"],
    "pcmpipe.datasets.archive": ["safe_extract"],
    "pcmpipe.backbones": ["create_backbone", "BACKBONES"],
    "pcmpipe.backbones.clip": ["encode_text_trimmed"],
    "pcmpipe.config": ["TrainConfig", "config_fingerprint", "load_config"],
    "pcmpipe.augment": ["EDA"],
    "pcmpipe.cli": ["app"],
    # training samples as docs/training.md, docs/performance.md and docs/scaling.md name them
    "pcmpipe.samples": [
        "load_modality",
        "load_split",
        "join",
        "peek_split",
        "find_base",
        "check_compatible",
        "ModalityData",
        "SplitData",
        "SplitData.batch",
        "SplitData.epoch_batches",
        "ModalityData.chunks",
    ],
    "pcmpipe.samples_stream": ["StreamedSplit", "StreamedSplit.epoch_batches", "resolve_stream"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_import_paths(module):
    mod = importlib.import_module(module)
    missing = [name for name in PUBLIC[module] if not _has(mod, name)]
    assert not missing, f"{module} lost {missing}"


def _has(obj, dotted: str) -> bool:
    """`obj.a.b` exists (a documented method of a public class counts as a public name)."""
    for part in dotted.split("."):
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


@pytest.fixture
def old_layout(tmp_path, monkeypatch):
    """A private copy of the v1 fixture; its config.json holds paths relative to this folder."""
    shutil.copytree(GOLDEN / "v1", tmp_path / "v1")
    monkeypatch.chdir(tmp_path / "v1")
    return tmp_path / "v1"


def test_old_cache_still_reads(old_layout):
    from pcmpipe.cache import open_cache

    for m, rows in (("I", 8), ("T", 16), ("S", 16)):
        reader = open_cache(Path("cache/synth") / m / "test")
        columns, features = reader.read()
        assert reader.num_rows == rows and len(columns["id"]) == rows
        assert (
            reader.fingerprint == json.loads(manifest_in(Path("cache/synth") / m / "test").read_text())["fingerprint"]
        )


def test_old_run_still_loads_and_evaluates_to_its_numbers(old_layout):
    from pcmpipe.training.evaluate import evaluate_run

    run = Path("cache/runs/golden")
    recorded = json.loads((run / "test_metrics.json").read_text())
    result = evaluate_run(run)
    for direction, values in recorded["instance"].items():
        if "->" in direction:
            for metric, value in values.items():
                assert result["instance"][direction][metric] == pytest.approx(value, abs=1e-6), (direction, metric)


def test_old_run_is_recognised_as_done(old_layout):
    from pcmpipe.config import TrainConfig
    from pcmpipe.training.stage2 import train

    cfg = json.loads((old_layout / "cache/runs/golden/config.json").read_text())["config"]
    before = (old_layout / "cache/runs/golden/heads.safetensors").read_bytes()
    assert train(TrainConfig.from_dict(cfg)) == Path("cache/runs/golden")
    assert (old_layout / "cache/runs/golden/heads.safetensors").read_bytes() == before
