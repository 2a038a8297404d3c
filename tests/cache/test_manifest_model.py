"""Every manifest pcmpipe reads (`.manifest.json`, `.manifest.rNNN.json`, an old `manifest.json`) goes through
pcmpipe.readback and the `Manifest` model: a crafted or damaged one is one line naming the file and the field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pcmpipe.cache import cache_dir, list_caches, merge_manifests, open_cache
from pcmpipe.cache.layout import manifest_in, rank_manifest_name
from pcmpipe.cache.manifest import load_manifest
from pcmpipe.cache.manifest_model import Manifest
from pcmpipe.cli import app
from pcmpipe.errors import UserError

DEEP = "[" * 100_000 + "]" * 100_000
GOLDEN_V1 = Path(__file__).resolve().parents[1] / "golden" / "v1" / "cache"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    from synthetic_cache import write_synthetic_cache

    root = tmp_path_factory.mktemp("manifests") / "cache"
    write_synthetic_cache(root, images={"train": 8, "val": 4, "test": 4}, rows_per_shard=8)
    return root


@pytest.fixture
def split(pristine, tmp_path) -> Path:
    shutil.copytree(pristine, tmp_path / "cache")
    return cache_dir(tmp_path / "cache", "synth", "I", "train")


def _edit(path: Path, change) -> None:
    doc = json.loads(path.read_text())
    out = change(doc)
    path.write_text(json.dumps(doc if out is None else out))


def _one_line(split: Path, *fragments: str) -> str:
    with pytest.raises(UserError) as err:
        open_cache(split)
    msg = str(err.value)
    assert "\n" not in msg and str(manifest_in(split)) in msg, msg
    for f in fragments:
        assert f in msg, msg
    return msg


CRAFTED = {
    "deep brackets": (lambda m: None, DEEP, "nested too deeply"),
    "a list": (lambda m: [m], None, "is not a pcmpipe cache manifest"),
    "features a string": (lambda m: m.update(features="feat"), None, "features"),
    "meta a list": (lambda m: m.update(meta=["x"]), None, "meta"),
    "shards a mapping": (lambda m: m.update(shards={"file": "part-00000.parquet"}), None, "shards"),
    "shard a string": (lambda m: m["shards"].__setitem__(0, "part-00000.parquet"), None, "shards.0"),
    "rows a string": (lambda m: m["shards"][0].update(rows="8"), None, "shards.0.rows"),
    "rows negative": (lambda m: m["shards"][0].update(rows=-1), None, "shards.0.rows"),
    "bytes null": (lambda m: m["shards"][0].update(bytes=None), None, "shards.0.bytes"),
    "complete an int": (lambda m: m.update(complete=1), None, "complete"),
    "shape of strings": (lambda m: m["features"]["feat"].update(shape=["32"]), None, "features.feat.shape"),
    "a shard outside": (lambda m: m["shards"][0].update(file="../x.parquet"), None, "not a file of this directory"),
    "format unknown": (lambda m: m.update(format="csv"), None, "format"),
    "side file a number": (lambda m: m.update(side_files=[3]), None, "side_files.0"),
    "version a string": (lambda m: m.update(format_version="1"), None, "format version '1'"),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_a_crafted_manifest_is_one_line_naming_the_field(split, case):
    change, text, fragment = CRAFTED[case]
    path = manifest_in(split)
    if text is not None:
        path.write_text(text)
    else:
        _edit(path, change)
    _one_line(split, fragment)
    rows = {(c["modality"], c["split"]): c for c in list_caches(split.parents[2])}
    assert "error" in rows[("I", "train")] and "\n" not in rows[("I", "train")]["error"]
    res = CliRunner().invoke(app, ["cache-info", str(split.parents[2])], env={"COLUMNS": "400"})
    assert res.exit_code == 1 and "damaged" in res.output and "Traceback" not in res.output


def test_unknown_keys_of_older_or_newer_writers_are_kept(split):
    path = manifest_in(split)

    def add_keys(m: dict) -> None:
        m["written_by"], m["shards"][0]["compressed"] = "pcmpipe 0.9", False

    _edit(path, add_keys)
    manifest = load_manifest(path)
    assert manifest["written_by"] == "pcmpipe 0.9" and manifest["shards"][0]["compressed"] is False
    assert open_cache(split).num_rows == 8


def test_a_deep_rank_manifest_is_one_line_when_merging(split):
    (split / rank_manifest_name(0)).write_text(DEEP)
    with pytest.raises(UserError, match="nested too deeply") as err:
        merge_manifests(split)
    assert "\n" not in str(err.value) and rank_manifest_name(0) in str(err.value)


def test_a_deep_old_named_manifest_stays_a_one_line_error_through_the_rename(split, tmp_path):
    """A writer renames an old `manifest.json` to the hidden name by rewriting it; a crafted one is moved as it is
    and then refused in one line, not a RecursionError inside the rename."""
    from pcmpipe.cache.manifest import hide_legacy_names

    manifest_in(split).rename(split / "manifest.json")
    (split / "manifest.json").write_text(DEEP)
    assert hide_legacy_names(split) == ["manifest.json"]
    _one_line(split, "nested too deeply")


def test_every_shipped_manifest_matches_the_model(pristine):
    """The writer's manifests and the old golden cache's (written before sizes and hidden names) are valid."""
    paths = [*pristine.rglob(".manifest.json"), *GOLDEN_V1.rglob("manifest.json")]
    assert len(paths) >= 10
    for path in paths:
        Manifest.model_validate(json.loads(path.read_text()))


def test_the_model_documents_every_field():
    from pcmpipe.cache.manifest_model import FeatureSpec, ShardEntry, SideFile

    for model in (Manifest, FeatureSpec, ShardEntry, SideFile):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
