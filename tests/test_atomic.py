"""pcmpipe.atomic: the one durable write. A finished write replaces the file whole and leaves no temp file; a
write that fails leaves the old file as it was; a kill mid-write (a real process) leaves the old file too."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pcmpipe import atomic


def test_writes_replace_whole_files_and_leave_no_temp(tmp_path):
    path = tmp_path / "a.json"
    atomic.write_json(path, {"x": 1})
    atomic.write_json(path, {"x": [2, 3]}, sort_keys=True)
    assert json.loads(path.read_text()) == {"x": [2, 3]} and path.read_text().endswith("\n")
    atomic.write_lines(tmp_path / "m.jsonl", [{"a": 1}, {"b": 2}])
    assert (tmp_path / "m.jsonl").read_text() == '{"a": 1}\n{"b": 2}\n'
    atomic.write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.bin", "m.jsonl"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "shard.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(path) as tmp:
            assert tmp.parent == path.parent and tmp.name.startswith(".")  # same filesystem, hidden
            tmp.write_bytes(b"half")
            raise RuntimeError("writer died")
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["shard.bin"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
def test_a_full_disk_names_the_file_that_was_being_written(tmp_path):
    """A writer's own ENOSPC seldom names a file (a plain write, pyarrow); the error is given the file meant, so
    the CLI guard can say which one and how much room is left. /dev/full is a real device that is always full."""
    path = tmp_path / "part-00000.parquet"
    with pytest.raises(OSError) as err:
        with atomic.atomic_path(path), open("/dev/full", "wb") as full:
            full.write(b"x" * 100)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(path)
    assert list(tmp_path.iterdir()) == []


def test_a_killed_writer_leaves_the_old_file(tmp_path):
    """SIGKILL while the new content is being written: the reader still sees the old file, whole."""
    path = tmp_path / "big.bin"
    path.write_bytes(b"old")
    script = (
        "import sys, time\nfrom pcmpipe import atomic\n"
        "with atomic.atomic_path(sys.argv[1]) as tmp, open(tmp, 'wb') as f:\n"
        "    f.write(b'x' * 1000); f.flush(); print('writing', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        assert proc.stdout.readline().strip() == "writing"
        assert atomic.temp_path(path).is_file()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    time.sleep(0.05)
    assert path.read_bytes() == b"old"
