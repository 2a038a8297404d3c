"""`pcmpipe import-features` and `pcmpipe cache-info` through the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pcmpipe.cache import open_cache
from pcmpipe.cache.layout import is_cache_file, manifest_in
from pcmpipe.cache.lock import lock_file
from pcmpipe.cli import app

runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def leftovers(root: Path) -> list[str]:
    """Anything an import left behind: hidden temp directories or half caches (not a cache's own hidden files,
    nor the split's lock file, which stays on purpose: see pcmpipe/cache/lock.py)."""
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.name.startswith(".") and not is_cache_file(p.name) and p != lock_file(p.parent / p.name[1:-5])
    )


@pytest.fixture
def inputs(tmp_path):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((12, 10)) * 5).astype(np.float32)
    ids = [str(100 + i) for i in range(12)]
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    (tmp_path / "ids.tsv").write_text("image_id\tclass_id\n" + "".join(f"{i}\t{int(i) % 4}\n" for i in ids))
    return tmp_path, x, ids


def test_npy_with_plain_ids(inputs):
    d, x, ids = inputs
    res = cli(
        "import-features",
        "MYEMB",
        "--dataset",
        "flickr8k",
        "--split",
        "train",
        "--npy",
        d / "x.npy",
        "--ids",
        d / "ids.txt",
        "--cache-root",
        d / "cache",
    )
    assert res.exit_code == 0, res.output
    assert "wrote 12 rows" in res.output
    reader = open_cache(d / "cache" / "flickr8k" / "MYEMB" / "train")
    cols, feats = reader.read()
    assert reader.key == "image_id" and reader.meta["source"] == "import-features"
    assert cols["id"].tolist() == ids and cols["image_id"].tolist() == ids
    np.testing.assert_array_equal(feats["features"], x)  # exact, not normalised
    # same input again: a skip; the shard stays byte for byte
    shard = next((d / "cache" / "flickr8k" / "MYEMB" / "train").glob("*.parquet"))
    before = shard.read_bytes()
    res = cli(
        "import-features",
        "MYEMB",
        "--dataset",
        "flickr8k",
        "--split",
        "train",
        "--npy",
        d / "x.npy",
        "--ids",
        d / "ids.txt",
        "--cache-root",
        d / "cache",
    )
    assert res.exit_code == 0 and "already imported" in res.output and shard.read_bytes() == before


def test_tsv_links_hdf5_and_float16(inputs):
    d, x, ids = inputs
    np.save(d / "h.npy", x.astype(np.float16))
    res = cli(
        "import-features",
        "ATTR",
        "--dataset",
        "cub",
        "--split",
        "val",
        "--npy",
        d / "h.npy",
        "--ids",
        d / "ids.tsv",
        "--id-column",
        "image_id",
        "--links",
        "class_id",
        "--format",
        "hdf5",
        "--cache-root",
        d / "cache",
    )
    assert res.exit_code == 0, res.output
    reader = open_cache(d / "cache" / "cub" / "ATTR" / "val")
    cols, feats = reader.read()
    assert reader.fmt == "hdf5" and reader.links == ["class_id"]
    assert cols["class_id"].tolist() == [str(int(i) % 4) for i in ids]
    assert feats["features"].dtype == np.float16
    np.testing.assert_array_equal(feats["features"], x.astype(np.float16))


def test_int_vectors_become_float32_and_multi_dim_shape(inputs):
    d, _, ids = inputs
    a = np.arange(12 * 3 * 4).reshape(12, 3, 4)
    np.save(d / "a.npy", a)
    res = cli(
        "import-features",
        "A2",
        "--dataset",
        "cub",
        "--split",
        "train",
        "--npy",
        d / "a.npy",
        "--ids",
        d / "ids.txt",
        "--cache-root",
        d / "cache",
    )
    assert res.exit_code == 0, res.output
    _, feats = open_cache(d / "cache" / "cub" / "A2" / "train").read()
    assert feats["features"].dtype == np.float32 and feats["features"].shape == (12, 3, 4)
    np.testing.assert_array_equal(feats["features"], a.astype(np.float32))


@pytest.mark.parametrize("fixed", [True, False])
def test_parquet_input(inputs, fixed):
    d, x, ids = inputs
    vec = (
        pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 10)
        if fixed
        else pa.array([row.tolist() for row in x], pa.list_(pa.float64()))
    )
    table = pa.table({"cls": pa.array([int(i) % 4 for i in ids]), "image": pa.array([int(i) for i in ids]), "emb": vec})
    pq.write_table(table, d / "t.parquet")
    res = cli(
        "import-features",
        "C",
        "--dataset",
        "cub",
        "--split",
        "test",
        "--parquet",
        d / "t.parquet",
        "--id-column",
        "image",
        "--vector-column",
        "emb",
        "--links",
        "cls",
        "--cache-root",
        d / "cache",
    )
    assert res.exit_code == 0, res.output
    cols, feats = open_cache(d / "cache" / "cub" / "C" / "test").read()
    assert cols["id"].tolist() == ids and cols["cls"].tolist() == [str(int(i) % 4) for i in ids]
    assert feats["features"].dtype == (np.float32 if fixed else np.float64)
    np.testing.assert_array_equal(feats["features"], x)


def test_overwrite_replaces_whole_cache(inputs):
    d, x, ids = inputs
    base = [
        "import-features",
        "E",
        "--dataset",
        "ds",
        "--split",
        "train",
        "--ids",
        d / "ids.txt",
        "--cache-root",
        d / "cache",
    ]
    assert cli(*base, "--npy", d / "x.npy").exit_code == 0
    np.save(d / "y.npy", x * 2)
    res = cli(*base, "--npy", d / "y.npy")
    assert res.exit_code == 2 and "--overwrite" in res.output
    res = cli(*base, "--npy", d / "y.npy", "--overwrite")
    assert res.exit_code == 0, res.output
    _, feats = open_cache(d / "cache" / "ds" / "E" / "train").read()
    np.testing.assert_array_equal(feats["features"], x * 2)
    assert leftovers(d / "cache") == []


def _bad_inputs(d: Path) -> dict[str, tuple[list, str]]:
    rng = np.random.default_rng(0)
    good = rng.standard_normal((12, 10)).astype(np.float32)
    nan, inf = good.copy(), good.copy()
    nan[5, 2], inf[7, 0] = np.nan, np.inf
    np.save(d / "nan.npy", nan)
    np.save(d / "inf.npy", inf)
    np.save(d / "short.npy", good[:11])
    np.save(d / "flat.npy", good[:, 0])
    np.save(d / "obj.npy", good.astype(np.complex64))
    (d / "dup.txt").write_text("\n".join(["1", "2", "3", "4", "5", "2", "7", "8", "9", "10", "11", "12"]) + "\n")
    (d / "notnpy.npy").write_text("hello")
    ragged = pa.table({"id": [str(i) for i in range(3)], "v": pa.array([[1.0, 2.0], [1.0, 2.0], [3.0]])})
    pq.write_table(ragged, d / "ragged.parquet")
    npy = ["--npy", d / "x.npy", "--ids", d / "ids.txt"]
    return {
        "length mismatch": (["--npy", d / "short.npy", "--ids", d / "ids.txt"], "lists 12 ids but"),
        "nan": (["--npy", d / "nan.npy", "--ids", d / "ids.txt"], "row 5 (id '105') has NaN or infinite"),
        "inf": (["--npy", d / "inf.npy", "--ids", d / "ids.txt"], "row 7 (id '107') has NaN or infinite"),
        "duplicate ids": (["--npy", d / "x.npy", "--ids", d / "dup.txt"], "id '2' appears twice (rows 1 and 5)"),
        "missing npy": (["--npy", d / "absent.npy", "--ids", d / "ids.txt"], "does not exist"),
        "missing ids": (["--npy", d / "x.npy", "--ids", d / "absent.txt"], "does not exist"),
        "1-d array": (["--npy", d / "flat.npy", "--ids", d / "ids.txt"], "expected [N, D]"),
        "complex": (["--npy", d / "obj.npy", "--ids", d / "ids.txt"], "expected a numeric array"),
        "not npy": (["--npy", d / "notnpy.npy", "--ids", d / "ids.txt"], "not a readable .npy"),
        "ragged parquet": (["--parquet", d / "ragged.parquet", "--vector-column", "v"], "row 2 has 1 values"),
        "missing column": (["--parquet", d / "ragged.parquet", "--vector-column", "w"], "has no column 'w'"),
        "missing link": (
            ["--links", "species", "--npy", d / "x.npy", "--ids", d / "ids.tsv"],
            "no link column 'species'",
        ),
        "links need a header": (["--links", "class_id", *npy], "has no column 'id' (header: 100)"),
        "no input": ([], "give exactly one input"),
        "two inputs": ([*npy, "--parquet", d / "ragged.parquet"], "give exactly one input"),
        "npy without ids": (["--npy", d / "x.npy"], "--npy needs --ids"),
        "bad format": ([*npy, "--format", "csv"], "unknown --format 'csv'"),
        "bad key": ([*npy, "--key", "a/b"], "is not a valid name"),
    }


def test_bad_inputs_exit_2_one_line_nothing_written(inputs):
    d, _, _ = inputs
    for case, (args, message) in _bad_inputs(d).items():
        res = cli("import-features", "BAD", "--dataset", "ds", "--split", "train", "--cache-root", d / "cache", *args)
        assert res.exit_code == 2, (case, res.output)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (case, res.stderr)
        assert "Traceback" not in res.output
        assert not (d / "cache" / "ds" / "BAD" / "train").exists(), case
        assert not (d / "cache").exists() or leftovers(d / "cache") == [], case
    res = cli(
        "import-features",
        "a b",
        "--dataset",
        "ds",
        "--split",
        "train",
        "--npy",
        d / "x.npy",
        "--ids",
        d / "ids.txt",
        "--cache-root",
        d / "cache",
    )
    assert res.exit_code == 2 and "modality name 'a b' is not a valid name" in res.stderr
    # "." would split the heads' state-dict keys, so it is refused for modality names (not for datasets)
    res = cli(
        "import-features",
        "my.emb",
        "--dataset",
        "ds",
        "--split",
        "train",
        "--npy",
        d / "x.npy",
        "--ids",
        d / "ids.txt",
        "--cache-root",
        d / "cache",
    )
    assert res.exit_code == 2 and "modality name 'my.emb' is not a valid name" in res.stderr


def test_real_process_error_is_one_line(inputs):
    d, _, _ = inputs
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pcmpipe",
            "import-features",
            "X",
            "--dataset",
            "ds",
            "--split",
            "train",
            "--npy",
            str(d / "x.npy"),
            "--ids",
            str(d / "absent.txt"),
            "--cache-root",
            str(d / "cache"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "--ids file" in proc.stderr and "Traceback" not in proc.stderr


def test_cache_info_table(inputs):
    d, _, _ = inputs
    assert (
        cli(
            "import-features",
            "MYEMB",
            "--dataset",
            "flickr8k",
            "--split",
            "test",
            "--npy",
            d / "x.npy",
            "--ids",
            d / "ids.txt",
            "--cache-root",
            d / "cache",
        ).exit_code
        == 0
    )
    res = cli("cache-info", d / "cache")
    assert res.exit_code == 0, res.output
    row = next(line for line in res.stdout.splitlines() if "MYEMB" in line)
    assert "flickr8k" in row and "test" in row and "12" in row and "[10] float32" in row and "yes" in row
    fp = open_cache(d / "cache" / "flickr8k" / "MYEMB" / "test").fingerprint
    assert fp[:12] in row
    res = cli("cache-info", d / "nowhere")
    assert res.exit_code == 2 and "does not exist" in res.stderr


def test_temp_dir_of_killed_import_is_removed(inputs):
    d, _, _ = inputs
    parent = d / "cache" / "ds" / "K"
    parent.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = parent / f".train.import-{dead.pid}-abc"
    live = parent / f".train.import-{os.getpid()}-def"  # this process: still running
    for t in (stale, live):
        t.mkdir()
        (t / "part-00000.parquet").write_bytes(b"half")
    res = cli(
        "import-features",
        "K",
        "--dataset",
        "ds",
        "--split",
        "train",
        "--npy",
        d / "x.npy",
        "--ids",
        d / "ids.txt",
        "--cache-root",
        d / "cache",
    )
    assert res.exit_code == 0, res.output
    assert not stale.exists() and live.exists()


def _import(d: Path, npy: str, *extra: str):
    """Import d/npy with d/ids.txt as modality E of ds/train under d/cache."""
    where = ["--ids", d / "ids.txt", "--cache-root", d / "cache"]
    return cli("import-features", "E", "--dataset", "ds", "--split", "train", "--npy", d / npy, *where, *extra)


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_overwrite_never_leaves_the_modality_missing(inputs, monkeypatch, exchange):
    import shutil

    from pcmpipe import folderswap

    d, x, _ = inputs
    assert _import(d, "x.npy").exit_code == 0
    np.save(d / "y.npy", x * 2)
    target = d / "cache" / "ds" / "E" / "train"
    seen: list[bool] = []  # whether the target held a cache at each rename or removal of the swap
    real_replace, real_rmtree = os.replace, shutil.rmtree

    def replace(src, dest, *a, **k):
        seen.append(manifest_in(target).is_file())
        return real_replace(src, dest, *a, **k)

    def rmtree(path, *a, **k):
        seen.append(manifest_in(target).is_file())
        return real_rmtree(path, *a, **k)

    if not exchange:
        monkeypatch.setattr(folderswap, "exchange", lambda a, b: False)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(shutil, "rmtree", rmtree)
    res = _import(d, "y.npy", "--overwrite")
    monkeypatch.undo()
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(open_cache(target).read()[1]["features"], x * 2)
    assert leftovers(d / "cache") == []
    if exchange:  # one atomic step: a kill at any point finds either cache at the target
        assert seen and all(seen), seen


def test_a_swap_killed_between_its_renames_is_rolled_back_or_finished(inputs):
    import shutil

    d, x, _ = inputs
    assert _import(d, "x.npy").exit_code == 0
    target = d / "cache" / "ds" / "E" / "train"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    # killed after moving the old cache aside, before the new one came in: the next run puts the old one back
    aside = target.parent / f".train.old-{dead.pid}-abc"
    os.replace(target, aside)
    res = _import(d, "x.npy")
    assert res.exit_code == 0 and "already imported" in res.output, res.output
    np.testing.assert_array_equal(open_cache(target).read()[1]["features"], x)
    assert leftovers(d / "cache") == []
    # killed after the new cache came in, before the old one was deleted: the next run deletes it
    shutil.copytree(target, aside)
    assert _import(d, "x.npy").exit_code == 0
    assert leftovers(d / "cache") == [] and open_cache(target).num_rows == 12


@pytest.mark.parametrize("new_in", [False, True], ids=["killed-before-the-new-cache", "killed-after-it"])
def test_a_swap_the_earlier_importer_left_half_done_is_finished(inputs, new_in):
    """import-features before pcmpipe.folderswap set the old cache aside one level down: it made
    `.<split>.old-<pid>-<random>/` (mkdtemp, mode 0700), renamed the split to `cache` inside it, renamed the new
    cache in, and removed the aside. Killed between the renames, the old cache goes back as the split itself
    (never as a `cache` subfolder of it); killed after, the old one is removed."""
    d, x, _ = inputs
    target = d / "cache" / "ds" / "E" / "train"
    np.save(d / "y.npy", x * 2)
    assert _import(d, "y.npy").exit_code == 0  # the cache being replaced
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    aside = target.parent / f".train.old-{dead.pid}-k3x9_q"
    aside.mkdir(mode=0o700)
    os.replace(target, aside / "cache")  # the earlier swap's first rename
    if new_in:  # and its second: the new cache, written beside the split, renamed in
        beside = ["--npy", d / "x.npy", "--ids", d / "ids.txt", "--cache-root", d / "beside"]
        assert cli("import-features", "E", "--dataset", "ds", "--split", "train", *beside).exit_code == 0
        os.replace(d / "beside" / "ds" / "E" / "train", target)
    res = _import(d, "x.npy" if new_in else "y.npy")
    want = x if new_in else x * 2
    assert res.exit_code == 0 and "already imported" in res.output, res.output
    np.testing.assert_array_equal(open_cache(target).read()[1]["features"], want)
    assert not (target / "cache").exists() and leftovers(d / "cache") == []
