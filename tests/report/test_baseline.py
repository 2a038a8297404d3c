"""The "frozen backbone, no heads" row: raw-feature retrieval where two modalities share one space (CLIP's
image and text towers), nothing where they do not (a HuBERT cache beside them)."""

from __future__ import annotations

import numpy as np

from pcmpipe.report.baseline import BASELINE_LABEL, frozen_backbone_metrics, space_of
from pcmpipe.report.builders import build_table
from pcmpipe.report.display import display_rows
from pcmpipe.report.results import load_runs
from tests.report.test_report import write_run
from tests.synthetic_cache import write_modality


def _caches(root, text_weights="w0"):
    rng = np.random.default_rng(0)
    images = [f"im{k}" for k in range(12)]
    feats = rng.standard_normal((12, 8))
    caps = [f"{i}#{c}" for i in images for c in range(2)]
    cap_feats = np.repeat(feats, 2, axis=0) + 0.05 * rng.standard_normal((24, 8))  # near their own image
    tower = {"weights": "w0"}
    by_image = {"image_id": [c.split("#")[0] for c in caps]}
    write_modality(root, "mini", "I", "test", key="image_id", links={}, ids=images, features=feats,
                   meta={"backbone": "clip-vit-b32-image", **tower})  # fmt: skip
    text = {"backbone": "clip-vit-b32-text", "weights": text_weights}
    write_modality(root, "mini", "T", "test", key="caption_id", links=by_image, ids=caps, features=cap_feats,
                   meta=text)  # fmt: skip
    write_modality(root, "mini", "S", "test", key="caption_id", links=by_image,
                   ids=caps, features=cap_feats, meta={"backbone": "hubert-base", "weights": "w0"})  # fmt: skip


def test_the_row_scores_the_shared_space_only(tmp_path):
    cache = tmp_path / "cache"
    _caches(cache)
    runs_root = cache / "runs"
    cfg = {"dataset": "mini", "modalities": ["I", "T", "S"], "cache_root": str(cache)}
    write_run(runs_root, "r", cfg, {d: {"r@1": 50.0} for d in ("I->T", "T->I", "I->S", "T->S")})
    runs = load_runs(runs_root)
    layout = {"kind": "directions", "title": "t", "metrics": ["r@1"], "columns": ["I->T", "T->I", "I->S", "T->S"],
              "rows": [{"label": "ours", "run": "r"}]}  # fmt: skip
    table = build_table(layout, runs)
    base = table.rows[-1]
    assert (base.label, base.kind) == (BASELINE_LABEL, "baseline")
    assert [c.ours for c in base.cells] == [100.0, 100.0, None, None]  # S is HuBERT: no cosine across spaces
    assert display_rows(table)[-1] == ("baseline", BASELINE_LABEL, ["100.0", "100.0", "—", "—"])
    pairs = build_table({**layout, "kind": "pair_average", "columns": ["I+T", "I+S"]}, runs)
    assert [c.ours for c in pairs.rows[-1].cells] == [100.0, None]
    assert space_of({"backbone": "clip-vit-b32-image", "weights": "openai"}) == ("clip-vit-b32", "openai")


def test_no_row_when_the_towers_carry_other_weights(tmp_path):
    cache = tmp_path / "cache"
    _caches(cache, text_weights="fine-tuned")
    assert frozen_backbone_metrics(str(cache), "mini", ("I", "S", "T"), "instance") == {}
    runs_root = cache / "runs"
    write_run(runs_root, "r", {"dataset": "mini", "modalities": ["I", "T"]}, {"I->T": {"r@1": 50.0}})
    layout = {"kind": "directions", "title": "t", "metrics": ["r@1"], "columns": ["I->T"],
              "rows": [{"label": "ours", "run": "r"}]}  # fmt: skip
    assert [r.kind for r in build_table(layout, load_runs(runs_root)).rows] == ["run"]
