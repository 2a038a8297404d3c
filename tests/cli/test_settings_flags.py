"""Commands whose options are generated from a settings schema: a settings file, flags and `--set` merge in that
order, a flag that was not typed never overrides the file, and every setting's flag, help and default come from
its field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pcmpipe.cache.layout import cache_dir, manifest_in
from pcmpipe.cli import app
from pcmpipe.config import ExtractConfig, FinetuneConfig, TrainConfig
from pcmpipe.datasets.synthetic import synth

WIDE = {"COLUMNS": "400"}


@pytest.fixture(scope="module")
def flickr(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("flickr8k")
    synth("flickr8k", root, images=6, seed=1)
    return root


def test_extract_merges_file_flags_and_sets(flickr, tmp_path):
    """The file picks hdf5 and a limit of 100; the flag --limit 3 wins over it, --set rows_per_shard=2 over both,
    and the untyped --format (default parquet) leaves the file's hdf5 alone."""
    settings = {
        "root": str(flickr),
        "modalities": "T",
        "splits": ["train"],
        "text_backbone": "clip-tiny-text",
        "weights_text": "random:0",
        "device": "cpu",
        "workers": 0,
        "fmt": "hdf5",
        "limit": 100,
        "rows_per_shard": 50,
    }
    path = tmp_path / "extract.yaml"
    path.write_text(yaml.safe_dump(settings))
    cache = tmp_path / "cache"
    args = ["extract", "--dataset", "flickr8k", "--config", str(path), "--limit", "3", "--cache-root", str(cache)]
    res = CliRunner().invoke(app, [*args, "--set", "rows_per_shard=2"], env=WIDE)
    assert res.exit_code == 0, res.output
    manifest = json.loads(manifest_in(cache_dir(cache, "flickr8k", "T", "train")).read_text())
    assert manifest["num_rows"] == 3 and manifest["meta"]["limit"] == 3
    assert len(list(cache_dir(cache, "flickr8k", "T", "train").glob("*.h5"))) == 2  # 3 rows, 2 per shard


def test_extract_file_mistakes_are_one_line(flickr, tmp_path):
    path = tmp_path / "extract.yaml"
    path.write_text("root: x\nviewz: 2\n")
    res = CliRunner().invoke(app, ["extract", "--dataset", "flickr8k", "--config", str(path)], env=WIDE)
    assert res.exit_code == 2 and "unknown extract setting viewz; did you mean views?" in res.stderr, res.output
    res = CliRunner().invoke(app, ["extract", "--dataset", "flickr8k", "--set", "dtype=int8"], env=WIDE)
    assert res.exit_code == 2 and "unknown dtype 'int8'; valid choices: float32, float16" in res.stderr, res.output


@pytest.mark.parametrize(
    "command, model",
    [("extract", ExtractConfig), ("train", TrainConfig), ("finetune", FinetuneConfig)],
)
def test_help_comes_from_the_schema(command, model):
    """Each option's help is its field's description; extract shows typer's [default: X] of the field."""
    res = CliRunner().invoke(app, [command, "--help"], env={**WIDE, "TERM": "dumb", "NO_COLOR": "1"})
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    for flag, name in [("--dataset", "dataset"), ("--modalities", "modalities")]:
        description = model.model_fields[name].description
        assert flag in text and " ".join(description.split()) in text
    assert "--config" in text and "--set" in text
    if command == "extract":
        assert f"[default: {ExtractConfig.model_fields['rows_per_shard'].default}]" in text
        assert "[default: train,val,test]" in text


def test_synth_and_evaluate_take_a_settings_file(tmp_path):
    """synth: the file's size and seed, --set over the file; the same files as the flags write. evaluate: a file's
    mistake is one line naming the setting."""
    path = tmp_path / "synth.yaml"
    path.write_text("images: 6\nseed: 9\n")
    res = CliRunner().invoke(app, ["synth", "flickr8k", "--out", str(tmp_path / "a"), "--config", str(path)])
    assert res.exit_code == 0, res.output
    args = ["--out", str(tmp_path / "b"), "--images", "6", "--seed", "9"]
    assert CliRunner().invoke(app, ["synth", "flickr8k", *args]).exit_code == 0
    a, b = (sorted(p.relative_to(tmp_path / d) for p in (tmp_path / d).rglob("*")) for d in "ab")
    assert a == b and all(
        (tmp_path / "a" / p).read_bytes() == (tmp_path / "b" / p).read_bytes()
        for p in a
        if (tmp_path / "a" / p).is_file()
    )
    res = CliRunner().invoke(app, ["synth", "flickr8k", "--out", str(tmp_path / "c"), "--set", "speech=loud"], env=WIDE)
    assert res.exit_code == 2 and "unknown speech 'loud'; valid choices: tones, espeak, auto" in res.stderr
    (tmp_path / "eval.yaml").write_text("recall_k: one\n")
    res = CliRunner().invoke(app, ["evaluate", str(tmp_path), "--config", str(tmp_path / "eval.yaml")], env=WIDE)
    assert res.exit_code == 2 and "comma-separated integers" in res.stderr, res.output
