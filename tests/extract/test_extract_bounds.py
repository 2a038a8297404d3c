"""`extract`: every setting that sizes processes, memory or output is bounded before any work starts, and a full
disk names the file that could not be written."""

from __future__ import annotations

import contextlib
import resource
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pcmpipe.cli import app

ENV = {"COLUMNS": "400", "TERM": "dumb", "NO_COLOR": "1"}
TINY = ["--image-backbone", "clip-tiny-image", "--weights-image", "random:0"]
TINY += ["--text-backbone", "clip-tiny-text", "--weights-text", "random:0", "--device", "cpu"]


def one_line(res, *fragments: str) -> str:
    assert res.exit_code == 2, (res.output, res.exception)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.output
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def flickr(synth_dataset) -> Path:
    return synth_dataset("flickr8k", images=6)


@pytest.fixture(scope="module")
def cub(synth_dataset) -> Path:
    return synth_dataset("cub", images=1, seed=2)


@pytest.mark.parametrize(
    "flags, fragments",
    [
        (["--workers", "100000"], ["--workers must be between 0 and", "4 per CPU core; this machine has"]),
        (["--workers", "-1"], ["--workers must be between 0 and"]),
        (["--views", "1000000000"], ["--views must be between 0 and 1000", "each is a copy of the features"]),
        (["--views", "-1"], ["--views must be between 0 and 1000"]),
        (["--batch-size", "0"], ["--batch-size must be between 1 and 65536"]),
        (["--batch-size", "1000000"], ["--batch-size must be between 1 and 65536", "39 GB of input"]),
        (["--rows-per-shard", "0"], ["--rows-per-shard must be between 1 and 1048576"]),
        (["--rows-per-shard", "100000000"], ["--rows-per-shard must be between 1 and 1048576", "held in memory"]),
        (["--limit", "0"], ["--limit must be > 0"]),
        (["--lock-timeout", "nan"], ["--lock-timeout must be a finite number"]),
        (["--lock-timeout", "inf"], ["--lock-timeout must be a finite number"]),
        (["--lock-timeout", "-1"], ["--lock-timeout must be >= 0"]),
    ],
)
def test_a_setting_out_of_bounds_is_one_line_before_the_dataset_is_opened(tmp_path, flags, fragments):
    # the dataset root does not exist: the bound must be what stops the command, before anything is read
    args = ["extract", "--dataset", "flickr8k", "--root", tmp_path / "nowhere", "--cache-root", tmp_path / "c"]
    one_line(CliRunner().invoke(app, [str(a) for a in [*args, *TINY, *flags]], env=ENV), *fragments)
    assert not (tmp_path / "c").exists()


def test_views_beyond_this_machines_memory_are_refused_before_any_split(flickr, tmp_path):
    """900 views of every image at a million rows a shard: the rows a shard holds alone are ~115 GB of float32.
    The message names the backbone, what takes the memory, and the machine's memory."""
    args = ["extract", "--dataset", "flickr8k", "--root", flickr, "--modalities", "T,I", "--split", "val,train"]
    args += ["--cache-root", tmp_path / "c", "--views", "900", "--rows-per-shard", "1000000", *TINY]
    line = one_line(CliRunner().invoke(app, [str(a) for a in args], env=ENV), "--views: clip-tiny-text")
    assert "1,000,000 rows a shard x 901 views" in line and "of this machine's" in line and "GiB of memory" in line
    assert not (tmp_path / "c" / "flickr8k").exists()  # not even the val split (no views) was written first


@contextlib.contextmanager
def file_size_limit(limit: int):
    """A real write limit on this process (RLIMIT_FSIZE; Python ignores SIGXFSZ, so a write past it fails with
    EFBIG, which the CLI guard treats as a full disk). Restored after the block."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


@pytest.mark.parametrize(
    "rows_per_shard, named",
    [("64", "part-00000.parquet"), ("1", ".manifest.json")],
    ids=["a shard", "the manifest"],
)
def test_a_full_disk_under_extract_names_the_file_being_written(cub, tmp_path, rows_per_shard, named):
    """CUB's attribute vectors (no backbone): 64 rows of 312 floats make a shard past the 8 KB limit; one row a
    shard keeps every shard under it until the manifest, which lists every shard, grows past it."""
    cache = tmp_path / "c"
    args = ["extract", "--dataset", "cub", "--root", cub, "--modalities", "A", "--split", "train"]
    args += ["--cache-root", cache, "--rows-per-shard", rows_per_shard, "--device", "cpu"]
    with file_size_limit(8000):
        res = CliRunner().invoke(app, [str(a) for a in args], env=ENV)
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]  # the progress bar's line aside
    assert len(errors) == 1 and "file too large" in errors[0] and "MB free there" in errors[0], res.stderr
    assert errors[0].startswith(f"error: {cache / 'cub' / 'A' / 'train' / named}: "), errors[0]
