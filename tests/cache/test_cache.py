"""Cache format: round trips, generic readers, atomic resume after SIGKILL, corruption, fingerprints."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from pcmpipe.cache import ShardWriter, cache_dir, list_caches, merge_manifests, open_cache
from pcmpipe.cache.layout import is_cache_file, manifest_in, rank_manifests
from pcmpipe.checksums import file_sha256
from pcmpipe.errors import UserError

FEATURES = {"hubert": ((13, 768), "float32"), "vec": ((6,), "float16")}
META = {"backbone": "tiny", "weights_sha256": "ab" * 32, "dataset": "synth", "split": "train"}


def make_rows(n: int, seed: int = 0, start: int = 0):
    rng = np.random.default_rng(seed)
    ids = [f"img{i // 5}#{i % 5}" for i in range(start, start + n)]
    links = {"image_id": [i.split("#")[0] for i in ids], "class_id": [str((start + k) % 7) for k in range(n)]}
    # unnormalised, large-ish values: the cache must keep them exactly as given
    feats = {
        "hubert": (rng.standard_normal((n, 13, 768)) * 30).astype(np.float32),
        "vec": rng.standard_normal((n, 6)).astype(np.float16),
    }
    return ids, links, feats


def write_cache(directory, n=230, fmt="parquet", rows_per_shard=64, batch=37, meta=META, **kw):
    ids, links, feats = make_rows(n)
    with ShardWriter(
        directory,
        features=FEATURES,
        key="caption_id",
        links=["image_id", "class_id"],
        meta=meta,
        fmt=fmt,
        rows_per_shard=rows_per_shard,
        **kw,
    ) as w:
        for s in range(0, n, batch):
            w.add(
                ids[s : s + batch],
                {k: v[s : s + batch] for k, v in links.items()},
                {k: v[s : s + batch] for k, v in feats.items()},
            )
    return ids, links, feats


@pytest.mark.parametrize("fmt", ["parquet", "hdf5"])
def test_round_trip(tmp_path, fmt):
    ids, links, feats = write_cache(tmp_path / "c", fmt=fmt)
    reader = open_cache(tmp_path / "c")
    assert reader.num_rows == 230 and reader.key == "caption_id" and reader.links == ["image_id", "class_id"]
    assert [s["rows"] for s in reader.manifest["shards"]] == [64, 64, 64, 38]
    ext = ".parquet" if fmt == "parquet" else ".h5"
    assert [s["file"] for s in reader.manifest["shards"]] == [f"part-0000{i}{ext}" for i in range(4)]
    cols, out = reader.read()
    assert cols["id"].tolist() == ids and cols["caption_id"].tolist() == ids
    assert cols["image_id"].tolist() == links["image_id"] and cols["class_id"].tolist() == links["class_id"]
    assert out["hubert"].dtype == np.float32 and out["vec"].dtype == np.float16
    np.testing.assert_array_equal(out["hubert"], feats["hubert"])
    np.testing.assert_array_equal(out["vec"], feats["vec"])
    _, only = reader.read(["vec"])
    assert list(only) == ["vec"]
    batches = list(reader.iter_batches(100, ["hubert"]))
    assert [len(c["id"]) for c, _ in batches] == [100, 100, 30]
    np.testing.assert_array_equal(np.concatenate([f["hubert"] for _, f in batches]), feats["hubert"])
    assert [i for c, _ in batches for i in c["id"].tolist()] == ids
    with pytest.raises(UserError, match="no feature 'nope'"):
        reader.read(["nope"])
    # streaming: one reused float32 buffer, chunks crossing shard ends, ids without any feature decoded
    chunks = [c.copy() for c in reader.iter_feature("hubert", 50)]
    assert [len(c) for c in chunks] == [50, 14, 50, 14, 50, 14, 38]  # at most 50 rows, never across a shard
    np.testing.assert_array_equal(np.concatenate(chunks), feats["hubert"])
    vec = np.concatenate([c.copy() for c in reader.iter_feature("vec", 64)])
    assert vec.dtype == np.float32 and np.array_equal(vec, feats["vec"].astype(np.float32))
    ids_only = reader.read_into({})  # the id columns alone
    assert {k: v.tolist() for k, v in ids_only.items()} == {k: v.tolist() for k, v in cols.items()}


def test_manifest_fields_and_fingerprint(tmp_path):
    write_cache(tmp_path / "c", n=10, expected_rows=10)
    m = json.loads(manifest_in(tmp_path / "c").read_text())
    assert m["format_version"] == 1 and m["complete"] is True and m["num_rows"] == 10
    assert m["features"] == {
        "hubert": {"shape": [13, 768], "dtype": "float32"},
        "vec": {"shape": [6], "dtype": "float16"},
    }
    assert m["key"] == "caption_id" and m["links"] == ["image_id", "class_id"] and m["meta"] == META
    assert m["shards"][0]["sha256"] == file_sha256(tmp_path / "c" / m["shards"][0]["file"])
    import hashlib

    canon = json.dumps(
        {k: m[k] for k in ("meta", "features", "key", "links", "format")}, sort_keys=True, separators=(",", ":")
    )
    assert m["fingerprint"] == hashlib.sha256(canon.encode()).hexdigest()


def test_generic_parquet_readers(tmp_path, monkeypatch):
    """The shards are plain Parquet: pyarrow.dataset, Hugging Face datasets and DuckDB read them as they are."""
    import duckdb
    import pyarrow as pa
    import pyarrow.dataset as pads

    d = tmp_path / "flickr8k" / "S" / "train"
    ids, links, feats = write_cache(d, n=150)
    table = pads.dataset(d, format="parquet", exclude_invalid_files=True).to_table()
    assert table.num_rows == 150 and table.column("id").to_pylist() == ids
    field = table.schema.field("hubert")
    assert json.loads(field.metadata[b"shape"]) == [13, 768]
    # the shape is the type: a list of 13 lists of 768 values, so generic readers see it
    assert table.schema.field("hubert").type == pa.list_(pa.list_(pa.float32(), 768), 13)
    flat = table.column("hubert").combine_chunks().flatten().flatten().to_numpy()
    np.testing.assert_array_equal(flat.reshape(150, 13, 768), feats["hubert"])
    assert pads.dataset(sorted(map(str, d.glob("*.parquet"))), format="parquet").count_rows() == 150

    rows = duckdb.sql(f"SELECT id, image_id, hubert, vec FROM read_parquet('{d}/*.parquet') ORDER BY id").fetchall()
    by_id = {r[0]: r for r in rows}
    k = ids.index("img7#3")
    assert by_id["img7#3"][1] == links["image_id"][k]
    np.testing.assert_array_equal(np.asarray(by_id["img7#3"][2], dtype=np.float32), feats["hubert"][k])
    np.testing.assert_array_equal(np.asarray(by_id["img7#3"][3], dtype=np.float16), feats["vec"][k])

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    ds = datasets.load_dataset(
        "parquet", data_files=str(d / "*.parquet"), split="train", cache_dir=str(tmp_path / "hf")
    )
    assert ds.num_rows == 150 and ds.column_names == ["id", "caption_id", "image_id", "class_id", "hubert", "vec"]
    ds = ds.with_format("numpy")
    np.testing.assert_array_equal(ds[k]["vec"], feats["vec"][k])
    np.testing.assert_array_equal(np.stack(ds[k]["hubert"]), feats["hubert"][k])


def test_hdf5_readable_with_h5py(tmp_path):
    import h5py

    ids, links, feats = write_cache(tmp_path / "c", n=70, fmt="hdf5")
    with h5py.File(tmp_path / "c" / "part-00000.h5", "r") as h:
        assert h["hubert"].shape == (64, 13, 768) and h["hubert"].chunks is None  # contiguous: mmap-able
        assert h["id"].asstr()[:].tolist() == ids[:64]
        assert h["class_id"].asstr()[:].tolist() == links["class_id"][:64]
        np.testing.assert_array_equal(h["vec"][:], feats["vec"][:64])


@pytest.mark.parametrize("fmt", ["parquet", "hdf5"])
def test_empty_cache(tmp_path, fmt):
    with ShardWriter(tmp_path / "c", features=FEATURES, key="image_id", links=[], meta={}, fmt=fmt):
        pass
    cols, feats = open_cache(tmp_path / "c").read()
    assert cols["id"].shape == (0,) and feats["hubert"].shape == (0, 13, 768)


def test_incomplete_cache_refused(tmp_path):
    ids, links, feats = make_rows(100)
    w = ShardWriter(
        tmp_path / "c",
        features=FEATURES,
        key="caption_id",
        links=["image_id", "class_id"],
        meta=META,
        rows_per_shard=40,
        expected_rows=100,
    )
    w.add(ids, links, feats)  # two shards finished, 20 rows buffered, never closed
    with pytest.raises(UserError, match=r"is incomplete \(80 of 100 rows\); rerun the extraction to resume"):
        open_cache(tmp_path / "c")
    with pytest.raises(UserError, match="no cache at"):
        open_cache(tmp_path / "absent")


@pytest.mark.parametrize("fmt", ["parquet", "hdf5"])
@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_corrupt_shard_named(tmp_path, fmt, damage):
    write_cache(tmp_path / "c", n=200, fmt=fmt)
    victim = tmp_path / "c" / ("part-00002" + (".parquet" if fmt == "parquet" else ".h5"))
    data = bytearray(victim.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
        victim.write_bytes(bytes(data))
    elif damage == "truncate":
        victim.write_bytes(bytes(data[: len(data) // 2]))
    else:
        victim.unlink()
    with pytest.raises(UserError, match=rf"shard {victim.name} of cache .* is (corrupt|missing)"):
        open_cache(tmp_path / "c")


def test_fingerprint_mismatch_refused(tmp_path):
    write_cache(tmp_path / "c", n=20)
    old = json.loads(manifest_in(tmp_path / "c").read_text())["fingerprint"]
    other = dict(META, weights_sha256="cd" * 32)
    with pytest.raises(UserError) as err:
        ShardWriter(tmp_path / "c", features=FEATURES, key="caption_id", links=["image_id", "class_id"], meta=other)
    msg = str(err.value)
    assert old[:12] in msg and "meta.weights_sha256" in msg and "\n" not in msg
    with pytest.raises(UserError, match="differs in format"):
        ShardWriter(
            tmp_path / "c", features=FEATURES, key="caption_id", links=["image_id", "class_id"], meta=META, fmt="hdf5"
        )


def test_complete_cache_is_a_skip(tmp_path):
    ids, _, _ = write_cache(tmp_path / "c", n=100)
    before = {p.name: (p.stat().st_mtime_ns, file_sha256(p)) for p in (tmp_path / "c").iterdir()}
    w = ShardWriter(tmp_path / "c", features=FEATURES, key="caption_id", links=["image_id", "class_id"], meta=META)
    assert w.complete and w.done_ids == set(ids)
    with pytest.raises(RuntimeError):
        w.add(*make_rows(1, start=500))
    w.close()
    after = {p.name: (p.stat().st_mtime_ns, file_sha256(p)) for p in (tmp_path / "c").iterdir()}
    assert after == before


def test_buffered_rows_are_copies(tmp_path):
    """A caller reusing one batch buffer must not change rows already handed to the writer."""
    buf = np.zeros((4, 6), dtype=np.float16)
    with ShardWriter(
        tmp_path / "c", features={"vec": ((6,), "float16")}, key="image_id", links=[], meta={}, rows_per_shard=8
    ) as w:
        for b in range(3):
            buf[:] = b
            w.add([f"{b}-{k}" for k in range(4)], {}, {"vec": buf})
    _, feats = open_cache(tmp_path / "c").read()
    np.testing.assert_array_equal(feats["vec"][:, 0], np.repeat([0, 1, 2], 4).astype(np.float16))


def test_bad_rows_rejected(tmp_path):
    w = ShardWriter(
        tmp_path / "c",
        features=FEATURES,
        key="caption_id",
        links=["image_id", "class_id"],
        meta=META,
        rows_per_shard=10,
    )
    ids, links, feats = make_rows(12)
    w.add(ids, links, feats)  # one shard finished, 2 buffered
    for dup_ids in (["a", "a"], [ids[0], "b"], [ids[11], "b"]):  # in batch, in a finished shard, buffered
        d_ids, d_links, d_feats = make_rows(2, start=100)
        with pytest.raises(UserError, match="appears twice"):
            w.add(dup_ids, d_links, d_feats)
    n_ids, n_links, n_feats = make_rows(3, start=200)
    n_feats["hubert"][1, 4, 5] = np.nan
    with pytest.raises(UserError, match=f"id '{n_ids[1]}' is NaN or infinite"):
        w.add(n_ids, n_links, n_feats)
    n_feats["hubert"][1, 4, 5] = 0.0
    n_feats["vec"] = np.full((3, 6), 1e6, dtype=np.float32)  # overflows float16
    with pytest.raises(UserError, match="NaN or infinite"):
        w.add(n_ids, n_links, n_feats)
    with pytest.raises(ValueError, match="shape"):
        w.add(n_ids, n_links, {"hubert": np.zeros((3, 768), np.float32), "vec": np.zeros((3, 6))})
    with pytest.raises(ValueError, match="link columns"):
        w.add(n_ids, {"image_id": ["1"] * 3}, make_rows(3)[2])
    w.close()
    assert open_cache(tmp_path / "c").num_rows == 12


def test_resume_adopts_orphan_and_cleans_temp(tmp_path):
    d = tmp_path / "c"
    ids, links, feats = write_cache(d, n=200, rows_per_shard=50)
    manifest = json.loads(manifest_in(d).read_text())
    # state of a writer killed after renaming shard 3 but before recording it, while writing shard 4
    manifest["shards"] = manifest["shards"][:3]
    manifest["complete"] = False
    manifest_in(d).write_text(json.dumps(manifest))
    (d / ".part-00004.parquet.tmp").write_bytes(b"half a shard")
    (d / "part-00005.parquet").write_bytes(b"garbage renamed into place")
    w = ShardWriter(
        d, features=FEATURES, key="caption_id", links=["image_id", "class_id"], meta=META, rows_per_shard=50
    )
    assert not w.complete and w.done_ids == set(ids)  # shard 3 adopted
    assert not (d / ".part-00004.parquet.tmp").exists() and not (d / "part-00005.parquet").exists()
    w.close()
    cols, out = open_cache(d).read()
    assert cols["id"].tolist() == ids
    np.testing.assert_array_equal(out["vec"], feats["vec"])


CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from test_cache import FEATURES, META, make_rows
    from pcmpipe.cache import ShardWriter
    ids, links, feats = make_rows({n})
    with ShardWriter({d!r}, features=FEATURES, key="caption_id", links=["image_id", "class_id"], meta=META,
                     rows_per_shard=20, fmt={fmt!r}) as w:
        todo = [k for k, i in enumerate(ids) if i not in w.done_ids]
        for s in range(0, len(todo), 7):
            rows = todo[s:s + 7]
            w.add([ids[k] for k in rows], {{c: [v[k] for k in rows] for c, v in links.items()}},
                  {{f: v[rows] for f, v in feats.items()}})
            time.sleep(0.002)
""")


@pytest.mark.slow  # a writer process SIGKILLed mid-run, per format
@pytest.mark.parametrize("fmt", ["parquet", "hdf5"])
def test_sigkill_then_resume(tmp_path, fmt):
    """A writer SIGKILLed mid-run loses at most the shard in flight; finished shards keep their bytes."""
    d = tmp_path / "c"
    n = 400
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(root=str(Path(__file__).resolve().parent), n=n, d=str(d), fmt=fmt))
    finished: dict[str, str] = {}
    for kill_after_shards in (3, 9):
        proc = subprocess.Popen([sys.executable, str(script)])
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                shards = json.loads(manifest_in(d).read_text())["shards"]
            except (OSError, ValueError):
                shards = []
            if len(shards) >= kill_after_shards:
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, "child finished before it could be killed"
        for s in json.loads(manifest_in(d).read_text())["shards"]:
            digest = file_sha256(d / s["file"])
            assert finished.setdefault(s["file"], digest) == digest  # finished shards are never rewritten
            finished[s["file"]] = digest
    with pytest.raises(UserError, match="incomplete"):
        open_cache(d)
    proc = subprocess.run([sys.executable, str(script)], timeout=120)
    assert proc.returncode == 0
    reader = open_cache(d)
    cols, out = reader.read()
    ids, _, feats = make_rows(n)
    assert sorted(cols["id"].tolist()) == sorted(ids) and len(set(cols["id"].tolist())) == n
    order = np.argsort(cols["id"])
    np.testing.assert_array_equal(out["vec"][order], feats["vec"][np.argsort(np.asarray(ids))])
    for name, digest in finished.items():
        assert file_sha256(d / name) == digest
    assert not [p for p in d.iterdir() if p.name.startswith(".") and not is_cache_file(p.name)]


def test_merge_rank_manifests(tmp_path):
    import pyarrow.dataset as pads

    d = tmp_path / "c"
    ids, links, feats = make_rows(90)
    for rank, rows in ((1, range(45, 90)), (0, range(0, 45))):
        rows = list(rows)
        with ShardWriter(
            d,
            features=FEATURES,
            key="caption_id",
            links=["image_id", "class_id"],
            meta=META,
            rank=rank,
            rows_per_shard=20,
        ) as w:
            w.add(
                [ids[k] for k in rows],
                {c: [v[k] for k in rows] for c, v in links.items()},
                {f: v[rows] for f, v in feats.items()},
            )
    assert 0 in rank_manifests(d) and (d / "part-r001-00002.parquet").exists()
    with pytest.raises(UserError, match="per-rank manifests only"):
        open_cache(d)
    merged = merge_manifests(d)
    assert merged["num_rows"] == 90 and merged["shards"][0]["file"] == "part-r000-00000.parquet"
    cols, out = open_cache(d).read()
    assert cols["id"].tolist() == ids
    np.testing.assert_array_equal(out["hubert"], feats["hubert"])
    assert merge_manifests(d) == merged  # idempotent
    assert pads.dataset(d, format="parquet", exclude_invalid_files=True).count_rows() == 90
    assert ShardWriter(
        d, features=FEATURES, key="caption_id", links=["image_id", "class_id"], meta=META, rank=0
    ).complete


def test_merge_refuses_overlap_and_unfinished(tmp_path):
    d = tmp_path / "c"
    ids, links, feats = make_rows(30)
    for rank in (0, 1):  # both ranks write the same ids
        with ShardWriter(
            d, features=FEATURES, key="caption_id", links=["image_id", "class_id"], meta=META, rank=rank
        ) as w:
            w.add(ids, links, feats)
    with pytest.raises(UserError, match="appears in two ranks"):
        merge_manifests(d)
    w = ShardWriter(d / "x", features=FEATURES, key="caption_id", links=["image_id", "class_id"], meta=META, rank=2)
    w.add(ids, links, feats)
    with pytest.raises(UserError, match=r"manifest.r002.json .* is incomplete"):
        merge_manifests(d / "x")
    with pytest.raises(UserError, match="no per-rank manifests"):
        merge_manifests(tmp_path)


def test_cache_dir_and_list_caches(tmp_path):
    assert cache_dir(tmp_path, "cub", "A", "val") == tmp_path / "cub" / "A" / "val"
    write_cache(cache_dir(tmp_path, "cub", "T", "train"), n=5)
    w = ShardWriter(
        cache_dir(tmp_path, "cub", "I", "test"),
        features={"f": ((4,), "float32")},
        key="image_id",
        links=["class_id"],
        meta={},
        fmt="hdf5",
    )
    w.add(["1"], {"class_id": ["3"]}, {"f": np.ones((1, 4))})
    found = {(r["dataset"], r["modality"], r["split"]): r for r in list_caches(tmp_path)}
    assert found[("cub", "T", "train")]["complete"] and found[("cub", "T", "train")]["rows"] == 5
    assert found[("cub", "I", "test")]["complete"] is False and found[("cub", "I", "test")]["format"] == "hdf5"
    assert found[("cub", "T", "train")]["features"]["hubert"] == ((13, 768), "float32")
    with pytest.raises(UserError, match="does not exist"):
        list_caches(tmp_path / "nope")


def test_docs_snippets_run(tmp_path, monkeypatch):
    """Every Python block of docs/cache-format.md runs as written against real caches."""
    import re

    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf")
    doc = (Path(__file__).resolve().parents[2] / "docs" / "cache-format.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    assert len(blocks) >= 6
    rng = np.random.default_rng(1)
    feat = rng.standard_normal((40, 13, 768)).astype(np.float32)
    ids = [f"{i // 5}#{i % 5}" for i in range(40)]
    dirs = {}
    for fmt in ("parquet", "hdf5"):
        dirs[fmt] = tmp_path / fmt
        with ShardWriter(
            dirs[fmt],
            features={"feat": ((13, 768), "float32")},
            key="caption_id",
            links=["image_id"],
            meta=META,
            fmt=fmt,
            rows_per_shard=40,
        ) as w:
            w.add(ids, {"image_id": [i.split("#")[0] for i in ids]}, {"feat": feat})
    for block in blocks:
        fmt = "hdf5" if "h5py" in block else "parquet"
        ns = {"d": str(dirs[fmt]), "manifest": json.loads(manifest_in(dirs[fmt]).read_text())}
        exec(compile(block, "docs/cache-format.md", "exec"), ns)
        if "fingerprint" in ns:
            assert ns["fingerprint"] == ns["manifest"]["fingerprint"]
        if "feat" in ns and not isinstance(ns["feat"], dict):
            np.testing.assert_array_equal(np.asarray(ns["feat"]), feat)
        if "rows" in ns:
            assert len(ns["rows"]) == 40
        if "ds" in ns:
            np.testing.assert_array_equal(np.stack(ns["ds"][3]["feat"]), feat[3])  # the shape survives
        if "columns" in ns:
            assert ns["columns"]["id"].tolist() == ids


def test_interrupted_writer_keeps_handed_rows(tmp_path):
    """An exception inside `with` writes the buffered rows as a finished shard but leaves the cache incomplete."""
    from pcmpipe.cache import cache_fingerprint

    ids, links, feats = make_rows(30)
    kw = dict(features=FEATURES, key="caption_id", links=["image_id", "class_id"], meta=META, rows_per_shard=100)
    with pytest.raises(KeyboardInterrupt):
        with ShardWriter(tmp_path / "c", **kw) as w:
            w.add(ids, links, feats)
            raise KeyboardInterrupt
    with pytest.raises(UserError, match=r"incomplete \(30 rows so far\)"):
        open_cache(tmp_path / "c")
    w = ShardWriter(tmp_path / "c", **kw)
    assert w.done_ids == set(ids) and not w.complete
    assert w.fingerprint == cache_fingerprint(**{k: v for k, v in kw.items() if k != "rows_per_shard"})
    same = dict(kw, links=["caption_id", "image_id", "class_id"])  # the key among the links changes nothing
    del same["rows_per_shard"]
    assert cache_fingerprint(**same) == w.fingerprint
    w.close()
    assert open_cache(tmp_path / "c").read()[0]["id"].tolist() == ids


@pytest.mark.parametrize("fmt", ["parquet", "hdf5"])
def test_read_into_preallocated_exact(tmp_path, fmt):
    """read_into fills caller blocks exactly across shards, record batches and row groups, casting on request."""
    rng = np.random.default_rng(3)
    n = 2600  # one shard of 3 Parquet row groups (1,024 rows) and 11 read batches (256 rows), then a short one
    ids = [f"c{i}" for i in range(n)]
    vec = (rng.standard_normal((n, 5)) * 1e3).astype(np.float32)
    half = rng.standard_normal((n, 3)).astype(np.float16)
    with ShardWriter(
        tmp_path / "c",
        features={"vec": ((5,), "float32"), "half": ((3,), "float16")},
        key="id",
        links=[],
        meta=META,
        fmt=fmt,
        rows_per_shard=2500,
    ) as w:
        w.add(ids, {}, {"vec": vec, "half": half})
    reader = open_cache(tmp_path / "c")
    out = {"vec": np.full((n, 5), np.nan, np.float32), "half": np.full((n, 3), np.nan, np.float32)}
    cols = reader.read_into(out)
    assert cols["id"].tolist() == ids
    np.testing.assert_array_equal(out["vec"], vec)  # bit-exact, no NaN left unfilled
    np.testing.assert_array_equal(out["half"], half.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        reader.read_into({"vec": np.empty((n - 1, 5), np.float32)})


def test_layout_lists_datasets_and_modalities_and_reads_manifests(tmp_path):
    from pcmpipe.cache import cached_datasets, cached_modalities, read_manifest, runs_root
    from pcmpipe.cache.layout import manifest_path, parts_of

    write_cache(cache_dir(tmp_path, "cub", "T", "train"), n=5)
    (runs_root(tmp_path) / "some-run").mkdir(parents=True)
    (tmp_path / "cub" / ".import-tmp").mkdir()  # an unfinished import: never listed
    assert runs_root(tmp_path) == tmp_path / "runs"
    assert cached_datasets(tmp_path) == ["cub"] and cached_modalities(tmp_path, "cub") == ["T"]
    assert cached_datasets(tmp_path / "nowhere") == [] and cached_modalities(tmp_path, "flickr8k") == []
    assert read_manifest(tmp_path, "cub", "T", "train")["num_rows"] == 5
    assert read_manifest(tmp_path, "cub", "T", "val") is None
    assert parts_of(cache_dir(tmp_path, "cub", "T", "train")) == ("cub", "T", "train")
    manifest_path(tmp_path, "cub", "T", "train").write_text("{not json")
    with pytest.raises(UserError, match="cannot read cache manifest"):
        read_manifest(tmp_path, "cub", "T", "train")
