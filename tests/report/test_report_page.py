"""The report says what it is and reads as the paper's layouts: date, version, commit, seeds, the settings
changed from the paper's recipe, SYNTHETIC from the data root's marker, Table 5 as the paper's grid, one
learning table, captions under every figure, separate loss axes, Figure 2 (retrieval examples from the
dataset's own images) and Figure 3 (one panel per modality, 50 distinguishable classes).

Run directories are written in the trainer's layout (config.json, test_metrics.json, metrics.jsonl,
embeddings/*.safetensors via rundir.save_embeddings) with chosen numbers and embeddings built from the
synthetic CUB's class labels, so every expectation can be traced to a file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from pcmpipe.datasets import open_dataset
from pcmpipe.report.build import build_report, write_report
from pcmpipe.report.examples import Example, nearest_images, pick
from pcmpipe.report.recipe import recipe_changes, seed_line
from pcmpipe.report.results import load_runs
from pcmpipe.report.tsne import class_styles, robust_limits
from pcmpipe.training.rundir import save_embeddings
from tests.report.test_report import CHROMIUM, chromium_console, write_run

CUB_BLOCKS = {
    "{}->T": ["I", "I+A", "I+C", "I+A+C"],
    "{}->I": ["T", "T+A", "T+C", "T+A+C"],
    "T->{}": ["I", "I+A", "I+C", "I+A+C"],
    "I->{}": ["T", "T+A", "T+C", "T+A+C"],
}
DIRS = ["I->T", "T->I", "I->C", "C->I", "T->C", "C->T"]


def _embed(ds, root_runs: Path, name: str, seed: int = 0) -> None:
    """Test embeddings of I, T, C: T near its class, I further away, C the class direction itself."""
    gen = torch.Generator().manual_seed(seed)
    classes = sorted({r.links["class_id"] for r in ds.records("C", "test")}, key=int)
    proto = torch.randn(len(classes), 16, generator=gen)
    index = {c: k for k, c in enumerate(classes)}
    run = root_runs / name
    for m, noise in (("I", 1.5), ("T", 1.0), ("C", 0.0)):
        recs = ds.records(m, "test")
        cls = [index[r.links["class_id"]] for r in recs]
        emb = proto[cls] + noise * torch.randn(len(recs), 16, generator=gen)
        cols = {
            "id": np.array([r.id for r in recs]),
            **{k: np.array([r.links[k] for r in recs]) for k in recs[0].links},
        }
        save_embeddings(run, m, emb, ds.key(m), cols)


@pytest.fixture(scope="module")
def built(tmp_path_factory, synth_dataset):
    tmp = tmp_path_factory.mktemp("page")
    data = synth_dataset("cub", images=1, seed=2)  # 50 test images, 500 captions
    ds = open_dataset("cub", data)
    runs_root = tmp / "cache" / "runs"
    common = {"dataset": "cub", "modalities": ["I", "T", "C"], "match": "class", "seed": 0, "batch_size": 128}
    metrics = {d: {"r@1": 40.0} for d in DIRS}
    runs = {
        "c-pcmc": {**common, "loss": "pcmc", "lr": 1e-3, "epochs": 3},
        "c-pcmr": {**common, "loss": "pcmr", "lr": 1e-4, "epochs": 3},
    }
    for name, cfg in runs.items():
        d = write_run(
            runs_root,
            name,
            cfg,
            metrics,
            "class",
            untrained={k: {"r@1": 2.0} for k in DIRS},
            chance={k: {"r@1": 2.0} for k in DIRS},
        )
        scale = 1e4 if cfg["loss"] == "pcmr" else 10.0
        (d / "metrics.jsonl").write_text(
            "".join(json.dumps({"epoch": e, "loss": scale / e, "val_mean_r@1": 10.0 * e}) + "\n" for e in (1, 2, 3))
        )
    _embed(ds, runs_root, "c-pcmc")
    enrichment = {b: {c: 10.0 + k + 4 * i for k, c in enumerate(cs)} for i, (b, cs) in enumerate(CUB_BLOCKS.items())}
    (runs_root / "c-pcmc" / "enrichment.json").write_text(json.dumps({"match": "class", "r@1": enrichment}))
    record = {
        "name": "page",
        "title": "Page check",
        "data": {"cub": {"root": str(data), "options": {}}},  # no synthetic flag: the marker must say it
        "runs": {n: {} for n in runs},
        "tables": [
            {"kind": "learning", "title": "Trained vs untrained (pipeline table)", "runs": list(runs)},
            {"kind": "enrichment", "title": "Table 5 grid", "paper": "table5_enrichment_r@1/CUB",
             "run": "c-pcmc", "blocks": CUB_BLOCKS},
            {"kind": "examples", "title": "Figure 2 check", "run": "c-pcmc", "enrich": ["C"]},
            {"kind": "tsne", "title": "Figure 3 check", "run": "c-pcmc", "modalities": ["T", "I", "C"],
             "max_points": 150},
        ],
    }  # fmt: skip
    (runs_root / "_pipelines").mkdir()
    (runs_root / "_pipelines" / "page.json").write_text(json.dumps(record))
    report = build_report(runs_root)
    paths = write_report(report, tmp / "out")
    return {"tmp": tmp, "report": report, "paths": paths, "runs_root": runs_root, "ds": ds, "enrichment": enrichment}


def test_recipe_changes_come_from_the_recorded_configs(built):
    runs = load_runs(built["runs_root"])
    changes = recipe_changes(list(runs.values()))
    assert changes["lr"] == {"0.001 (paper 0.0001)": ["c-pcmc"]}  # c-pcmr keeps the paper's 1e-4: not listed
    assert changes["epochs"] == {"3 (paper 50)": ["c-pcmc", "c-pcmr"]}
    assert "batch_size" not in changes and "seed" not in changes  # 128 is CUB's recipe value
    assert set(changes["augmentation"].popitem()[1]) == {"c-pcmc", "c-pcmr"}  # cached features: no augmentation
    two = [runs["c-pcmc"], runs["c-pcmc"]]
    two[1] = type(two[0])(**{**two[0].__dict__, "config": {**two[0].config, "seed": 1}})
    assert seed_line(two).startswith("seeds: 2 per setting (1 settings, 2 runs; seed values 0, 1)")


def test_table5_is_the_papers_grid(built):
    sec = built["report"].sections[0]
    table = next(t for t in sec.tables if t.title == "Table 5 grid")
    assert table.columns == ["alone", "+A", "+C", "+A+C"]
    ours = [r for r in table.rows if r.kind == "run"]
    assert [r.label.split()[0] for r in ours] == list(CUB_BLOCKS)
    for row, (block, combos) in zip(ours, CUB_BLOCKS.items()):
        assert [c.ours for c in row.cells] == [built["enrichment"][block][c] for c in combos]
    assert ours[1].cells[2].paper == 79.3  # T+C -> I in the paper's Table 5
    assert all(n.endswith(("embeddings", "averaged in")) for n in table.notes)  # no sentence cut short


def test_figure2_retrievals_follow_the_embeddings(built):
    runs = load_runs(built["runs_root"])
    found, level = nearest_images(runs["c-pcmc"], "T", "I", ["C"])
    assert level == "class" and len(found) == 500
    # brute force from the files: nearest image to the caption alone and to mean(caption, its class)
    from pcmpipe.training.rundir import load_embeddings

    embs = load_embeddings(runs["c-pcmc"].directory)
    norm = torch.nn.functional.normalize
    t, i, c = (norm(embs[m].embedding, dim=-1) for m in "TIC")
    cls_row = {v: k for k, v in enumerate(embs["C"].columns["class_id"].tolist())}
    t_cls = [cls_row[v] for v in embs["T"].columns["class_id"].tolist()]
    before = (t @ i.T).argmax(1)
    after = (((t + c[t_cls]) / 2) @ i.T).argmax(1)
    img_ids = embs["I"].columns["image_id"]
    assert [e.before for e in found] == [str(img_ids[k]) for k in before]
    assert [e.after for e in found] == [str(img_ids[k]) for k in after]
    # database enrichment: the same caption queries against mean(image, its class)
    db_found, _ = nearest_images(runs["c-pcmc"], "T", "I", ["C"], side="database")
    i_cls = [cls_row[v] for v in embs["I"].columns["class_id"].tolist()]
    db_after = (t @ norm((i + c[i_cls]) / 2, dim=-1).T).argmax(1)
    assert [e.before for e in db_found] == [str(img_ids[k]) for k in before]
    assert [e.after for e in db_found] == [str(img_ids[k]) for k in db_after]
    fixed = sum(e.right_after and not e.right_before for e in found)
    assert fixed > 0 and sum(e.right_after for e in found) > sum(e.right_before for e in found)
    chosen = pick(found, 4)
    assert all(e.right_after and not e.right_before for e in chosen[: min(4, fixed)])
    assert len({e.image_id for e in chosen}) == len(chosen) == 4
    assert (
        pick([Example("1#0", "1", "2", "1", False, True), Example("0#0", "0", "0", "0", True, True)], 1)[0].caption_id
        == "1#0"
    )


def test_panel_limits_ignore_a_few_outliers():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.standard_normal(400), [80.0, -95.0]])
    lo, hi = robust_limits(values)
    assert -4 < lo < -2 and 2 < hi < 4  # the bulk fills the panel; the two far points are left out


def test_fifty_classes_get_fifty_styles():
    styles = class_styles([str(k) for k in range(1, 51)])
    assert len(set(styles.values())) == 50
    assert styles["2"] != styles["12"]  # tab20 cycling gave class k and k+20 one colour


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium)")
def test_rendered_page_says_what_it_is_without_glitches(built):
    console, dom = chromium_console(built["paths"]["html"], built["tmp"])
    assert console == [], console
    text = re.sub(r"<[^>]+>", " ", dom)
    assert re.search(r"generated \d{4}-\d\d-\d\d \d\d:\d\d UTC by pcmpipe \d+\.\d+\.\d+ \((commit|no git)", text)
    assert "seeds: 1 per setting (2 settings, 2 runs; seed values 0)" in text
    assert "changed from the paper's recipe: lr = 0.001 (paper 0.0001)" in text
    assert "changed from the paper's recipe: epochs = 3 (paper 50) (2 of 2 runs)" in text
    assert "cub: SYNTHETIC data" in text and "data origin not recorded" not in text  # from the marker file
    # the caveat block once: the last section points to it instead of printing it again
    assert text.count("cub: SYNTHETIC data") == 1 and text.count("the paper's recipe (its text") == 1
    assert "as stated there" in text
    # synthetic data: no Δ against the paper, the row says why
    assert "Δ (ours − paper)" not in dom and "no Δ: synthetic data" in text and "n/a" in text
    # abbreviations defined before first use; counts in the right number
    assert text.index("T1: mean per-class top-1 accuracy") < text.index("Page check")
    assert "r@k: recall at k" in text and "R-P: R-precision" in text
    assert "(2 finished runs, 1 pipeline record)" in text
    # the trained-vs-untrained table once (the pipeline's own), not again in the last section
    assert dom.count("<td>trained</td>") + dom.count(">trained</th>") == 1
    assert "each database item is the mean" in text and "the database vectors are</li>" not in dom
    # Table 5: a 4 x 4 grid (+ paper and delta rows), not a 48-row single column
    grid = dom[dom.index("Table 5 grid") :].split("</table>")[0]
    assert grid.count('<tr class="ours">') == 4 and grid.count("<th>+A+C</th>") == 1
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", dom, flags=re.S)
    assert len(captions) == 4 and all(not c.strip().endswith(":") for c in captions), captions  # none empty
    assert any("one loss panel per loss (PCMC, PCMR)" in c for c in captions)
    assert any(c.startswith("Figure 2 check: 500 caption queries") for c in captions)
    assert any("50 classes, each one colour x marker, labelled with its class id" in c for c in captions)
    assert dom.count('alt="Figure 2 check"') == 1 and dom.count('alt="Figure 3 check"') == 1
