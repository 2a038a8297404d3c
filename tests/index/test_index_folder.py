"""An index folder on disk: checksums checked on open, damaged or crafted folders refused in one line, the
output path checked before work, a previous index replaced whole, and settings checked before FAISS sees them."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pcmpipe.errors import UserError
from pcmpipe.index import EmbeddingIndex, build_index, open_index, save_index

ROWS, DIM = 300, 16


def _vectors(n: int = ROWS, dim: int = DIM, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def _ids(n: int = ROWS, prefix: str = "r") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


@pytest.fixture
def saved(tmp_path) -> Path:
    """A flat index of ROWS rows, as `pcmpipe index` writes it."""
    return save_index(tmp_path / "g.index", build_index(_vectors()), _ids(), {"kind": "flat"})


def _rewrite(folder: Path, name: str, data: bytes) -> None:
    """Replace one file and record its sha256 in index.json, as a crafted folder would."""
    (folder / name).write_bytes(data)
    meta = json.loads((folder / "index.json").read_text())
    if name != "index.json":
        meta["sha256"][name] = hashlib.sha256(data).hexdigest()
        (folder / "index.json").write_text(json.dumps(meta))


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def test_index_json_records_the_files_checksums(saved):
    meta = json.loads((saved / "index.json").read_text())
    for name in ("index.faiss", "ids.json"):
        assert meta["sha256"][name] == hashlib.sha256((saved / name).read_bytes()).hexdigest()
    assert meta["rows"] == ROWS and meta["dim"] == DIM and meta["kind"] == "flat"


@pytest.mark.parametrize("name", ["index.faiss", "ids.json"])
def test_a_flipped_byte_is_refused_not_scored(saved, name):
    """A byte of a vector (the end of index.faiss) or of an id: FAISS and JSON still parse it, so only the
    checksum can tell."""
    path = saved / name
    _flip(path, path.stat().st_size - 5)
    with pytest.raises(UserError, match=rf"{name} is damaged \(sha256 .* index.json records"):
        open_index(saved)


def _l2_index() -> bytes:
    import faiss

    index = faiss.IndexFlatL2(DIM)
    index.add(_vectors())
    return faiss.serialize_index(index).tobytes()


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("ids.json", json.dumps({"a": 1}), r"ids.json is not a valid IndexIds: \(top level\)"),
        ("ids.json", "7", r"ids.json is not a valid IndexIds"),
        ("ids.json", json.dumps([[f"r{i}"] for i in range(ROWS)]), r"ids.json is not a valid IndexIds: 0:"),
        ("ids.json", json.dumps(list(range(ROWS))), r"IndexIds: 0: Input should be a valid string"),
        ("ids.json", json.dumps(_ids(ROWS - 1)), r"holds 300 vectors, 299 ids and index.json says 300"),
        ("index.faiss", _l2_index(), r"not an inner-product index"),
    ],
    ids=["ids-dict", "ids-number", "ids-nested", "ids-ints", "ids-short", "l2-index"],
)
def test_a_crafted_file_with_a_matching_checksum_is_one_line(saved, name, content, message):
    _rewrite(saved, name, content if isinstance(content, bytes) else content.encode())
    with pytest.raises(UserError, match=message):
        open_index(saved)


def _meta(saved: Path, **change) -> None:
    meta = json.loads((saved / "index.json").read_text())
    meta.update(change)
    (saved / "index.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"nprobe": "abc"}, r"nprobe: Input should be a valid integer"),
        ({"dim": DIM * 2}, r"has 16 dimensions, index.json says 32"),
        ({"kind": "ivf"}, r"says kind ivf, index.faiss holds another"),
        ({"kind": "hnsw"}, r"kind: Input should be 'flat', 'ivf' or 'ivfpq'"),
        ({"rows": -1}, r"rows: Input should be greater than or equal to 0"),
        ({"sha256": "x"}, r"sha256: Input should be a valid dictionary"),
    ],
    ids=["nprobe-abc", "other-dim", "kind-mismatch", "kind-unknown", "rows-negative", "sha-string"],
)
def test_damaged_index_json_is_one_line(saved, change, message):
    _meta(saved, **change)
    with pytest.raises(UserError, match=message):
        open_index(saved)


def test_a_deeply_nested_or_checksumless_index_json_is_one_line(saved):
    (saved / "index.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(UserError, match="nested"):
        open_index(saved)
    (saved / "index.json").write_text(json.dumps({"kind": "flat", "rows": ROWS, "dim": DIM}))
    with pytest.raises(UserError, match="records no checksums .* rebuild it with `pcmpipe index`"):
        open_index(saved)


def test_the_output_is_checked_before_anything_is_written(tmp_path):
    index = build_index(_vectors())
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match="afile is a file, not a folder"):
        save_index(tmp_path / "afile", index, _ids(), {"kind": "flat"})
    with pytest.raises(UserError, match="lies under .*afile, which is a file"):
        save_index(tmp_path / "afile" / "i", index, _ids(), {"kind": "flat"})
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="holds 'notes.txt', which is not part of an index"):
        save_index(tmp_path / "mine", index, _ids(), {"kind": "flat"})
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "mine"]  # no temp folder, no lock


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_a_new_index_replaces_the_old_folder_whole(saved):
    """A second index into the folder replaces all three files; what dead jobs left beside it (a temp folder,
    and the old folder a job killed between its two renames set aside) is cleared, and nothing else stays."""
    dead = _dead_pid()
    (saved.parent / f".g.index.tmp-{dead}-abc").mkdir()
    (saved.parent / f".g.index.tmp-{dead}-abc" / "index.faiss").write_bytes(b"half")
    save_index(saved.parent / f".g.index.old-{dead}-xyz", build_index(_vectors(seed=3)), _ids(), {"kind": "flat"})
    save_index(saved, build_index(_vectors(seed=1)), _ids(prefix="s"), {"kind": "flat"})
    back = open_index(saved)
    assert list(back.ids) == _ids(prefix="s")
    ids, _ = back.search(_vectors(seed=1)[:20], 1)
    assert list(ids[:, 0]) == _ids(20, prefix="s")
    assert sorted(p.name for p in saved.parent.iterdir() if not p.name.endswith((".lock", ".owner"))) == ["g.index"]


def test_an_old_folder_set_aside_by_a_killed_job_is_put_back(tmp_path):
    """A job killed between renaming the old folder aside and renaming the new one in leaves no index folder;
    the next job into it puts the old one back first (under the lock), so a failure after that keeps it."""
    from pcmpipe.cache.lock import exclusive
    from pcmpipe.folderswap import finish_dead_swaps

    aside = tmp_path / f".g.index.old-{_dead_pid()}-xyz"
    save_index(aside, build_index(_vectors()), _ids(), {"kind": "flat"})
    live = tmp_path / f".g.index.old-{os.getpid()}-abc"  # a running job's: never touched
    live.mkdir()
    with exclusive(tmp_path / "g.index", "test"):
        finish_dead_swaps(tmp_path / "g.index")
    assert list(open_index(tmp_path / "g.index").ids) == _ids() and not aside.exists() and live.is_dir()


@pytest.mark.parametrize(
    "kind, settings, message",
    [
        ("ivfpq", {"pq_m": 0}, "--pq-m must be between 1 and"),
        ("ivfpq", {"pq_m": -4}, "--pq-m must be between 1 and"),
        ("ivf", {"nlist": -5}, "--nlist must be between 1 and"),
        ("ivf", {"nlist": 0}, "--nlist must be between 1 and"),
        ("ivf", {"nprobe": -1}, "--nprobe must be between 1 and"),
        ("ivf", {"nprobe": 0}, "--nprobe must be between 1 and"),
        ("ivf", {"nlist": 4, "nprobe": 5}, r"--nprobe 5 is more than the 4 cells"),
        ("ivf", {"nlist": ROWS + 1}, r"--nlist 301 is more than the 300 embeddings"),
        ("ivfpq", {"pq_m": 3}, r"--pq-m 3 must divide the embedding size 16"),
        ("ivfpq", {}, r"--kind ivfpq needs at least 256 embeddings .* this gallery has 200"),
        ("hnsw", {}, "unknown index kind 'hnsw'"),
    ],
)
def test_bad_settings_are_refused_before_faiss_sees_them(kind, settings, message):
    from pcmpipe.index import fit_params

    rows = 200 if kind == "ivfpq" and not settings else ROWS
    with pytest.raises(UserError, match=message):
        fit_params(kind, rows, DIM, **settings)
    with pytest.raises(UserError, match=message):
        build_index(_vectors(rows), kind, **settings)


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivfpq"])
@pytest.mark.parametrize("rows", [1, 2, 38, 39, 255, 256, 700])
def test_each_kind_builds_and_searches_or_refuses_at_any_size(kind, rows, capfd):
    """Either a working index (its rows find themselves, FAISS prints nothing) or one line saying why."""
    from pcmpipe.index import fit_params

    x = _vectors(rows)
    try:
        index = build_index(x, kind)
    except UserError as e:
        assert kind == "ivfpq" and rows < 256 and "needs at least 256 embeddings" in str(e)
        return
    params = fit_params(kind, rows, DIM)
    if kind != "flat":
        assert 1 <= params.nprobe <= params.nlist <= rows
        index.nprobe = params.nlist  # every cell: the nearest row of a stored vector is itself
    found, _ = EmbeddingIndex(index, np.asarray(_ids(rows))).search(x, 1)
    exact = (found[:, 0] == np.asarray(_ids(rows))).mean()
    assert exact == 1.0 or (kind == "ivfpq" and exact > 0.5), exact
    assert capfd.readouterr().err == ""  # FAISS's "WARNING clustering ..." is not pcmpipe's output


def test_small_galleries_get_pcmpipes_own_advice_not_faiss_warnings():
    from pcmpipe.index import fit_params

    assert fit_params("ivf", 300, DIM, nlist=16).advice == ["300 embeddings train 16 cells; FAISS advises 624 or more"]
    assert "FAISS advises 9984 or more" in fit_params("ivfpq", 300, DIM, nlist=1).advice[0]
    assert fit_params("ivf", 10_000, DIM).advice == []


def test_ivf_settings_survive_the_folder(tmp_path):
    x = _vectors(2000)
    index = build_index(x, "ivf", nlist=8, nprobe=3)
    save_index(tmp_path / "i", index, _ids(2000), {"kind": "ivf"})
    back = open_index(tmp_path / "i")
    assert back.index.nlist == 8 and back.index.nprobe == 3 and back.meta["nprobe"] == 3
    assert sorted(os.listdir(tmp_path / "i")) == ["ids.json", "index.faiss", "index.json"]
