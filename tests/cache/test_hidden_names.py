"""A cache split holds only shards as far as pyarrow and `datasets` can see: its manifest, errors file and rank
manifests are hidden (`.manifest.json`, `.errors.jsonl`, `.manifest.rNNN.json`). Caches written with the old
names (`manifest.json`, `errors.jsonl`) still read everywhere, and `extract` reuses an intact one, renaming its
files to the hidden names without touching a shard."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from extraction import extract
from typer.testing import CliRunner

from pcmpipe.cache import ShardWriter, cache_dir, list_caches, merge_manifests, open_cache
from pcmpipe.cache.layout import ERRORS, LEGACY_NAMES, MANIFEST, errors_in, manifest_in, rank_manifests
from pcmpipe.cache.manifest import hide_legacy_names
from pcmpipe.cli import app
from pcmpipe.datasets.synthetic import synth
from pcmpipe.pipelines.plan import extraction_state
from pcmpipe.pipelines.spec import DataSpec

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "v1" / "cache"
# one tiny image split, two rows per shard (the same settings as the corruption tests' extraction)
KW = {"modalities": ["I"], "splits": ["train"], "workers": 0, "batch_size": 4, "device": "cpu", "rows_per_shard": 2}
KW |= {"backbones": {"image": "clip-tiny-image"}, "weights": {"image": "random:0"}}


@pytest.fixture(scope="module")
def extracted(tmp_path_factory) -> tuple[Path, Path]:
    """(dataset root, cache root) of one real extraction with one unreadable image, so the errors file has a
    line and is listed in the manifest's side files."""
    base = tmp_path_factory.mktemp("hidden")
    root, cache = base / "flickr8k", base / "cache"
    synth("flickr8k", root, images=6, seed=1)
    first = (root / "Flickr_8k.trainImages.txt").read_text().split()[0]
    (root / "Flicker8k_Dataset" / first).unlink()
    extract("flickr8k", root, cache_root=cache, **KW)
    return root, cache


def _visible(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))


def _as_old_layout(directory: Path) -> None:
    """What the previous version left: the same files under the visible names, side files named so too."""
    manifest = json.loads((directory / MANIFEST).read_text())
    for side in manifest.get("side_files", []):
        side["file"] = {hidden: old for old, hidden in LEGACY_NAMES.items()}[side["file"]]
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    (directory / MANIFEST).unlink()
    if (directory / ERRORS).exists():
        (directory / ERRORS).rename(directory / "errors.jsonl")


def test_pyarrow_and_datasets_read_a_fresh_split_as_it_is(extracted, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    _, cache = extracted
    d = cache_dir(cache, "flickr8k", "I", "train")
    cols, feats = open_cache(d).read()
    assert _visible(d) == ["part-00000.parquet", "part-00001.parquet"]
    assert errors_in(d).name == ERRORS and len(errors_in(d).read_text().splitlines()) == 1
    table = pq.read_table(d)
    assert sorted(table.column("id").to_pylist()) == sorted(cols["id"].tolist())
    loaded = datasets.load_dataset("parquet", data_dir=str(d), cache_dir=str(tmp_path / "hf"))
    assert list(loaded) == ["train"] and sorted(loaded["train"]["id"]) == sorted(cols["id"].tolist())
    assert len(loaded["train"][0]["features"]) == feats["features"].shape[1]


def test_a_merged_distributed_split_and_an_hdf5_split_show_only_shards(tmp_path):
    ids = [f"x{i:02d}" for i in range(8)]
    spec = dict(features={"f": ((3,), "float32")}, key="id", links=[], meta={"m": 1})
    d = tmp_path / "ranks"
    for rank in (0, 1):
        with ShardWriter(d, rank=rank, rows_per_shard=2, **spec) as w:
            mine = ids[rank::2]
            w.add(mine, {}, {"f": [[1.0, 2.0, 3.0]] * len(mine)})
    merge_manifests(d)
    assert sorted(rank_manifests(d)) == [0, 1] and all(p.name.startswith(".") for p in rank_manifests(d).values())
    assert sorted(pq.read_table(d).column("id").to_pylist()) == ids
    h5 = tmp_path / "h5"
    with ShardWriter(h5, fmt="hdf5", rows_per_shard=4, **spec) as w:
        w.add(ids, {}, {"f": [[1.0, 2.0, 3.0]] * 8})
    assert _visible(h5) == ["part-00000.h5", "part-00001.h5"]


def test_old_golden_cache_reads_without_being_changed(tmp_path):
    """Readers never rename: a read-only copy of an old cache opens, lists and plans as before."""
    root = tmp_path / "cache"
    shutil.copytree(GOLDEN, root)
    d = cache_dir(root, "synth", "T", "test")
    before = sorted(p.name for p in d.iterdir())
    assert "manifest.json" in before and manifest_in(d).name == "manifest.json"
    assert open_cache(d).num_rows > 0
    listed = {(c["modality"], c["split"]) for c in list_caches(root)}
    assert listed == {(m, s) for m in ("I", "S", "T") for s in ("train", "val", "test")}
    shown = CliRunner().invoke(app, ["cache-info", str(root)], env={"COLUMNS": "300"})
    assert shown.exit_code == 0 and shown.output.count("synth") >= 9, shown.output
    assert extraction_state(root, DataSpec("synth", "", ["T"]), "T") == ""
    assert sorted(p.name for p in d.iterdir()) == before


def test_extract_reuses_an_old_split_and_hides_its_files(extracted, tmp_path):
    root, reference = extracted
    cache = tmp_path / "cache"
    shutil.copytree(reference, cache)
    d = cache_dir(cache, "flickr8k", "I", "train")
    fingerprint = open_cache(d).fingerprint
    shards = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in d.glob("part-*")}
    _as_old_layout(d)
    assert {"manifest.json", "errors.jsonl"} <= set(_visible(d))
    with pytest.raises(pa.ArrowInvalid):  # the reason for the change: the old names are in pyarrow's way
        pq.read_table(d)
    assert open_cache(d).fingerprint == fingerprint  # still opens (and verifies its errors file) under old names

    part = extract("flickr8k", root, cache_root=cache, **KW).parts[0]
    assert (part.status, part.rows, part.skipped) == ("cached", 3, 1)
    assert (
        _visible(d) == sorted(shards)
        and {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in d.glob("part-*")} == shards
    )
    manifest = json.loads((d / MANIFEST).read_text())
    assert manifest["fingerprint"] == fingerprint and [s["file"] for s in manifest["side_files"]] == [ERRORS]
    assert (d / MANIFEST).read_bytes() == (cache_dir(reference, "flickr8k", "I", "train") / MANIFEST).read_bytes()
    assert pq.read_table(d).num_rows == 3


def test_a_rename_cut_short_still_verifies_and_is_finished_by_the_next_writer(extracted, tmp_path):
    """Killed between the two renames: errors file hidden, manifest still old and naming `errors.jsonl`."""
    _, reference = extracted
    d = tmp_path / "split"
    shutil.copytree(cache_dir(reference, "flickr8k", "I", "train"), d)
    _as_old_layout(d)
    os.replace(d / "errors.jsonl", d / ERRORS)
    assert open_cache(d).num_rows == 3  # the side file named errors.jsonl is found under its hidden name
    (d / "manifest.r000.json").write_text((d / "manifest.json").read_text())  # an old rank's leftover
    assert hide_legacy_names(d) == ["manifest.r000.json", "manifest.json"]
    assert _visible(d) == ["part-00000.parquet", "part-00001.parquet"]
    assert open_cache(d).num_rows == 3 and hide_legacy_names(d) == []
    # both names present (a copy, or an old pcmpipe run beside a new one): the hidden one wins, the old goes
    (d / "errors.jsonl").write_text("stale\n")
    assert hide_legacy_names(d) == ["errors.jsonl"] and errors_in(d).read_text() != "stale\n"
    assert open_cache(d).num_rows == 3


def test_import_features_sees_an_old_split_and_replaces_it_with_hidden_names(tmp_path):
    x = np.arange(24, dtype=np.float32).reshape(6, 4)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "ids.txt").write_text("".join(f"{i}\n" for i in range(6)))
    base = ["import-features", "E", "--dataset", "ds", "--split", "train", "--ids", str(tmp_path / "ids.txt")]
    base += ["--cache-root", str(tmp_path / "cache")]
    cli = CliRunner()
    assert cli.invoke(app, [*base, "--npy", str(tmp_path / "x.npy")]).exit_code == 0
    d = cache_dir(tmp_path / "cache", "ds", "E", "train")
    _as_old_layout(d)
    again = cli.invoke(app, [*base, "--npy", str(tmp_path / "x.npy")])
    assert again.exit_code == 0 and "already imported" in again.output, again.output
    np.save(tmp_path / "y.npy", x * 2)
    refused = cli.invoke(app, [*base, "--npy", str(tmp_path / "y.npy")])
    assert refused.exit_code == 2 and "fingerprint" in refused.output  # the old manifest was read, not missed
    assert cli.invoke(app, [*base, "--npy", str(tmp_path / "y.npy"), "--overwrite"]).exit_code == 0
    assert _visible(d) == ["part-00000.parquet"] and (d / MANIFEST).is_file()
    np.testing.assert_array_equal(pq.read_table(d).column("id").to_pylist(), [str(i) for i in range(6)])
