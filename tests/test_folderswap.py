"""pcmpipe.folderswap: a folder replaced by a complete one, in one exchange or two renames, and a swap a killed job
left half done finished by the next. The callers' kill tests (index, import-features, embed, export) run the same
code through real processes; these pin each branch on its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pcmpipe import folderswap


def _folder(path: Path, text: str) -> Path:
    path.mkdir()
    (path / "data.txt").write_text(text)
    return path


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def _names(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_a_folder_is_replaced_whole_and_nothing_is_left_beside_it(tmp_path, monkeypatch, exchange):
    target = _folder(tmp_path / "out", "old")
    new = _folder(tmp_path / ".out.tmp-1-abc", "new")
    (target / "only-in-old.txt").write_text("gone after the swap")
    if not exchange:
        monkeypatch.setattr(folderswap, "exchange", lambda a, b: False)
    folderswap.swap_in(new, target)
    assert _names(target) == ["data.txt"] and (target / "data.txt").read_text() == "new"
    assert _names(tmp_path) == ["out"]


def test_a_second_rename_that_fails_puts_the_old_folder_back(tmp_path, monkeypatch):
    """Two renames (no exchange here): when the second one fails in a live process (the new folder is gone), the
    old folder is back at its name before the error propagates; nothing waits for a dead-swap recovery."""
    target = _folder(tmp_path / "out", "old")
    monkeypatch.setattr(folderswap, "exchange", lambda a, b: False)
    with pytest.raises(FileNotFoundError):
        folderswap.swap_in(tmp_path / ".out.tmp-1-gone", target)
    assert (target / "data.txt").read_text() == "old"
    assert _names(tmp_path) == ["out"]


@pytest.mark.parametrize("empty", [True, False], ids=["empty-folder", "absent"])
def test_an_absent_or_empty_target_is_one_rename(tmp_path, monkeypatch, empty):
    target = tmp_path / "out"
    if empty:
        target.mkdir()
    monkeypatch.setattr(folderswap, "exchange", lambda a, b: pytest.fail("no exchange needed"))
    folderswap.swap_in(_folder(tmp_path / ".out.tmp-1-abc", "new"), target)
    assert (target / "data.txt").read_text() == "new" and _names(tmp_path) == ["out"]


def test_the_exchange_leaves_the_target_present_at_every_step(tmp_path, monkeypatch):
    """renameat2 where the filesystem has it: no rename or removal of the swap ever finds `out` missing."""
    target = _folder(tmp_path / "out", "old")
    new = _folder(tmp_path / ".out.tmp-1-abc", "new")
    if not folderswap.exchange(new, target):
        pytest.skip("this filesystem cannot exchange two paths")
    folderswap.exchange(new, target)  # back as they were: the test's own probe swapped them
    seen: list[bool] = []

    def watched(real):
        def call(*a, **k):
            seen.append(target.is_dir())
            return real(*a, **k)

        return call

    monkeypatch.setattr(os, "replace", watched(os.replace))
    monkeypatch.setattr(folderswap.shutil, "rmtree", watched(folderswap.shutil.rmtree))
    folderswap.swap_in(new, target)
    monkeypatch.undo()
    assert seen and all(seen) and (target / "data.txt").read_text() == "new"


def test_a_swap_killed_between_its_renames_is_rolled_back(tmp_path):
    """The old folder set aside and no new one in: the next job puts the old one back; a live job's aside stays."""
    target = tmp_path / "out"
    _folder(tmp_path / f".out.old-{_dead_pid()}-xyz", "old")
    live = _folder(tmp_path / f".out.old-{os.getpid()}-abc", "a running job's")
    folderswap.finish_dead_swaps(target)
    assert (target / "data.txt").read_text() == "old"
    assert _names(tmp_path) == [live.name, "out"]


def test_a_swap_killed_after_the_new_folder_came_in_drops_the_old_one(tmp_path):
    target = _folder(tmp_path / "out", "new")
    _folder(tmp_path / f".out.old-{_dead_pid()}-xyz", "old")
    folderswap.finish_dead_swaps(target)
    assert (target / "data.txt").read_text() == "new" and _names(tmp_path) == ["out"]


def test_an_aside_that_is_a_link_is_removed_never_followed(tmp_path):
    elsewhere = _folder(tmp_path / "elsewhere", "not ours")
    (tmp_path / f".out.old-{_dead_pid()}-xyz").symlink_to(elsewhere)
    folderswap.finish_dead_swaps(tmp_path / "out")
    assert _names(tmp_path) == ["elsewhere"] and (elsewhere / "data.txt").read_text() == "not ours"


def _earlier_aside(parent: Path, shape: str) -> Path:
    """The old folder as the swaps before this module left it: import-features one level down in its pid-named
    aside (made by mkdtemp, mode 0700), embed and export under the fixed `.<out>.old-tmp`."""
    if shape == "outdir":
        return _folder(parent / ".out.old-tmp", "old")
    aside = parent / f".out.old-{_dead_pid()}-k3x9_q"
    aside.mkdir(mode=0o700)
    _folder(aside / "cache", "old")
    return aside


@pytest.mark.parametrize("shape", ["importer", "outdir"])
def test_an_earlier_swap_killed_between_its_renames_is_rolled_back(tmp_path, shape):
    _earlier_aside(tmp_path, shape)
    folderswap.finish_dead_swaps(tmp_path / "out")
    assert _names(tmp_path) == ["out"] and _names(tmp_path / "out") == ["data.txt"]
    assert (tmp_path / "out" / "data.txt").read_text() == "old"


@pytest.mark.parametrize("shape", ["importer", "outdir"])
def test_an_earlier_swap_killed_after_the_new_folder_came_in_drops_the_old_one(tmp_path, shape):
    _earlier_aside(tmp_path, shape)
    _folder(tmp_path / "out", "new")
    folderswap.finish_dead_swaps(tmp_path / "out")
    assert _names(tmp_path) == ["out"] and (tmp_path / "out" / "data.txt").read_text() == "new"


@pytest.mark.parametrize("kind", ["link", "file"])
def test_an_earlier_outdir_aside_that_is_not_a_folder_is_removed_never_followed(tmp_path, kind):
    elsewhere = _folder(tmp_path / "elsewhere", "not ours")
    if kind == "link":
        (tmp_path / ".out.old-tmp").symlink_to(elsewhere)
    else:
        (tmp_path / ".out.old-tmp").write_text("not a folder")
    folderswap.finish_dead_swaps(tmp_path / "out")
    assert _names(tmp_path) == ["elsewhere"] and (elsewhere / "data.txt").read_text() == "not ours"
