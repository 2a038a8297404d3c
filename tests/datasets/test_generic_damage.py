"""Damaged or crafted input in a user's own data (a CSV table, webdataset shards, dataset.yaml): one line naming
the file or member and exit code 2 through the CLI, or the member skipped and listed where the extraction skips
bad media, never a traceback, a bare "Aborted." or samples lost without a word."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
from typer.testing import CliRunner

from pcmpipe.cli import app
from pcmpipe.datasets import open_dataset
from pcmpipe.errors import UserError

ENV = {"COLUMNS": "400", "TERM": "dumb", "NO_COLOR": "1"}
DEEP = "[" * 100_000 + "]" * 100_000
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")
)
SHARD_SPEC = "files: {train: a.tar}\nmodalities: {T: text:txt, A: vector:npy}\n"


def extract_fails_in_one_line(root: Path, fragment: str) -> str:
    """`pcmpipe extract` over the dataset at root: exit 2, one line on stderr holding `fragment`."""
    args = ["extract", "--dataset", "mine", "--root", str(root), "--cache-root", str(root / "cache")]
    res = CliRunner().invoke(app, [*args, "--text-backbone", "clip-tiny-text", "--weights-text", "random:0"], env=ENV)
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and fragment in lines[0], (res.output, res.exception)
    return lines[0]


def write_shard(root: Path, members: list[tuple[str, bytes]], cut: int | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (root / "a.tar").write_bytes(buf.getvalue()[:cut])
    (root / "dataset.yaml").write_text(SHARD_SPEC)
    return root


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


GOOD = [("0001.txt", b"a dog"), ("0001.npy", npy(np.ones(3, np.float32))), ("0002.txt", b"a cat" * 200)]


def test_csv_row_with_an_empty_id_and_an_extra_field_is_one_line(tmp_path):
    (tmp_path / "t.csv").write_text("id,caption,split\n,a dog,train,surplus\n")
    (tmp_path / "dataset.yaml").write_text("files: t.csv\nsplit_column: split\nmodalities: {T: text:caption}\n")
    line = extract_fails_in_one_line(tmp_path, "t.csv:2: 4 fields where the header names 3")
    assert "quote" in line
    (tmp_path / "t.csv").write_text("id,caption,split\n,a dog,train\n")  # the empty id alone
    extract_fails_in_one_line(tmp_path, "t.csv:1: no value in id column 'id'")
    (tmp_path / "t.csv").write_text("id,caption,split\ns1,a dog,train,\n")  # a trailing delimiter loses nothing
    assert open_dataset("mine", tmp_path).records("T", "train")[0].text == "a dog"


def test_deep_jsonl_row_is_one_line(tmp_path):
    (tmp_path / "t.jsonl").write_text('{"id": "s1", "caption": "a dog", "split": "train"}\n' + DEEP + "\n")
    (tmp_path / "dataset.yaml").write_text("files: t.jsonl\nsplit_column: split\nmodalities: {T: text:caption}\n")
    extract_fails_in_one_line(tmp_path, "t.jsonl:2 is nested too deeply")


@pytest.mark.parametrize(
    "members, fragment",
    [
        ([*GOOD, ("0003.txt", b"caf\xff")], "a.tar member 0003.txt is not UTF-8: byte 0xff at offset 3"),
        ([*GOOD, ("0003.json", b'{"id": "\xff"}')], "a.tar member 0003.json is not valid JSON"),
        ([*GOOD, ("0003.json", DEEP.encode())], "a.tar member 0003.json is nested too deeply"),
        ([*GOOD, ("0003.json", b'{"a":' * 70 + b"1" + b"}" * 70)], "0003.json is nested deeper than 64 levels"),
        ([*GOOD, ("00\udcff3.txt", b"x")], "a.tar member 00\\xff3.txt: the member's name is not UTF-8"),
    ],
    ids=["xff-text", "xff-json", "deep-json", "json-over-depth", "xff-name"],
)
def test_bad_small_members_are_one_line_naming_the_member(tmp_path, members, fragment):
    extract_fails_in_one_line(write_shard(tmp_path, members), fragment)


@pytest.mark.parametrize("cut", [600, 1300, 1536, 2000, 3072 + 512], ids=lambda c: f"cut{c}")
def test_a_shard_cut_short_is_one_line_naming_it(tmp_path, cut):
    """In a member's data, in a header, and at a member boundary (which tarfile reads as a quiet end)."""
    line = extract_fails_in_one_line(write_shard(tmp_path, GOOD, cut=cut), "a.tar")
    assert "cut short" in line or "unexpected end of data" in line


def test_a_damaged_header_after_the_first_member_is_not_a_quiet_end(tmp_path):
    write_shard(tmp_path, GOOD)
    data = bytearray((tmp_path / "a.tar").read_bytes())
    data[1024:1536] = b"x" * 512  # the second member's header
    (tmp_path / "a.tar").write_bytes(bytes(data))
    extract_fails_in_one_line(tmp_path, "ends without tar's end-of-archive block after 1,024 bytes")


def huge_npy() -> bytes:
    """A 100-byte .npy whose header declares 10^12 float32 (np.load allocates them before reading)."""
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000,), }"
    return b"\x93NUMPY\x01\x00" + len(header + b"\n").to_bytes(2, "little") + header + b"\n" + b"\0" * 16


@pytest.mark.parametrize("data", [b"", huge_npy()], ids=["empty", "huge-shape"])
def test_bad_npy_members_are_skipped_and_listed(tmp_path, data):
    """The extraction lists an unusable vector ('no vector') and goes on, as it does for bad media."""
    from extraction import extract

    write_shard(tmp_path, [*GOOD[:2], ("0003.txt", b"x"), ("0003.npy", data)])
    summary = extract("mine", tmp_path, modalities=["A"], cache_root=tmp_path / "cache", device="cpu")
    assert [(e["id"], e["reason"]) for e in summary.errors] == [("0003", "no vector")]
    assert sum(p.rows for p in summary.parts) == 1


def test_npy_members_are_read_from_their_header_without_np_load():
    from pcmpipe.datasets.generic.wds import _vector

    assert _vector(huge_npy()).size == 0
    np.testing.assert_array_equal(_vector(npy(np.arange(6, dtype=np.int16).reshape(2, 3))), np.arange(6).reshape(2, 3))
    fortran = np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3))
    np.testing.assert_array_equal(_vector(npy(fortran)), fortran)
    header_typo = npy(np.ones(4, np.float32)).replace(b"'fortran_order'", b"'fortran_order'{")  # found by fuzzing
    for bad in (b"\xff", b"\x93NUMPY\x01\x00", npy(np.ones(4, np.float32))[:-3], npy(np.array(["a"])), header_typo):
        assert _vector(bad).size == 0


@pytest.mark.parametrize(
    "text, fragment",
    [
        (DEEP, "dataset spec {spec} is nested too deeply to read"),
        ("modalities: " + "[" * 20 + "]" * 20, "nested deeper than 16 levels"),
        (BOMB, "expands to more than 1,000,000 values"),
        ("modalities: &a [*a]", "refers to itself"),
        ("files: t.csv\nsplit_column: split\nmodalities: {T: {kind: text, column: [caption]}}", "modalities.T.column"),
        ("files: {train: [[t.csv]]}\nmodalities: {T: text:caption}", "files.train.0: Input should be a valid str"),
        ("files: t.csv\nsplit_column: split\nlinks: 5\nmodalities: {T: text:caption}", "links: Input should be"),
        ("format: hf\npath: [x]\nmodalities: {T: text:caption}", "path: Input should be a valid string"),
        ("files: t.csv\nsplit_column: split\nmodalities: [T]", "modalities: Input should be a valid dictionary"),
        (b"files: caf\xe9.csv\nmodalities: {T: text:c}", "is not UTF-8: byte 0xe9 at offset 10"),
    ],
    ids=["deep", "over-depth", "alias-bomb", "recursive", "list-column", "nested-files", "links", "hf-path",
         "modalities-list", "latin1"],
)  # fmt: skip
def test_dataset_spec_mistakes_are_one_line(tmp_path, text, fragment):
    (tmp_path / "t.csv").write_text("id,caption,split\ns1,a dog,train\n")
    spec = tmp_path / "dataset.yaml"
    spec.write_bytes(text if isinstance(text, bytes) else text.encode())
    extract_fails_in_one_line(tmp_path, fragment.format(spec=spec))
    with pytest.raises(UserError):
        open_dataset("mine", tmp_path).records("T", "train")


def test_hf_column_of_numbers_declared_as_images_is_skipped_and_listed(tmp_path, one_thread):
    import datasets
    from extraction import extract

    data = {"id": ["a", "b"], "pic": [5, 7]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(data)}).save_to_disk(str(tmp_path / "hf"))
    (tmp_path / "dataset.yaml").write_text("format: hf\npath: hf\nmodalities: {I: image:pic}\n")
    kw = dict(backbones={"image": "clip-tiny-image"}, weights={"image": "random:0"}, device="cpu", workers=0)
    summary = extract("mine", tmp_path, cache_root=tmp_path / "cache", **kw)
    assert [e["reason"] for e in summary.errors] == [
        f"unreadable row {i} column pic (OSError: column pic holds a int, not the bytes or path of a file)"
        for i in (0, 1)
    ]
