"""What `import-features` refuses, and the split lock it shares with `extract` and training.

Names the cache tree reserves, symbolic links where a split belongs, crafted `shape` metadata and empty arrays are
each one line and exit code 2 with nothing written; an import waits for (or, with --lock-timeout, refuses) a split
a training reads, and a training refuses a split a writer holds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pcmpipe import tempdirs
from pcmpipe.cache import cache_dir, list_caches, open_cache
from pcmpipe.cache.layout import is_cache_file
from pcmpipe.cache.lock import exclusive, lock_file, shared
from pcmpipe.cli import app
from pcmpipe.errors import UserError

ENV = {"COLUMNS": "400", "TERM": "dumb", "NO_COLOR": "1"}


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env=ENV)


def one_line(res, fragment: str) -> str:
    assert res.exit_code == 2, (res.output, res.exception)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], res.stderr
    assert "Traceback" not in res.output
    return lines[0]


def hidden_leftovers(root: Path) -> list[str]:
    """Hidden entries that are neither a cache's own files nor a split's lock file (which stays on purpose)."""
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob(".*")
        if not is_cache_file(p.name) and not (p.name.endswith(".lock") and p == lock_file(p.with_name(p.name[1:-5])))
    )


@pytest.fixture
def inputs(tmp_path):
    x = np.arange(24, dtype=np.float32).reshape(6, 4)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "ids.txt").write_text("".join(f"{i}\n" for i in range(6)))
    return tmp_path


def imp(d: Path, *extra, name="E", dataset="ds", split="train", npy="x.npy"):
    where = ["--npy", d / npy, "--ids", d / "ids.txt", "--cache-root", d / "cache"]
    return cli("import-features", name, "--dataset", dataset, "--split", split, *where, *extra)


# ---- names the cache tree reserves ----


@pytest.mark.parametrize(
    "part, name, fragment",
    [
        ("split", ".hidden", "split '.hidden' is not a valid name (a name starting with '.' is hidden"),
        ("split", ".train.import-1-abc", "is not a valid name (a name starting with '.' is hidden"),
        ("dataset", ".ds", "dataset '.ds' is not a valid name"),
        ("dataset", "runs", "dataset 'runs' is reserved in the cache tree"),
        ("dataset", "..", "dataset '..' is not a valid name"),
        ("split", "a/b", "split 'a/b' is not a valid name"),
    ],
)
def test_names_the_cache_tree_reserves_are_one_line(inputs, part, name, fragment):
    one_line(imp(inputs, **{part: name}), fragment)
    assert not (inputs / "cache").exists() or not any((inputs / "cache").rglob("*.parquet"))
    with pytest.raises(UserError, match="not a valid name|reserved"):
        cache_dir(inputs, **{"dataset": "ds", "modality": "E", "split": "train", part: name})


def test_a_split_named_like_a_temp_folder_of_another_is_never_cleaned_up(tmp_path):
    """A split `x.old-<pid>-abc` has its import temp folder `.x.old-<pid>-abc.import-<live pid>-*`: the cleanup of
    split `x` (temp prefix `x.old`) must not take it for one of its own dead folders."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    other = tmp_path / f".x.old-{dead.pid}-abc.import-{os.getpid()}-zzzzzzzz"
    other.mkdir()
    own = tmp_path / f".x.old-{dead.pid}-abcdefgh"
    own.mkdir()
    assert tempdirs.dead(tmp_path, "x.old") == [own]


# ---- symbolic links where a split belongs ----


def test_overwrite_onto_a_linked_split_is_refused_and_leaves_both_alone(inputs):
    assert imp(inputs).exit_code == 0
    target = cache_dir(inputs / "cache", "ds", "E", "train")
    elsewhere = inputs / "elsewhere"
    shutil.move(target, elsewhere)
    target.symlink_to(elsewhere, target_is_directory=True)
    before = sorted(p.name for p in elsewhere.iterdir())
    np.save(inputs / "y.npy", np.ones((6, 4), np.float32))
    one_line(imp(inputs, "--overwrite", npy="y.npy"), "is a symbolic link (to ")
    assert target.is_symlink() and os.readlink(target) == str(elsewhere)
    assert sorted(p.name for p in elsewhere.iterdir()) == before
    assert open_cache(target).read()[1]["features"].sum() == np.arange(24).sum()
    assert hidden_leftovers(inputs / "cache") == []
    assert imp(inputs).exit_code == 0  # the same import again reads through the link: nothing to do


def test_a_link_named_like_a_dead_temp_folder_loses_only_the_link(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "data").write_text("keep me")
    link = tmp_path / f".train.import-{dead.pid}-abcdefgh"
    link.symlink_to(kept, target_is_directory=True)
    assert tempdirs.remove_dead(tmp_path, "train.import") == [link]
    assert not link.exists() and not link.is_symlink() and (kept / "data").read_text() == "keep me"


def test_extract_rebuilding_a_linked_split_is_refused(tmp_path):
    from extraction import extract

    from pcmpipe.datasets.synthetic import synth

    synth("cub", tmp_path / "cub", images=1, seed=2)
    kw = dict(modalities=["A"], splits=["test"], cache_root=tmp_path / "c", device="cpu")
    extract("cub", tmp_path / "cub", **kw)
    target = cache_dir(tmp_path / "c", "cub", "A", "test")
    shutil.move(target, tmp_path / "elsewhere")
    target.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    before = sorted(p.name for p in (tmp_path / "elsewhere").iterdir())
    with pytest.raises(UserError, match="is a symbolic link") as err:
        extract("cub", tmp_path / "cub", fmt="hdf5", overwrite=True, **kw)
    assert "\n" not in str(err.value)
    assert target.is_symlink() and sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == before


# ---- crafted or empty inputs ----


@pytest.mark.parametrize(
    "shape",
    [
        b"[2,",
        b"[-2, -5]",
        b'"abc"',
        b'["a", "b"]',
        b"10",
        b"[2.5, 4]",
        b"[true, 10]",
        b"[0, 10]",
        b"[3, 3]",
        b"[" * 100_000 + b"]" * 100_000,
        b"\xff[2, 5]",
    ],  # fmt: skip
    ids=["not-json", "negative", "string", "strings", "int", "float", "bool", "zero", "mismatch", "deep", "not-utf8"],
)
def test_bad_shape_metadata_of_a_parquet_vector_column_is_one_line(tmp_path, shape):
    vec = pa.array([[float(i)] * 10 for i in range(3)], type=pa.list_(pa.float32()))
    schema = pa.schema([pa.field("id", pa.string()), pa.field("v", vec.type, metadata={b"shape": shape})])
    pq.write_table(pa.table({"id": ["a", "b", "c"], "v": vec}, schema=schema), tmp_path / "t.parquet")
    args = ["--parquet", tmp_path / "t.parquet", "--vector-column", "v", "--cache-root", tmp_path / "c"]
    one_line(cli("import-features", "E", "--dataset", "ds", "--split", "train", *args), "'shape' metadata")
    assert not (tmp_path / "c" / "ds" / "E" / "train").exists()


def test_good_shape_metadata_keeps_the_shape(tmp_path):
    vec = pa.array([[float(i)] * 10 for i in range(3)], type=pa.list_(pa.float32()))
    schema = pa.schema([pa.field("id", pa.string()), pa.field("v", vec.type, metadata={b"shape": b"[2, 5]"})])
    pq.write_table(pa.table({"id": ["a", "b", "c"], "v": vec}, schema=schema), tmp_path / "t.parquet")
    args = ["--parquet", tmp_path / "t.parquet", "--vector-column", "v", "--cache-root", tmp_path / "c"]
    assert cli("import-features", "E", "--dataset", "ds", "--split", "train", *args).exit_code == 0
    assert open_cache(tmp_path / "c" / "ds" / "E" / "train").shapes["features"] == (2, 5)


@pytest.mark.parametrize(
    "array, ids, fragment",
    [
        (np.zeros((0, 4), np.float32), "", "has no rows"),
        (np.array([[1, "a"]], dtype=object), "a\n", "not a readable .npy array"),
        (np.zeros(3, np.float32), "a\nb\nc\n", "expected [N, D]"),
        (np.zeros((2, 0), np.float32), "a\nb\n", "expected [N, D]"),
        (np.zeros(2, dtype=[("x", "f4"), ("y", "f4")]), "a\nb\n", "expected [N, D]"),
        (np.zeros((2, 2), "M8[s]"), "a\nb\n", "expected a numeric array"),
        (np.zeros((3, 2), np.float32), "a\nb\n", "lists 2 ids but"),
    ],
    ids=["empty", "object", "1-d", "zero-width", "structured", "datetime", "ids-mismatch"],
)
def test_npy_inputs_that_cannot_be_a_cache_are_one_line(tmp_path, array, ids, fragment):
    np.save(tmp_path / "a.npy", array, allow_pickle=True)
    (tmp_path / "ids.txt").write_text(ids)
    args = ["--npy", tmp_path / "a.npy", "--ids", tmp_path / "ids.txt", "--cache-root", tmp_path / "c"]
    one_line(cli("import-features", "E", "--dataset", "ds", "--split", "train", *args), fragment)
    assert not (tmp_path / "c" / "ds" / "E" / "train").exists()


def test_hidden_split_never_imported_so_cache_info_lists_every_cache(inputs):
    """The issue's case: `.hidden` used to import with exit 0 and then be invisible to cache-info."""
    one_line(imp(inputs, split=".hidden"), "split '.hidden' is not a valid name")
    assert imp(inputs, split="train").exit_code == 0
    assert [(c["dataset"], c["modality"], c["split"]) for c in list_caches(inputs / "cache")] == [("ds", "E", "train")]


# ---- the split lock: import against a training, training against a writer ----


def test_import_refuses_a_split_a_training_reads_after_its_lock_timeout(inputs):
    assert imp(inputs).exit_code == 0
    target = cache_dir(inputs / "cache", "ds", "E", "train")
    fingerprint = open_cache(target).fingerprint
    np.save(inputs / "y.npy", np.ones((6, 4), np.float32))
    with shared(target, "cache ds/E/train"):  # what a training holds on every split it reads
        line = one_line(imp(inputs, "--overwrite", "--lock-timeout", "0.2", npy="y.npy"), "in use by another job")
        assert "cache ds/E/train" in line and "a training may be reading it" in line
        one_line(imp(inputs, "--overwrite", "--lock-timeout", "nan", npy="y.npy"), "--lock-timeout must be a finite")
    assert open_cache(target).fingerprint == fingerprint
    assert imp(inputs, "--overwrite", "--lock-timeout", "0", npy="y.npy").exit_code == 0  # released: free again
    assert open_cache(target).fingerprint != fingerprint


def test_a_training_refuses_a_split_a_writer_holds(tmp_path):
    from synthetic_cache import write_synthetic_cache

    root = tmp_path / "cache"
    write_synthetic_cache(root, "synth", images={"train": 16, "val": 8, "test": 8})
    args = ["train", "--dataset", "synth", "--modalities", "I,T", "--cache-root", root, "--epochs", "1"]
    args += ["--batch-size", "8", "--device", "cpu", "--threads", "1", "--set", "progress=false"]
    held = cache_dir(root, "synth", "T", "val")
    with exclusive(held, "cache synth/T/val", wait=False):
        line = one_line(cli(*args), "cache synth/T/val is being written by another job")
        assert f"pid {os.getpid()}" in line
    assert [p.name for p in (root / "runs").iterdir() if not p.name.endswith(".lock")] == []  # no run begun
    assert cli(*args).exit_code == 0  # released: the same training runs


def test_shared_holders_coexist_and_exclude_a_writer(tmp_path):
    split = tmp_path / "ds" / "E" / "train"
    split.mkdir(parents=True)
    with shared(split, "s") as one, shared(split, "s") as two:
        assert one == two == lock_file(split)
        with pytest.raises(UserError, match="in use by another job"), exclusive(split, "s", wait=0.1):
            pass
    with exclusive(split, "s", wait=False):
        with pytest.raises(UserError, match="being written by another job"), shared(split, "s", wait=0.1):
            pass
    with shared(tmp_path / "absent" / "x", "x") as none:  # no folder to hold a lock file: nothing to lock
        assert none is None and not (tmp_path / "absent").exists()
