"""Safe unpacking: a refused archive leaves the target as it was; size and ratio limits stop archive bombs."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from pcmpipe.datasets.archive import UnpackLimits, safe_extract
from pcmpipe.errors import UserError

MB = 1 << 20


def listing(root: Path) -> dict[str, bytes | str]:
    """Every entry under root: a file's bytes, a link's target, a folder's name."""
    out: dict[str, bytes | str] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = f"-> {p.readlink()}" if p.is_symlink() else p.read_bytes() if p.is_file() else "dir"
    return out


def _target(tmp_path: Path) -> Path:
    """A dataset root that already holds an earlier archive's files."""
    target = tmp_path / "root"
    (target / "a").mkdir(parents=True)
    (target / "a" / "kept.txt").write_text("earlier")
    (target / "downloads").mkdir()
    return target


def _tar(path: Path, members: list[tuple[str, bytes | str | None]]) -> Path:
    """members: (name, file bytes | symlink target (str) | None for a folder)."""
    with tarfile.open(path, "w:gz") as tf:
        for name, body in members:
            info = tarfile.TarInfo(name)
            if body is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            elif isinstance(body, str):
                info.type, info.linkname = tarfile.SYMTYPE, body
                tf.addfile(info)
            else:
                info.size = len(body)
                tf.addfile(info, io.BytesIO(body))
    return path


def test_two_step_symlink_archive_leaves_the_target_untouched(tmp_path):
    target = _target(tmp_path)
    before = listing(target)
    # each link alone stays inside by name; together a/b/c resolves to root/.. : only tarfile's filter sees it,
    # after a/ and a/b were written
    archive = _tar(tmp_path / "x.tgz", [("a", None), ("a/new.txt", b"new"), ("a/b", ".."), ("a/b/c", "..")])
    with pytest.raises(UserError, match="refusing to unpack x.tgz"):
        safe_extract(archive, target)
    assert listing(target) == before


def test_a_good_archive_merges_into_existing_folders(tmp_path):
    target = _target(tmp_path)
    (target / "a" / "old.txt").write_text("replaced")
    archive = _tar(tmp_path / "ok.tgz", [("a", None), ("a/old.txt", b"new"), ("a/l", "old.txt"), ("b.txt", b"b")])
    assert sorted(safe_extract(archive, target)) == ["a", "a/l", "a/old.txt", "b.txt"]
    assert listing(target) == {
        "a": "dir",
        "a/kept.txt": b"earlier",
        "a/l": "-> old.txt",
        "a/old.txt": b"new",
        "b.txt": b"b",
        "downloads": "dir",
    }


def _zip_bomb(path: Path, mb: int) -> Path:
    """`mb` MiB of zeros in one deflated member (about 1000x), written in chunks so the test never holds it."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("zeros.bin", "w", force_zip64=True) as f:
        for _ in range(mb):
            f.write(bytes(MB))
    return path


def test_a_zip_bomb_is_refused_before_anything_is_written(tmp_path):
    target = _target(tmp_path)
    before = listing(target)
    bomb = _zip_bomb(tmp_path / "bomb.zip", 100)  # about 100 KB expanding to 100 MB
    assert bomb.stat().st_size < 200_000
    with pytest.raises(UserError, match=r"member 'zeros.bin' expands \d+x .* over the 100x limit .*--max-ratio"):
        safe_extract(bomb, target)
    assert listing(target) == before


def test_total_size_and_tar_stream_ratio_limits(tmp_path):
    target = _target(tmp_path)
    before = listing(target)
    stored = tmp_path / "big.zip"
    with zipfile.ZipFile(stored, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("a.bin", bytes(2 * MB))
    with pytest.raises(UserError, match=r"expands to 2.0 MB, over the 1.0 MB limit"):
        safe_extract(stored, target, UnpackLimits(max_bytes=MB))
    tgz = _tar(tmp_path / "zeros.tgz", [("z.bin", bytes(8 * MB))])  # gzip packs 8 MB of zeros to ~8 KB
    with pytest.raises(UserError, match=r"KB expand \d+x to 8.0 MB, over the 100x limit"):
        safe_extract(tgz, target)
    assert listing(target) == before
    safe_extract(tgz, target, UnpackLimits(max_ratio=1e6))  # raised: unpacks
    assert (target / "z.bin").stat().st_size == 8 * MB


def test_a_killed_unpacks_working_folder_is_removed(tmp_path):
    import subprocess
    import sys

    target = _target(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (target / f".unpack-{dead.pid}-abc").mkdir()
    (target / f".unpack-{dead.pid}-abc" / "half.jpg").write_bytes(b"half")
    safe_extract(_tar(tmp_path / "ok.tgz", [("b.txt", b"b")]), target)
    assert sorted(p.name for p in target.iterdir()) == ["a", "b.txt", "downloads"]
