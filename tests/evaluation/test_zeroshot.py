"""Zero-shot classification (Sec. 4.3): per-image inputs, normalised averaging, mean per-class top-1 accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pcmpipe.errors import UserError
from pcmpipe.evaluation.embeddings import RunEmbeddings
from pcmpipe.evaluation.zeroshot import combine_inputs, per_image, zero_shot_t1, zero_shot_table


def _emb(vectors, key, **columns) -> RunEmbeddings:
    cols = {k: np.asarray(v, dtype=str) for k, v in columns.items()}
    cols.setdefault("id", cols[key])
    return RunEmbeddings(torch.as_tensor(np.asarray(vectors, dtype=np.float32)), key, cols)


def test_per_image_averages_normalised_caption_embeddings():
    # image "b" has two captions of very different norms: each is normalised before the mean
    t = _emb(
        [[10.0, 0.0], [0.0, 1.0], [3.0, 4.0]],
        "caption_id",
        caption_id=["b#0", "b#1", "a#0"],
        image_id=["b", "b", "a"],
        class_id=["1", "1", "0"],
    )
    ids, cls, vecs = per_image(t)
    assert ids.tolist() == ["a", "b"] and cls.tolist() == ["0", "1"]
    expected_b = F.normalize(torch.tensor([0.5, 0.5]), dim=0)
    assert torch.allclose(vecs[1], expected_b, atol=1e-6)
    assert torch.allclose(vecs[0], torch.tensor([0.6, 0.8]), atol=1e-6)


def test_mean_per_class_accuracy_not_overall_accuracy():
    # classes 0, 1, 2 = basis vectors. Class 0: 2 images, 1 right; class 1: 1 image, right; class 2: 3 images, 0 right.
    # Mean per-class accuracy = (0.5 + 1 + 0) / 3 = 50%; overall accuracy would be 2/6 = 33.3%.
    vecs = [[1, 0, 0], [0, 1, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0], [1, 0.1, 0]]
    cls = ["0", "0", "1", "2", "2", "2"]
    i = _emb(vecs, "image_id", image_id=[f"i{k}" for k in range(6)], class_id=cls)
    out = zero_shot_t1({"I": i}, ["I"], np.array(["0", "1", "2"]), torch.eye(3))
    assert out == pytest.approx(50.0)
    # the same value as torchmetrics' macro-averaged accuracy
    from torchmetrics.classification import MulticlassAccuracy

    pred = torch.tensor([0, 1, 1, 0, 1, 0])
    target = torch.tensor([0, 0, 1, 2, 2, 2])
    assert out == pytest.approx(100 * float(MulticlassAccuracy(num_classes=3, average="macro")(pred, target)))


def test_combined_inputs_average_normalised_vectors():
    # I alone says class 1, A alone says class 0. Normalised average -> class 0; a raw average (I has norm 10)
    # would say class 1, so this fails if normalisation before averaging is dropped.
    i = _emb([[6.0, 8.0]], "image_id", image_id=["x"], class_id=["0"])
    a = _emb([[1.0, -0.2]], "image_id", image_id=["x"], class_id=["0"])
    classes, centres = np.array(["0", "1"]), torch.eye(2)
    embs = {"I": i, "A": a}
    assert zero_shot_t1(embs, ["I"], classes, centres) == 0.0
    assert zero_shot_t1(embs, ["I", "A"], classes, centres) == 100.0
    cls, x = combine_inputs(embs, ["I", "A"])
    manual = F.normalize(
        F.normalize(torch.tensor([6.0, 8.0]), dim=0) + F.normalize(torch.tensor([1.0, -0.2]), dim=0), dim=0
    )
    assert torch.allclose(x[0], manual, atol=1e-6) and cls.tolist() == ["0"]


def test_table_combinations_and_alignment_on_shared_images():
    rng = np.random.default_rng(0)
    centres = F.normalize(torch.as_tensor(rng.standard_normal((4, 16)), dtype=torch.float32), dim=1)
    cls = np.repeat(np.arange(4), 5)
    img = [f"im{k}" for k in range(20)]

    def noisy(s):
        return (centres[cls] + s * torch.as_tensor(rng.standard_normal((20, 16)), dtype=torch.float32)).numpy()

    i = _emb(noisy(0.1), "image_id", image_id=img, class_id=cls)
    # A exists for only the first 12 images: combinations use the images every input has
    a = _emb(noisy(0.1)[:12], "image_id", image_id=img[:12], class_id=cls[:12])
    t = _emb(
        np.repeat(noisy(0.1), 2, axis=0),
        "caption_id",
        caption_id=[f"{x}#{k}" for x in img for k in range(2)],
        image_id=np.repeat(img, 2),
        class_id=np.repeat(cls, 2),
    )
    table = zero_shot_table(
        {"I": i, "A": a, "T": t}, ["I", "A", "T", "I+A", "I+A+T"], {"C": (np.array(["0", "1", "2", "3"]), centres)}
    )
    assert set(table) == {"I", "A", "T", "I+A", "I+A+T"}
    assert all(v["C"] == 100.0 for v in table.values())  # planted structure: every input finds its class
    assert len(combine_inputs({"I": i, "A": a}, ["I", "A"])[0]) == 12


def test_errors_are_user_errors():
    i = _emb([[1.0, 0.0]], "image_id", image_id=["x"], class_id=["9"])
    with pytest.raises(UserError, match="no output class vector"):
        zero_shot_t1({"I": i}, ["I"], np.array(["0", "1"]), torch.eye(2))
    with pytest.raises(UserError, match="not among the run's embeddings"):
        zero_shot_t1({"I": i}, ["A"], np.array(["9"]), torch.eye(2)[:1])


def test_per_caption_is_the_default_and_per_image_averages():
    """Table 4's protocol: every caption is classified on its own. Image "a" has three captions, two of them
    pointing at the wrong class: per caption T1 counts each (class 0: 1/3 right); per image the average of the
    three normalised captions still points at class 0 (1/1 right)."""
    t = _emb(
        [[1.0, 0.0], [0.45, 0.55], [0.45, 0.55], [0.0, 1.0]],
        "caption_id",
        caption_id=["a#0", "a#1", "a#2", "b#0"],
        image_id=["a", "a", "a", "b"],
        class_id=["0", "0", "0", "1"],
    )
    i = _emb([[1.0, 0.0], [0.0, 1.0]], "image_id", image_id=["a", "b"], class_id=["0", "1"])
    classes, centres = np.array(["0", "1"]), torch.eye(2)
    embs = {"T": t, "I": i}
    assert zero_shot_t1(embs, ["T"], classes, centres) == pytest.approx(100 * (1 / 3 + 1) / 2)
    assert zero_shot_t1(embs, ["T"], classes, centres, per="image") == 100.0
    # with T in a combination, the samples are still the captions, each joined with its own image's I
    cls, x = combine_inputs(embs, ["I", "T"])
    assert cls.tolist() == ["0", "0", "0", "1"] and x.shape == (4, 2)
    manual = F.normalize((F.normalize(torch.tensor([0.45, 0.55]), dim=0) + torch.tensor([1.0, 0.0])) / 2, dim=0)
    assert torch.allclose(x[1], manual, atol=1e-6)
    # inputs that are all per image give the same samples either way
    assert torch.equal(combine_inputs(embs, ["I"])[1], combine_inputs(embs, ["I"], per="image")[1])
    table = zero_shot_table(embs, ["T", "I+T"], {"C": (classes, centres)}, per="image")
    assert table["T"]["C"] == 100.0
    with pytest.raises(UserError, match="per='frame' unknown"):
        combine_inputs(embs, ["T"], per="frame")
