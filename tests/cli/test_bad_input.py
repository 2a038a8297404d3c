"""Careless input through the real CLI: each mistake is one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from pcmpipe.cli import app
from pcmpipe.pipelines.spec import SPECS

ENV = {"COLUMNS": "400", "TERM": "dumb", "NO_COLOR": "1"}


def one_line_error(*args, fragment: str) -> str:
    res = CliRunner().invoke(app, [str(a) for a in args], env=ENV)
    assert res.exit_code == 2, (args, res.output, res.exception)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], (args, res.stderr)
    assert "Traceback" not in res.output
    return lines[0]


def _pipeline(tmp_path: Path, **data_changes) -> Path:
    doc = yaml.safe_load((SPECS / "table1_flickr8k.yaml").read_text())
    doc["data"]["flickr8k"].update(data_changes)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


TRAIN = ["train", "--dataset", "ds", "--modalities", "I,T"]


@pytest.mark.parametrize(
    "args, fragment",
    [
        ([*TRAIN, "--threads", "100000"], "--threads must be <= "),
        ([*TRAIN, "--set", "dim=1.0e+8"], "--dim must be <= 65536"),
        (["download", "flickr8k", "--root", "{tmp}/dl", "--retries", "-1"], "--retries must be between 0 and"),
        (["download", "flickr8k", "--root", "{tmp}/dl", "--base-url", "not a url"], "is not a URL"),
        (["synth", "flickr8k", "--out", "{tmp}/s", "--images", "1000000000"], "--images for flickr8k must be <="),
    ],
)
def test_bad_values_are_one_line(tmp_path, args, fragment):
    one_line_error(*[a.format(tmp=tmp_path) for a in args], fragment=fragment)
    assert not (tmp_path / "dl").exists() and not (tmp_path / "s").exists()  # refused before anything was written


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"modalities": 5}, "data.flickr8k.modalities must list modality names"),
        ({"extract": {"batchsize": 8}}, "unknown extract option batchsize; did you mean batch_size?"),
        ({"extract": {"batch_size": "big"}}, "batch_size='big' has the wrong type"),
        ({"extract": {"workers": True}}, "workers=True has the wrong type"),
        ({"extract": {"dataset_options": {"class_vectors": "mean"}}}, "unknown option class_vectors"),
    ],
)
def test_bad_pipeline_data_fails_at_dry_run(tmp_path, change, fragment):
    one_line_error("run", _pipeline(tmp_path, **change), "--dry-run", "--cache-root", tmp_path, fragment=fragment)


def test_good_extract_options_pass_the_check(tmp_path):
    from pcmpipe.pipelines.spec import load_pipeline

    extract = {"batch_size": 8, "fmt": "hdf5", "workers": 0, "max_padding": 0, "splits": ["train"]}
    assert load_pipeline(_pipeline(tmp_path, extract=extract)).data["flickr8k"].options["extract"] == extract


LATIN1 = "caf\xe9".encode("latin-1")  # 0xe9: 'é' in Latin-1, an invalid start byte in UTF-8


def test_latin1_files_name_the_file_and_the_byte(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_bytes(b"epochs: 2\nname: " + LATIN1 + b"\n")
    line = one_line_error("train", "--config", config, fragment=f"config file {config} is not UTF-8")
    assert "byte 0xe9 at offset 19" in line
    pipeline = tmp_path / "p.yaml"
    pipeline.write_bytes(b"# " + LATIN1 + b"\n" + _pipeline(tmp_path).read_bytes())
    line = one_line_error("run", pipeline, "--dry-run", fragment=f"pipeline file {pipeline} is not UTF-8")
    assert "offset 5" in line
    np.save(tmp_path / "x.npy", np.ones((2, 3), np.float32))
    (tmp_path / "ids.txt").write_bytes(b"\xef\xbb\xbfa\n" + LATIN1 + b"\n")  # BOM first: offsets count it
    args = ["import-features", "E", "--dataset", "ds", "--split", "train", "--npy", tmp_path / "x.npy"]
    line = one_line_error(*args, "--ids", tmp_path / "ids.txt", "--cache-root", tmp_path / "c", fragment="not UTF-8")
    assert "offset 8" in line and not (tmp_path / "c" / "ds" / "E").exists()


# ---- the filesystem: a file where a folder belongs, a full disk, no permission, a name that is not UTF-8 ----

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "v1"
NOT_A_DIR = "a part of this path is a file, not a directory; choose another path (ENOTDIR)"


@pytest.fixture
def place(tmp_path, monkeypatch):
    """A copy of the v1 cache and run (config paths relative to it), a file `afile`, ids and vectors to import."""
    import shutil

    shutil.copytree(GOLDEN, tmp_path / "v1")
    monkeypatch.chdir(tmp_path / "v1")
    Path("afile").write_text("a file, not a folder")
    np.save("x.npy", np.ones((3, 4), np.float32))
    Path("ids.txt").write_text("a\nb\nc\n")
    return tmp_path / "v1"


IMPORT = ["import-features", "E", "--dataset", "ds", "--split", "train", "--npy", "x.npy", "--ids", "ids.txt"]


@pytest.mark.parametrize(
    "args, path",
    [
        ([*IMPORT, "--cache-root", "afile/c"], "afile/c/ds/E"),
        (["evaluate", "cache/runs/golden", "--out", "afile/m.json"], "afile/m.json"),
        (["report", "--runs-root", "cache/runs", "--out", "afile/r"], "afile/r"),
        (
            ["train", "--dataset", "synth", "--modalities", "I,T", "--cache-root", "cache", "--runs-root", "afile/r"]
            + ["--epochs", "1", "--batch-size", "8", "--device", "cpu"],
            "afile/r",
        ),
        (["download", "flickr8k", "--root", "afile/d", "--base-url", "http://127.0.0.1:9"], "afile/d"),
        (["demo", "--out", "afile/demo"], "afile/demo"),
    ],
    ids=["import-features", "evaluate", "report", "train", "download", "demo"],
)
def test_a_file_where_a_folder_belongs_is_one_line(place, args, path):
    line = one_line_error(*args, fragment=NOT_A_DIR)
    assert line.startswith(f"error: {path}"), line


def test_extract_into_a_file_is_one_line(place):
    from pcmpipe.datasets.synthetic import synth

    synth("flickr8k", "data", images=6)
    tiny = ["--text-backbone", "clip-tiny-text", "--weights-text", "random:0", "--device", "cpu"]
    args = ["extract", "--dataset", "flickr8k", "--root", "data", "--modalities", "T", "--split", "test", *tiny]
    line = one_line_error(*args, "--cache-root", "afile/c", fragment=NOT_A_DIR)
    assert line.startswith("error: afile/c"), line


def test_a_full_disk_is_one_line_saying_how_much_is_free(place):
    """A real write failure: RLIMIT_FSIZE caps file size (Python ignores SIGXFSZ, so writes fail with EFBIG);
    a tiny tmpfs would need root, so this stands in for ENOSPC, which the guard treats alike."""
    import resource
    import subprocess
    import sys

    np.save("big.npy", np.ones((4096, 64), np.float32))
    Path("big.txt").write_text("".join(f"{i}\n" for i in range(4096)))
    limit = 256 << 10

    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    cmd = [sys.executable, "-m", "pcmpipe", *IMPORT[:6], "--npy", "big.npy", "--ids", "big.txt", "--cache-root", "c"]
    proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=cap, env={**os.environ, **ENV}, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "file too large" in lines[0] and "(EFBIG)" in lines[0] and "MB free" in lines[0]
    assert not Path("c/ds/E/train").exists()


def test_full_disk_and_read_only_messages_name_the_path():
    import errno

    from pcmpipe.cli.app import filesystem_message

    full = filesystem_message(OSError(errno.ENOSPC, "No space left on device", "/tmp/c/.part-00000.parquet.tmp"))
    assert full.startswith("/tmp/c/part-00000.parquet: no space left on the device") and "MB free there" in full
    ro = filesystem_message(OSError(errno.EROFS, "Read-only file system", "/mnt/ro/cache"))
    assert ro == "/mnt/ro/cache: read-only filesystem; choose a writable location (EROFS)"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_one_line(place):
    Path("ro").mkdir(mode=0o555)
    one_line_error(*IMPORT, "--cache-root", "ro/c", fragment="permission denied")


def test_a_cache_root_that_is_not_utf8_is_one_line(place):
    root = os.fsdecode(b"caf\xe9")  # Latin-1 bytes of a folder name: Python keeps them as a lone surrogate
    line = one_line_error(*IMPORT, "--cache-root", root, fragment="is not valid UTF-8")
    assert "caf\\xe9" in line
