"""CUB-200-2011 + text_c10 reader on synthetic data written in the official layout."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from pcmpipe.datasets import CUB, SPLITS, open_dataset
from pcmpipe.datasets.cub import clean_class_name, pcme_test_classes, prompt
from pcmpipe.datasets.synthetic import synth
from pcmpipe.errors import UserError


@pytest.fixture(scope="module")
def cub_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cub")
    synth("cub", root, seed=5)  # 200 classes x 3 images
    return root


@pytest.fixture(scope="module")
def ds(cub_root) -> CUB:
    return open_dataset("cub", cub_root)


def test_modalities_and_keys(ds):
    assert ds.name == "cub" and ds.modalities == ("I", "T", "A", "C", "P")
    assert [ds.key(m) for m in ds.modalities] == ["image_id", "caption_id", "image_id", "class_id", "class_id"]


@pytest.mark.parametrize("split,images,classes", [("train", 300, 150), ("val", 150, 150), ("test", 150, 50)])
def test_counts_per_split(ds, split, images, classes):
    assert len(ds.records("I", split)) == images
    assert len(ds.records("A", split)) == images
    assert len(ds.records("T", split)) == 10 * images
    assert len(ds.records("C", split)) == classes
    assert len(ds.records("P", split)) == classes


def test_pcme_class_split(ds):
    folders = ds.class_folder
    test_classes = {folders[r.id] for r in ds.records("C", "test")}
    assert test_classes == pcme_test_classes() and len(test_classes) == 50
    assert {r.id for r in ds.records("C", "train")} == {r.id for r in ds.records("C", "val")}
    assert not test_classes & {folders[r.id] for r in ds.records("C", "train")}
    # train / val of the 150 classes follow train_test_split.txt
    flags = dict(line.split() for line in (ds.cub / "train_test_split.txt").read_text().splitlines())
    assert all(flags[r.id] == "1" for r in ds.records("I", "train"))
    assert all(flags[r.id] == "0" for r in ds.records("I", "val"))


def test_ids_links_and_paths(ds):
    for split in SPLITS:
        images = ds.records("I", split)
        assert [r.id for r in images] == sorted(r.id for r in images)
        for r in images:
            assert r.id.isdigit() and r.links == {"image_id": r.id, "class_id": ds.image_class[r.id]}
            assert r.path.is_file() and r.path.parent.parent.name == "images"
            assert r.path.parent.name == ds.class_folder[r.links["class_id"]]
        for r in ds.records("T", split):
            img, n = r.id.split("#")
            assert 0 <= int(n) < 10 and r.text
            assert r.links == {"caption_id": r.id, "image_id": img, "class_id": ds.image_class[img]}
        for r in ds.records("C", split):
            assert r.links == {"class_id": r.id} and r.vector.shape == (312,) and r.vector.dtype == np.float32


def test_crlf_files_are_parsed(cub_root, ds):
    raw = (cub_root / "CUB_200_2011" / "images.txt").read_bytes()
    assert b"\r\n" in raw
    assert (cub_root / "CUB_200_2011" / "attributes" / "image_attribute_labels.txt").read_bytes().count(b"\r\n") > 0
    crlf_captions = [p for p in (cub_root / "text_c10").rglob("*.txt") if b"\r\n" in p.read_bytes()]
    assert crlf_captions
    assert all(not p.endswith("\r") for p in ds.image_path.values())
    texts = [r.text for s in SPLITS for r in ds.records("T", s)]
    assert all("\r" not in t and t == t.strip() for t in texts)


def test_attribute_vectors_match_the_file(cub_root, ds):
    lines = (cub_root / "CUB_200_2011" / "attributes" / "image_attribute_labels.txt").read_text().splitlines()
    malformed = [row for row in lines if len(row.split()) != 5]
    assert malformed, "synthetic file should carry the real file's malformed lines"
    expected = np.zeros((600, 312), dtype=np.float32)
    for line in lines:
        img, attr, present = line.split()[:3]
        expected[int(img) - 1, int(attr) - 1] = float(present)
    for split in SPLITS:
        for r in ds.records("A", split):
            np.testing.assert_array_equal(r.vector, expected[int(r.id) - 1])
            assert r.links == {"image_id": r.id, "class_id": ds.image_class[r.id]}


def test_class_vector_is_mean_of_its_images(ds, cub_root):
    a = {r.id: r.vector for s in SPLITS for r in ds.records("A", s)}
    for r in ds.records("C", "test")[:10]:
        members = [v for i, v in a.items() if ds.image_class[i] == r.id]
        assert len(members) == 3
        np.testing.assert_allclose(r.vector, np.mean(members, axis=0), atol=1e-6)
    cont = open_dataset("cub", cub_root, class_vectors="continuous")
    for r_mean, r_cont in zip(ds.records("C", "val"), cont.records("C", "val")):
        assert r_mean.id == r_cont.id
        np.testing.assert_allclose(r_cont.vector, r_mean.vector, atol=1e-6)  # synth writes 100 x the mean
    with pytest.raises(UserError, match="class_vectors"):
        open_dataset("cub", cub_root, class_vectors="median")


def test_prompts(ds):
    assert clean_class_name("001.Black_footed_Albatross") == "Black footed Albatross"
    assert prompt("200.Common_Yellowthroat") == "A photo of a Common Yellowthroat."
    p = {r.id: r.text for r in ds.records("P", "train")}
    assert p["1"] == "A photo of a Black footed Albatross."


def test_captions_match_their_files(ds):
    r = ds.records("T", "test")[0]
    img = r.links["image_id"]
    path = ds.text_dir / ds.image_path[img].replace(".jpg", ".txt")
    lines = path.read_text().splitlines()
    assert len(lines) == 10
    assert [x.text for x in ds.records("T", "test") if x.links["image_id"] == img] == lines


def test_text_dir_variants_and_root_is_cub_folder(tmp_path):
    root = tmp_path / "v"
    synth("cub", root, images=1, seed=1, text_subdir=True)
    assert (root / "cub_text" / "text_c10").is_dir()
    ds = open_dataset("cub", root)
    assert len(ds.records("T", "test")) == 500
    inner = open_dataset("cub", root / "CUB_200_2011")  # root given as the CUB folder itself
    assert [r.id for r in inner.records("T", "train")] == [r.id for r in ds.records("T", "train")]
    assert len(ds.records("I", "val")) == 0  # one image per class: all training images


def test_missing_pieces_are_user_errors(tmp_path, cub_root):
    with pytest.raises(UserError, match=r"CUB_200_2011.*pcmpipe download cub"):
        open_dataset("cub", tmp_path)
    root = tmp_path / "copy"
    shutil.copytree(cub_root, root)
    shutil.rmtree(root / "text_c10")
    ds = open_dataset("cub", root)
    assert len(ds.records("I", "test")) == 150
    with pytest.raises(UserError, match=r"text_c10.*cvpr2016_cub"):
        ds.records("T", "test")
    (root / "CUB_200_2011" / "attributes" / "image_attribute_labels.txt").unlink()
    with pytest.raises(UserError, match="image_attribute_labels.txt"):
        open_dataset("cub", root).records("A", "train")
    # one missing image is left to extraction (skipped and listed there); none at all is an error
    victim = ds.records("I", "val")[3].path
    victim.unlink()
    assert victim in [r.path for r in open_dataset("cub", root).records("I", "val")]
    shutil.rmtree(root / "CUB_200_2011" / "images")
    with pytest.raises(UserError, match=r"none of the 150 val images exist.*pcmpipe download cub"):
        open_dataset("cub", root).records("I", "val")


@pytest.mark.parametrize("bad", ["1 x 1 3 2.0", "1 y 1 3 0 2.0", "99999 1 1 3 2.0", "1 313 1 3 2.0"])
def test_bad_attribute_line_names_file_and_line(tmp_path, cub_root, bad):
    root = tmp_path / "copy"
    shutil.copytree(cub_root / "CUB_200_2011", root / "CUB_200_2011", ignore=shutil.ignore_patterns("*.jpg"))
    path = root / "CUB_200_2011" / "attributes" / "image_attribute_labels.txt"
    with open(path, "a") as f:
        f.write(bad + "\n")
    with pytest.raises(UserError, match=r"image_attribute_labels.txt:187201: cannot parse"):
        open_dataset("cub", root).records("A", "train")
