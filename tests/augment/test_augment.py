"""Augmentation: EDA operations, the offline WordNet synonym table, timm's image transform."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from pcmpipe.augment import EDA, SeededImageTransform, image_train_transform, sample_seed
from pcmpipe.augment import synonyms as syn
from pcmpipe.augment.text_eda import (
    STOP_WORDS,
    clean,
    random_deletion,
    random_insertion,
    random_swap,
    synonym_replacement,
)

CAPTION = "This bird has a small, pointed red beak; its wings are black with white spots."
WORDS = clean(CAPTION).split(" ")


# ---- synonyms (WordNet 3.0 table shipped as package data) ----


def test_synonyms_known_words():
    # values printed by nltk 3.10 (nltk.corpus.wordnet on WordNet 3.0) through EDA's get_synonyms
    assert syn.synonyms("bird") == [
        "birdie",
        "birdwatch",
        "boo",
        "bronx cheer",
        "chick",
        "dame",
        "doll",
        "fowl",
        "hiss",
        "hoot",
        "raspberry",
        "razz",
        "razzing",
        "shuttle",
        "shuttlecock",
        "skirt",
        "snort",
        "wench",
    ]
    assert syn.synonyms("wrens") == ["jenny wren", "sir christopher wren", "wren"]
    assert "large" in syn.synonyms("big") and "big" not in syn.synonyms("big")
    assert syn.synonyms("qzxv") == []


def test_morphy_inflections_and_exceptions():
    assert syn.morphy("birds", "n") == ["bird"]  # detachment rule s -> ''
    assert syn.morphy("geese", "n") == ["goose"]  # noun.exc
    assert "fly" in syn.morphy("flies", "v") and "fly" in syn.morphy("flying", "v")
    assert syn.morphy("went", "v") == ["go"]  # verb.exc replaces the rules
    # inflected words give their base form as a synonym, exactly as NLTK's synsets() does
    assert "goose" in syn.synonyms("geese")
    assert "wren" in syn.synonyms("wrens")


def test_table_rebuilds_from_wordnet_and_license_ships(tmp_path):
    from importlib import resources

    data = resources.files("pcmpipe") / "data"
    assert "Princeton University" in (data / "WORDNET_LICENSE.txt").read_text("utf-8")
    header = (data / syn.SYNONYM_FILE).read_text("utf-8").splitlines()[0]
    assert "WordNet 3.0" in header
    wordnet = tmp_path / "dict"
    wordnet.mkdir()
    # a two-synset miniature WordNet in the real data-file format
    (wordnet / "data.noun").write_text(
        "  1 license header line\n"
        "00001 05 n 02 bird 0 Fowl 0 000 | a warm-blooded egg-laying vertebrate\n"
        "00002 05 n 01 wren 0 000 | a small bird\n",
        "latin-1",
    )
    (wordnet / "data.adj").write_text("00003 00 s 02 big(a) 0 large 0 000 | above average\n", "latin-1")
    for name in ("verb", "adv"):
        (wordnet / f"data.{name}").write_text("", "latin-1")
    (wordnet / "noun.exc").write_text("geese goose\n", "latin-1")
    for name in ("verb", "adj", "adv"):
        (wordnet / f"{name}.exc").write_text("", "latin-1")
    assert syn.build_tables(wordnet, tmp_path / "out") == (3, 1)
    lines = (tmp_path / "out" / syn.SYNONYM_FILE).read_text("utf-8").splitlines()[2:]
    assert lines == ["n bird fowl", "a big large", "n wren"]


# ---- EDA operations ----


def test_clean_matches_eda():
    assert clean("A Bird's  wing-tip,\tred!") == "a birds wing tip red "
    assert WORDS[0] == "this" and all(w.isalpha() for w in WORDS if w)


def test_swap_keeps_multiset_and_changes_order():
    words = [w for w in WORDS if w]
    out = random_swap(words, 2, random.Random(0))
    assert Counter(out) == Counter(words) and out != words


def test_deletion_drops_words_and_keeps_at_least_one():
    words = [w for w in WORDS if w]
    out = random_deletion(words, 0.3, random.Random(1))
    assert 1 <= len(out) < len(words)
    it = iter(words)
    assert all(w in it for w in out)  # an ordered subsequence
    for seed in range(20):  # p = 1 deletes everything, EDA then keeps one random word
        assert len(random_deletion(words, 1.0, random.Random(seed))) == 1
    assert random_deletion(["bird"], 1.0, random.Random(0)) == ["bird"]


def test_synonym_replacement_replaces_only_content_words():
    words = [w for w in WORDS if w]
    out = synonym_replacement(words, 1, random.Random(3))
    changed = [w for w in words if w not in out]
    assert len(changed) == 1 and changed[0] not in STOP_WORDS
    new = " ".join(w for w in out if w not in words)
    assert new in syn.synonyms(changed[0])


def test_random_insertion_adds_a_synonym():
    words = [w for w in WORDS if w]
    out = random_insertion(words, 2, random.Random(4))
    assert len(out) == len(words) + 2
    added = list((Counter(out) - Counter(words)).elements())
    assert all(any(a == s for w in words for s in syn.synonyms(w)) for a in added)
    assert random_insertion(["qzxv"], 1, random.Random(0)) == ["qzxv"]  # gives up after 10 tries


def test_eda_is_deterministic_per_seed_and_varies_across_seeds():
    eda = EDA(alpha=0.1)
    outs = [eda(CAPTION, s) for s in range(40)]
    assert outs == [eda(CAPTION, s) for s in range(40)]
    assert len(set(outs)) > 10
    assert all(o == clean(o) and o for o in outs)
    # the op is drawn uniformly from the four: each appears in 40 draws
    ops = [random.Random(s).choice(eda.ops) for s in range(40)]
    assert set(ops) == {"sr", "ri", "rs", "rd"}
    assert EDA(ops=("rs",))(CAPTION, 7).split() != WORDS and sorted(EDA(ops=("rs",))(CAPTION, 7).split()) == sorted(
        w for w in WORDS if w
    )


def test_eda_leaves_uncleanable_text_and_validates():
    assert EDA()("!!!", 0) == "!!!"
    with pytest.raises(ValueError):
        EDA(ops=("xx",))
    with pytest.raises(ValueError):
        EDA(alpha=2.0)


def test_eda_n_scales_with_alpha():
    long = " ".join(["bird"] * 40)
    out = EDA(alpha=0.1, ops=("ri",))(long, 0).split()
    assert len(out) == 44  # n = int(0.1 * 40) insertions


# ---- images ----


def _image(seed=0, h=300, w=260):
    return Image.fromarray((np.random.RandomState(seed).rand(h, w, 3) * 255).astype("uint8"))


def test_image_transform_shape_dtype_and_normalisation():
    t = image_train_transform(224)
    names = [type(x).__name__ for x in t.transforms]
    assert names[0].startswith("RandomResizedCrop") and "RandomHorizontalFlip" in names and "ColorJitter" in names
    x = t(_image())
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    assert torch.allclose(t.transforms[-1].mean, torch.tensor([0.48145466, 0.4578275, 0.40821073]))


def test_seeded_image_transform_is_reproducible_and_leaves_global_rng():
    st = SeededImageTransform(image_train_transform(64))
    img = _image(1, 90, 120).convert("L")  # grey input becomes 3 channels
    torch.manual_seed(123)
    random.seed(123)
    before = (torch.rand(1), random.random())
    torch.manual_seed(123)
    random.seed(123)
    a = st(img, 5)
    after = (torch.rand(1), random.random())
    assert before == after  # global generators untouched
    assert torch.equal(a, st(img, 5)) and not torch.equal(a, st(img, 6))
    assert a.shape == (3, 64, 64)


def test_sample_seed_is_stable_and_distinct():
    seeds = {sample_seed(0, e, i) for e in range(3) for i in range(1000)}
    assert len(seeds) == 3000 and sample_seed(7, 1, 2) == sample_seed(7, 1, 2)
    assert all(0 <= s < 2**63 for s in seeds)
