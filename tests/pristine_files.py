"""One real file of every kind pcmpipe writes or reads back, each written by pcmpipe itself (for the fuzz test).

`build_pristine(trained, root)` takes tests/conftest.py's `trained` (a synthetic Flickr8k, its I/T caches
and a finished run) and lays out under root:

    cache/                 a copy of the Parquet caches and the run (cache/runs/walk: config.json, metrics.jsonl,
                           test_metrics.json, heads.safetensors, embeddings/{I,T}.{json,safetensors})
    h5/                    the T test cache again, as an HDF5 shard
    runs/.tmp-part/        checkpoint.safetensors of a run interrupted after its first epoch
    emb/, index/           `embed` of the T test cache and `pcmpipe index` of it (index.json, ids.json, index.faiss)
    export/                `pcmpipe export` of the run
    table/, shards/        dataset.yaml over a CSV, and over a webdataset tar (txt, json, npy and jpg members)
    settings/              a settings YAML (train.yaml) and the shipped table1_flickr8k pipeline (p.yaml)
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner
from user_data import caption_rows, write_csv

SETTINGS = {"dataset": "flickr8k", "modalities": "I,T", "epochs": 2, "batch_size": 8, "dim": 32, "lr": 1e-3}


def build_pristine(trained: dict, root: Path) -> None:
    import pcmpipe
    from pcmpipe.cache import ShardWriter, open_cache
    from pcmpipe.cli import app
    from pcmpipe.pipelines.spec import SPECS
    from pcmpipe.runs.embed import embed_cache_to_cache
    from pcmpipe.runs.export import export_run

    shutil.copytree(trained["cache"], root / "cache", ignore=shutil.ignore_patterns("*.lock"))
    run_dir = root / "cache" / "runs" / "walk"
    t_test = root / "cache" / "flickr8k" / "T" / "test"
    reader = open_cache(t_test)
    cols, feats = reader.read()
    spec = {n: (reader.shapes[n], reader.dtypes[n]) for n in reader.feature_names}
    with ShardWriter(root / "h5", features=spec, key=reader.key, links=reader.links, meta=reader.meta, fmt="hdf5") as w:
        w.add(list(cols["id"]), {c: list(cols[c]) for c in reader.links}, feats)
    _interrupted_run(root)
    embed_cache_to_cache(pcmpipe.load_run(run_dir), "T", t_test, root / "emb")
    res = CliRunner().invoke(app, ["index", str(root / "emb"), "--out", str(root / "index")])
    assert res.exit_code == 0, res.output
    export_run(run_dir, root / "export")
    _user_data(root)
    (root / "settings").mkdir()
    (root / "settings" / "train.yaml").write_text(yaml.safe_dump(SETTINGS))
    shutil.copy(SPECS / "table1_flickr8k.yaml", root / "settings" / "p.yaml")


def _stop(*args, **kwargs):
    raise KeyboardInterrupt


def _interrupted_run(root: Path) -> None:
    """A run stopped right after its first epoch's checkpoint (before that epoch's metrics are written)."""
    from pcmpipe.config import TrainConfig
    from pcmpipe.training.stage2 import train

    cfg = TrainConfig.from_dict(
        {**SETTINGS, "cache_root": str(root / "cache"), "runs_root": str(root / "runs"), "name": "part",
         "progress": False, "device": "cpu"}
    )  # fmt: skip
    with pytest.MonkeyPatch.context() as m, pytest.raises(KeyboardInterrupt):
        m.setattr("pcmpipe.training.state.write_metrics", _stop)
        train(cfg)
    assert (root / "runs" / ".tmp-part" / "checkpoint.safetensors").is_file()


def _user_data(root: Path) -> None:
    """A caption table (CSV) and the same samples as a webdataset shard, each with its dataset.yaml."""
    (root / "table").mkdir()
    rows = caption_rows(root / "table", n_images=4, media=False)
    write_csv(root / "table" / "captions.csv", rows)
    (root / "table" / "dataset.yaml").write_text(
        "files: captions.csv\nsplit_column: split\nmodalities:\n"
        "  I: {kind: image, column: file, id: image_id}\n  T: {kind: text, column: caption, id: caption_id}\n"
        "  A: {kind: vector, column: attrs, id: image_id}\n"
    )
    (root / "shards").mkdir()
    with tarfile.open(root / "shards" / "train-000.tar", "w", format=tarfile.GNU_FORMAT) as tar:
        for r in rows:
            key = r["caption_id"].replace("#", "_")
            ids = {"image_id": r["image_id"], "caption_id": r["caption_id"], "split": r["split"]}
            vector = io.BytesIO()
            np.save(vector, np.array([float(v) for v in r["attrs"].split()], np.float32))
            for ext, data in (("txt", r["caption"].encode()), ("json", json.dumps(ids).encode()),
                              ("npy", vector.getvalue()), ("jpg", b"\xff\xd8 not decoded while listing")):  # fmt: skip
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    (root / "shards" / "dataset.yaml").write_text(
        "files: train-000.tar\nsplit_column: split\nmodalities:\n"
        "  I: {kind: image, column: jpg, id: image_id}\n  T: {kind: text, column: txt, id: caption_id}\n"
        "  A: {kind: vector, column: npy, id: image_id}\n"
    )
