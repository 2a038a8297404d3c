"""Corruption sweep over the cache's files: a flipped byte, a truncation or a deletion of a shard (Parquet and
HDF5), of .manifest.json and of .errors.jsonl, then `cache-info`, `train` and `extract` against it. Each one gives
one line naming the damaged file, or recovers (extract rebuilds what it can recompute); none reports a number
from the damaged file as if it were whole."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing in this file may download

import numpy as np
import pytest
from extraction import extract
from synthetic_cache import write_synthetic_cache
from typer.testing import CliRunner

from pcmpipe.cache import cache_dir, open_cache
from pcmpipe.cache.layout import ERRORS, MANIFEST, manifest_in
from pcmpipe.cli import app
from pcmpipe.config import TrainConfig
from pcmpipe.datasets.synthetic import synth
from pcmpipe.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")
DAMAGES = ("flip", "truncate", "delete")


def damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[len(data) // 2] ^= 0x10  # same size: only a checksum can tell
        path.write_bytes(bytes(data))
    elif how == "truncate":
        path.write_bytes(bytes(data[: len(data) * 2 // 3]))
    else:
        path.unlink()


def _train(root: Path, tmp_path: Path):
    from pcmpipe.training.stage2 import train

    cfg = {"dataset": "synth", "modalities": "I,T", "cache_root": str(root), "epochs": 1, "progress": False}
    return train(TrainConfig.from_dict({**cfg, "runs_root": str(tmp_path / "runs")}))


def _cache_info(root: Path, *flags: str):
    return CliRunner().invoke(app, ["cache-info", str(root), *flags], env={"COLUMNS": "400"})


def _one_line(message: str, name: str) -> None:
    assert "\n" not in message and name in message and "Traceback" not in message, message


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    out = {}
    for fmt in ("parquet", "hdf5"):
        root = tmp_path_factory.mktemp(fmt)
        write_synthetic_cache(root, images={"train": 12, "val": 4, "test": 4}, fmt=fmt)
        out[fmt] = root
    return out


@pytest.mark.parametrize("fmt", ["parquet", "hdf5"])
@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_shard_is_named_by_cache_info_and_train(pristine, tmp_path, fmt, how):
    root = tmp_path / "cache"
    shutil.copytree(pristine[fmt], root)
    shard = next(cache_dir(root, "synth", "I", "train").glob("part-*"))
    damage(shard, how)
    checked = _cache_info(root, "--verify")
    assert checked.exit_code == 1 and "damaged" in checked.output and shard.name in checked.output
    quick = _cache_info(root)  # sizes and row counts only: a flip keeps both
    assert quick.exit_code == (0 if how == "flip" else 1)
    with pytest.raises(UserError) as err:
        open_cache(shard.parent)
    _one_line(str(err.value), shard.name)
    with pytest.raises(UserError) as err:
        _train(root, tmp_path)
    _one_line(str(err.value), shard.name)


@pytest.mark.parametrize(
    "how", [*DAMAGES, "missing key", "wrong type"]
)  # the last two: train and cache-info hit KeyError / TypeError before
def test_damaged_manifest_is_one_line_naming_it(pristine, tmp_path, how):
    root = tmp_path / "cache"
    shutil.copytree(pristine["parquet"], root)
    manifest = manifest_in(cache_dir(root, "synth", "T", "val"))
    if how == "missing key":
        m = json.loads(manifest.read_text())
        del m["features"]
        manifest.write_text(json.dumps(m))
    elif how == "wrong type":
        m = json.loads(manifest.read_text())
        m["complete"], m["shards"][0]["rows"] = "yes", "12"
        manifest.write_text(json.dumps(m))
    elif how == "flip":
        manifest.write_bytes(b"z" + manifest.read_bytes()[1:])  # '{' -> 'z': not JSON any more
    else:
        damage(manifest, how)
    with pytest.raises(UserError) as err:
        _train(root, tmp_path)
    # a deleted manifest leaves no cache: the message names its directory and the command that makes it
    _one_line(str(err.value), str(manifest.parent) if how == "delete" else str(manifest))
    info = _cache_info(root)
    if how == "delete":
        assert info.exit_code == 0 and " val " not in info.output.split("T ", 1)[-1].split("\n", 1)[0]
    else:
        assert info.exit_code == 1 and "damaged" in info.output


def test_extract_recovers_from_or_names_each_damaged_file(tmp_path):
    root, cache = tmp_path / "flickr8k", tmp_path / "cache"
    synth("flickr8k", root, images=6, seed=1)
    train = (root / "Flickr_8k.trainImages.txt").read_text().split()
    (root / "Flicker8k_Dataset" / train[0]).unlink()  # one skipped input: .errors.jsonl is not empty
    kw = dict(
        modalities=["I"],
        splits=["train"],
        cache_root=cache,
        backbones={"image": "clip-tiny-image"},
        weights={"image": "random:0"},
        workers=0,
        batch_size=4,
        device="cpu",
        rows_per_shard=2,
    )
    extract("flickr8k", root, **kw)
    d = cache_dir(cache, "flickr8k", "I", "train")
    want_cols, want = open_cache(d).read()
    for name in ("part-00001.parquet", ERRORS, MANIFEST):
        for how in DAMAGES:
            damage(d / name, how)
            try:
                part = extract("flickr8k", root, **kw).parts[0]
            except UserError as e:  # a damaged manifest: what was there is unknown, so nothing is deleted
                assert name == MANIFEST and how != "delete"
                _one_line(str(e), str(d / name))
                assert "--overwrite" in str(e)
                part = extract("flickr8k", root, overwrite=True, **kw).parts[0]
            else:
                # a deleted manifest: its whole shards are adopted (resumed); anything else is rebuilt
                assert part.status == ("resumed" if name == MANIFEST else "rebuilt"), (name, how)
            assert (part.rows, part.skipped) == (3, 1)
            cols, got = open_cache(d).read()
            assert cols["id"].tolist() == want_cols["id"].tolist()
            np.testing.assert_array_equal(got["features"], want["features"])
