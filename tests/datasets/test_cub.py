"""CUB-200-2011 + text_c10 reader on synthetic data written in the official layout."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from pcmpipe.datasets import CUB, SPLITS, open_dataset
from pcmpipe.datasets.cub import PCME_VAL_LIST, attribute_values, clean_class_name, pcme_test_classes, prompt
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


def test_val_is_pcmes_held_out_list(cub_root, ds):
    """val = the images of seen_test_images.txt in the 150 seen classes; a listed image of an unseen class
    stays in test, as in PCME (its test loader takes every image of the 50 classes)."""
    listed = set((cub_root / PCME_VAL_LIST).read_text().split())
    val = {ds.image_path[r.id] for r in ds.records("I", "val")}
    train = {ds.image_path[r.id] for r in ds.records("I", "train")}
    test = {ds.image_path[r.id] for r in ds.records("I", "test")}
    assert val == listed - test and not train & listed
    assert listed & test, "the synthetic list should name an unseen-class image, as the real one does"


def test_val_split_readings_differ_where_the_files_differ(tmp_path, cub_root):
    root = tmp_path / "copy"
    shutil.copytree(cub_root, root, ignore=shutil.ignore_patterns("*.jpg", "*.txt"), dirs_exist_ok=True)
    for rel in ("CUB_200_2011/images.txt", "CUB_200_2011/classes.txt", "CUB_200_2011/image_class_labels.txt"):
        shutil.copy(cub_root / rel, root / rel)
    flags = dict(line.split() for line in (cub_root / "CUB_200_2011" / "train_test_split.txt").read_text().splitlines())
    moved = open_dataset("cub", cub_root).records("I", "train")[0].id  # a train image both ways, until ...
    flags[moved] = "0"  # ... CUB calls it a test image: only the train_test_split reading moves it to val
    (root / "CUB_200_2011" / "train_test_split.txt").write_text("".join(f"{k} {v}\n" for k, v in flags.items()))
    shutil.copy(cub_root / PCME_VAL_LIST, root / PCME_VAL_LIST)
    pcme = open_dataset("cub", root)
    cub = open_dataset("cub", root, val_split="train_test_split")
    assert pcme.split_of_image[moved] == "train" and cub.split_of_image[moved] == "val"
    assert all(flags[i] == "1" for i, s in cub.split_of_image.items() if s == "train")
    (root / PCME_VAL_LIST).unlink()
    with pytest.raises(
        UserError,
        match=r"seen_test_images.txt.*pcmpipe download cub.*naver-ai/pcme/7224f04e.*val_split='train_test_split'",
    ):
        open_dataset("cub", root).records("I", "train")
    assert cub.split_of_image  # the other reading needs no list
    (root / PCME_VAL_LIST).write_text("001.Black_footed_Albatross/nope.jpg\n")
    with pytest.raises(UserError, match="images.txt does not have.*nope.jpg"):
        open_dataset("cub", root).records("I", "train")
    with pytest.raises(UserError, match="val_split"):
        open_dataset("cub", root, val_split="random")


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


def test_certainty_reading_of_the_attributes(cub_root, ds):
    """attributes="certainty": 0.5 +- half the certainty weight; C is still the class mean of A."""
    present, cert = np.array([1, 1, 0, 0, 1, 0]), np.array([4, 3, 4, 2, 1, 1])
    np.testing.assert_allclose(attribute_values(present, cert, "certainty"), [1, 5 / 6, 0, 1 / 3, 0.5, 0.5])
    np.testing.assert_array_equal(attribute_values(present, cert, "binary"), [1, 1, 0, 0, 1, 0])
    soft = open_dataset("cub", cub_root, attributes="certainty")
    lines = (cub_root / "CUB_200_2011" / "attributes" / "image_attribute_labels.txt").read_text().splitlines()
    first = [line.split() for line in lines if line.split()[0] == "1"]
    want = attribute_values(np.array([int(f[2]) for f in first]), np.array([int(f[3]) for f in first]), "certainty")
    np.testing.assert_allclose(soft.attributes["1"], want)
    assert not np.array_equal(soft.attributes["1"], ds.attributes["1"])
    members = [v for i, v in soft.attributes.items() if soft.image_class[i] == "1"]
    np.testing.assert_allclose(soft.class_vector["1"], np.mean(members, axis=0), atol=1e-6)
    with pytest.raises(UserError, match="attributes must be one of binary, certainty"):
        open_dataset("cub", cub_root, attributes="soft")


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
    shutil.copy(cub_root / PCME_VAL_LIST, root / PCME_VAL_LIST)
    path = root / "CUB_200_2011" / "attributes" / "image_attribute_labels.txt"
    with open(path, "a") as f:
        f.write(bad + "\n")
    with pytest.raises(UserError, match=r"image_attribute_labels.txt:187201: cannot parse"):
        open_dataset("cub", root).records("A", "train")
