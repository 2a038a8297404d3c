"""`extract --dtype float16`: half-precision caches whose shape is in the file's own schema (nested fixed-size
lists in Parquet, the dataset shape in HDF5), readable as stored (float16) or cast as the caller asks, and
matching the float32 cache to half precision. Shards written flat (before nested lists) still read."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
from extraction import extract

from pcmpipe.cache import ShardWriter, cache_dir, open_cache
from pcmpipe.datasets.synthetic import synth
from pcmpipe.errors import UserError

TINY = {"image": "clip-tiny-image", "text": "clip-tiny-text", "audio": "hubert-tiny"}
RANDOM = {"image": "random:0", "text": "random:0", "audio": "random:0"}


@pytest.mark.parametrize("fmt", ["parquet", "hdf5"])
def test_float16_cache_keeps_shape_in_schema(fmt, tmp_path, one_thread):
    root = tmp_path / "flickr"
    synth("flickr8k", root, images=3, seed=1)
    kw = dict(modalities=["T", "S"], splits=["train"], backbones=TINY, weights=RANDOM, workers=0, device="cpu", fmt=fmt)
    extract("flickr8k", root, cache_root=tmp_path / "c32", **kw)
    extract("flickr8k", root, cache_root=tmp_path / "c16", dtype="float16", **kw)
    for m in ("T", "S"):
        full, half = (open_cache(cache_dir(tmp_path / c, "flickr8k", m, "train")) for c in ("c32", "c16"))
        assert half.dtypes["features"] == "float16" and half.fingerprint != full.fingerprint
        cols, feats = half.read()
        assert feats["features"].dtype == np.float16  # as stored
        as32 = np.empty((half.num_rows, *half.shapes["features"]), np.float32)
        half.read_into({"features": as32})  # cast as the caller asks
        ref_cols, ref = full.read()
        ref_by_id = dict(zip(ref_cols["id"], ref["features"]))
        want = np.stack([ref_by_id[i] for i in cols["id"]])
        np.testing.assert_allclose(as32, want, rtol=2e-3, atol=2e-3)
        shard = next(p for p in (tmp_path / "c16" / "flickr8k" / m / "train").iterdir() if p.name.startswith("part-"))
        shape = half.shapes["features"]
        if fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            t = pq.read_schema(shard).field("features").type
            dims = []
            while pa.types.is_fixed_size_list(t):
                dims.append(t.list_size)
                t = t.value_type
            assert tuple(dims) == shape and t == pa.float16()
        else:
            import h5py

            with h5py.File(shard) as h:
                assert h["features"].shape[1:] == shape and h["features"].dtype == np.float16
    with pytest.raises(UserError, match="unknown dtype"):
        extract("flickr8k", root, cache_root=tmp_path / "bad", dtype="int8", **kw)


def test_flat_parquet_shards_of_multi_axis_features_still_read(tmp_path, monkeypatch):
    """Shards written before nested lists stored (13, 768)-like features as one flat list per row."""
    import pyarrow as pa

    from pcmpipe.cache import shard

    monkeypatch.setattr(shard, "_list_type", lambda value, shp: pa.list_(value, int(np.prod(shp))))
    monkeypatch.setattr(shard, "_nested", lambda flat, shp: pa.FixedSizeListArray.from_arrays(flat, int(np.prod(shp))))
    feats = np.arange(5 * 3 * 4, dtype=np.float32).reshape(5, 3, 4)
    with ShardWriter(tmp_path, features={"f": ((3, 4), "float32")}, key="id", links=[], meta={}) as w:
        w.add([f"r{i}" for i in range(5)], {}, {"f": feats})
    monkeypatch.undo()
    reader = open_cache(tmp_path)
    _, got = reader.read()
    np.testing.assert_array_equal(got["f"], feats)
    (_, batch), *_ = list(reader.iter_batches(2))
    np.testing.assert_array_equal(batch["f"], feats[:2])
