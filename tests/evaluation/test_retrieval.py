"""Positives from id columns, all directions against explicit loops, blocked vs dense, enrichment."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pcmpipe.errors import UserError
from pcmpipe.evaluation import retrieval
from pcmpipe.evaluation.retrieval import (
    evaluate_directions,
    infer_key,
    positives_between,
    unique_rows,
)

# A tiny CUB-like set: 6 images in 3 classes, 2 captions per image, one class vector per class.
IMAGES = ["11", "12", "21", "22", "31", "32"]
IMAGE_CLASS = {"11": "1", "12": "1", "21": "2", "22": "2", "31": "3", "32": "3"}
CAPTIONS = [f"{i}#{n}" for i in IMAGES for n in range(2)]


def _cols():
    s = lambda v: np.array(v, dtype=str)  # noqa: E731
    cap_img = [c.split("#")[0] for c in CAPTIONS]
    return {
        "I": {"id": s(IMAGES), "image_id": s(IMAGES), "class_id": s([IMAGE_CLASS[i] for i in IMAGES])},
        "T": {
            "id": s(CAPTIONS),
            "caption_id": s(CAPTIONS),
            "image_id": s(cap_img),
            "class_id": s([IMAGE_CLASS[i] for i in cap_img]),
        },
        "S": {"id": s(CAPTIONS), "caption_id": s(CAPTIONS), "image_id": s(cap_img)},
        "C": {"id": s(["1", "2", "3"]), "class_id": s(["1", "2", "3"])},
    }


KEYS = {"I": "image_id", "T": "caption_id", "S": "caption_id", "C": "class_id"}


def test_instance_positives_use_the_coarser_key():
    cols = _cols()
    it = positives_between(cols["I"], cols["T"], "instance")
    assert it.shape == (6, 12) and it.dtype == bool
    assert (it.sum(1) == 2).all() and (it.sum(0) == 1).all()  # 2 captions per image, 1 image per caption
    assert it[0, 0] and it[0, 1] and not it[0, 2]
    assert np.array_equal(positives_between(cols["T"], cols["I"], "instance"), it.T)
    assert np.array_equal(positives_between(cols["T"], cols["S"], "instance"), np.eye(12, dtype=bool))
    tc = positives_between(cols["T"], cols["C"], "instance")  # T vs C: class_id
    assert (tc.sum(1) == 1).all() and tc[0, 0] and tc[4, 1] and tc[11, 2]
    # class level: same class, whatever the instance
    ii = positives_between(cols["I"], cols["I"], "class")
    assert ii.sum() == 3 * 4 and ii[0, 1] and not ii[0, 2]


def test_key_inference_and_key_only_in_id():
    cols = _cols()
    assert [infer_key(cols[m]) for m in "ITSC"] == [KEYS[m] for m in "ITSC"]
    # a cache whose key is `id` itself (no separate key column) still matches through `id`
    c_bare = {"id": cols["C"]["id"]}
    assert infer_key(c_bare) == "id"
    tc = positives_between(cols["T"], c_bare, "instance", q_key="caption_id", g_key="class_id")
    assert np.array_equal(tc, positives_between(cols["T"], cols["C"], "instance"))


def test_user_errors_for_undefined_levels():
    cols = _cols()
    with pytest.raises(UserError, match="class_id"):
        positives_between(cols["S"], cols["I"], "class")
    with pytest.raises(UserError, match="--match class"):
        positives_between(cols["S"], cols["C"], "instance")  # speech rows carry no class_id
    with pytest.raises(UserError, match="match level"):
        positives_between(cols["I"], cols["T"], "speaker")
    with pytest.raises(UserError, match="image-level matching needs a image_id column"):
        positives_between(cols["T"], cols["C"], "image")


def test_image_level_matches_any_caption_of_the_image_and_is_scored_where_it_differs():
    cols = _cols()
    ts = positives_between(cols["T"], cols["S"], "image")  # 2 captions per image: each its own and its sibling
    assert (ts.sum(1) == 2).all() and ts[0, 0] and ts[0, 1] and not ts[0, 2]
    assert (ts & np.eye(12, dtype=bool)).sum() == 12  # every caption-level positive is one at image level
    for x, y in (("I", "T"), ("T", "I"), ("I", "S")):  # an image's captions match it at either level
        assert np.array_equal(
            positives_between(cols[x], cols[y], "image"), positives_between(cols[x], cols[y], "instance")
        )
    levels = lambda ms: retrieval.levels_for({m: cols[m] for m in ms}, {m: KEYS[m] for m in ms})  # noqa: E731
    assert levels("ITS") == levels("TS") == ["instance", "image"]  # Flickr8k: T and S are finer than the image
    assert levels("IT") == ["instance", "class"] and levels("ITC") == ["instance", "class"]  # CUB: T alone is finer
    assert levels("IS") == ["instance"]
    emb = {m: e for m, e in _planted(noise=0.05).items() if m in "ITS"}
    at = {lv: evaluate_directions(emb, {m: cols[m] for m in emb}, KEYS, level=lv) for lv in ("instance", "image")}
    assert at["image"]["I->T"] == at["instance"]["I->T"] and at["image"]["S->I"] == at["instance"]["S->I"]
    # planted by image only: the sibling caption is as close as the own one, so only image level finds them all
    assert at["image"]["T->S"]["r@1"] == 100.0 > at["instance"]["T->S"]["r@1"]


def _planted(seed=0, noise=0.6, D=16):
    """Embeddings around one random centre per image (captions and speech near their image)."""
    g = torch.Generator().manual_seed(seed)
    centre = {i: torch.randn(D, generator=g) for i in IMAGES}
    klass = {c: torch.randn(D, generator=g) for c in "123"}
    n = lambda: noise * torch.randn(D, generator=g)  # noqa: E731
    emb = {
        "I": torch.stack([centre[i] + n() for i in IMAGES]),
        "T": torch.stack([centre[c.split("#")[0]] + n() for c in CAPTIONS]),
        "S": torch.stack([centre[c.split("#")[0]] + n() for c in CAPTIONS]),
        "C": torch.stack([klass[c] + 0.5 * sum(centre[i] for i in IMAGES if IMAGE_CLASS[i] == c) for c in "123"]),
    }
    return emb


def _loop_direction(q, g, pos, ks):
    """Plain loops: cosine, rank by (-sim, index), queries without positives skipped."""
    q, g = F.normalize(q.double(), dim=-1), F.normalize(g.double(), dim=-1)
    hits, rps = {k: 0 for k in ks}, []
    for a in range(q.shape[0]):
        sims = [float(q[a] @ g[b]) for b in range(g.shape[0])]
        ranked = sorted(range(len(sims)), key=lambda b: (-sims[b], b))
        r = int(pos[a].sum())
        for k in ks:
            hits[k] += any(pos[a][b] for b in ranked[:k])
        rps.append(sum(pos[a][b] for b in ranked[:r]) / r)
    n = q.shape[0]
    return {**{f"r@{k}": 100 * hits[k] / n for k in ks}, "R-P": 100 * float(np.mean(rps))}


@pytest.mark.parametrize("level", ["instance", "class"])
def test_evaluate_directions_matches_loops(level):
    emb = {m: e for m, e in _planted().items() if m in "ITC"}
    cols = {m: _cols()[m] for m in emb}
    out = evaluate_directions(emb, cols, KEYS, level=level, ks=(1, 2))
    for x in emb:
        for y in emb:
            if x == y:
                continue
            pos = positives_between(cols[x], cols[y], level)
            ref = _loop_direction(emb[x], emb[y], pos, (1, 2))
            assert set(out[f"{x}->{y}"]) == {"r@1", "r@2", "R-P"}
            for k, v in ref.items():
                assert abs(out[f"{x}->{y}"][k] - v) < 1e-9, (x, y, k)
    for pair in ("I+T", "I+C", "T+C"):
        x, y = pair.split("+")
        assert out[pair]["r@1"] == pytest.approx((out[f"{x}->{y}"]["r@1"] + out[f"{y}->{x}"]["r@1"]) / 2)
    six = [out[d]["R-P"] for d in ("I->T", "T->I", "I->C", "C->I", "T->C", "C->T")]
    assert out["mean"]["R-P"] == pytest.approx(float(np.mean(six)))
    assert set(out) == {"I->T", "T->I", "I->C", "C->I", "T->C", "C->T", "I+T", "I+C", "T+C", "mean"}


def test_planted_structure_is_found_and_noise_is_not():
    emb = {m: e for m, e in _planted(noise=0.05).items() if m in "ITS"}
    cols = {m: _cols()[m] for m in emb}
    out = evaluate_directions(emb, cols, KEYS)
    assert out["I->T"]["r@1"] == 100.0 and out["T->I"]["r@1"] == 100.0 and out["I->T"]["R-P"] == 100.0
    g = torch.Generator().manual_seed(1)
    rand = {m: torch.randn(e.shape, generator=g) for m, e in emb.items()}
    assert evaluate_directions(rand, cols, KEYS)["mean"]["r@1"] < 60.0


def test_repeated_rows_count_once():
    emb = {m: e for m, e in _planted().items() if m in "IT"}
    cols = {m: _cols()[m] for m in emb}
    base = evaluate_directions(emb, cols, KEYS)
    # the training join repeats every image once per caption
    idx = np.repeat(np.arange(6), 2)
    emb_rep = {"I": emb["I"][torch.as_tensor(idx)], "T": emb["T"]}
    cols_rep = {"I": {k: v[idx] for k, v in cols["I"].items()}, "T": cols["T"]}
    assert evaluate_directions(emb_rep, cols_rep, KEYS) == base
    e, c = unique_rows(emb_rep["I"], cols_rep["I"], "image_id")
    assert torch.equal(e, emb["I"]) and list(c["id"]) == IMAGES


@pytest.mark.parametrize("mods,level", [("ITS", "instance"), ("ITC", "instance"), ("ITC", "class")])
def test_blocked_path_gives_the_same_numbers(monkeypatch, mods, level):
    emb = {m: e for m, e in _planted(noise=1.0).items() if m in mods}
    cols = {m: _cols()[m] for m in mods}
    dense = evaluate_directions(emb, cols, KEYS, level=level, ks=(1, 5))
    monkeypatch.setattr(retrieval, "DENSE_LIMIT", 0)  # force the blocked path everywhere
    blocked = evaluate_directions(emb, cols, KEYS, level=level, ks=(1, 5), block=4)
    assert dense.keys() == blocked.keys()
    for name in dense:
        for k in dense[name]:
            assert abs(dense[name][k] - blocked[name][k]) < 1e-9, (name, k)


def test_direction_without_positives_is_a_user_error():
    cols = _cols()
    other = {k: np.array([f"x{v}" for v in vals]) for k, vals in cols["I"].items()}  # another split's images
    emb = _planted()
    with pytest.raises(UserError, match="no I row"):
        evaluate_directions({"I": emb["I"], "T": emb["T"]}, {"I": other, "T": cols["T"]}, KEYS)
