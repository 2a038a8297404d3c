"""The report's recipe lines: only settings equal to the paper's text are called its recipe; every reading and
departure is named once, with its reason and where docs/conventions.md explains it."""

from __future__ import annotations

from pathlib import Path

from pcmpipe.config import FinetuneConfig, TrainConfig
from pcmpipe.config.paper_recipe import CHOICES, PAPER_SETTINGS
from pcmpipe.report.recipe import recipe_lines, seed_line
from pcmpipe.report.results import RunResult

ROOT = Path(__file__).resolve().parents[2]


def _run(name: str, **settings) -> RunResult:
    kind = FinetuneConfig if "data_root" in settings else TrainConfig
    cfg = kind.from_dict({"dataset": "cub", "modalities": ["I", "T", "A", "C"], "match": "class", **settings})
    return RunResult(name=name, directory=Path(name), config=cfg.resolved().to_dict(), meta={})


def _lines(runs, evaluations=None) -> dict[str, str]:
    out = {}
    for line in recipe_lines(runs, evaluations):
        head = line.split(" = ")[0] if " = " in line else line.split(":")[0]
        out[head] = line
    return out


def test_defaults_are_readings_and_departures_not_the_papers_recipe():
    runs = [_run("c", loss="pcmc"), _run("r", loss="pcmr")]
    lines = _lines(runs, [{"kind": "zeroshot", "run": "c"}])
    recipe = lines["the paper's recipe (its text, Sec. 4) in every run"]
    assert recipe.endswith(": lr 0.0001, weight_decay 0.2, epochs 50, patience 5, dim 256, rho 1, threshold 0.99, "
                           "batch_size as the paper")  # fmt: skip
    assert "standardize" not in recipe and "rho_on" not in recipe and "target" not in recipe
    # readings: PCMR's Eq. 6 / 7 for the PCMR run only, per-caption zero-shot, class-level CUB
    assert lines["reading: rho_on"].startswith("reading: rho_on = entries (1 of 2 runs): per entry")
    assert lines["reading: target"].startswith("reading: target = shared (1 of 2 runs)")
    assert lines["reading: zero-shot T"].startswith("reading: zero-shot T = per caption (1 of 2 runs)")
    assert lines["reading: CUB match level"].startswith("reading: CUB match level = class (2 of 2 runs)")
    # departures: centring, cached views, AdamW, the learned temperature (PCMC only)
    assert lines["departure: standardize"].startswith("departure: standardize = center (2 of 2 runs)")
    assert lines["departure: augmentation"].startswith("departure: augmentation = none: features cached once")
    assert lines["departure: optimiser"].startswith("departure: optimiser = AdamW (2 of 2 runs)")
    assert lines["departure: logit_scale"].startswith("departure: logit_scale = learnable (1 of 2 runs)")
    for line in recipe_lines(runs, [{"kind": "zeroshot", "run": "c"}])[1:]:
        assert "docs/" in line and "(paper: " in line and not line.startswith("changed")
    readings = [k for k in lines if k.startswith("reading")]
    assert readings == sorted(readings, key=lambda k: list(lines).index(k))  # readings first, then departures
    assert list(lines).index("reading: CUB match level") < list(lines).index("departure: standardize")


def test_the_literal_text_is_the_papers_recipe_and_a_change_is_named():
    run = _run("p", loss="pcmr", lr=1e-3, **PAPER_SETTINGS)
    lines = recipe_lines([run])
    assert "standardize none" in lines[0] and "rho_on norm" in lines[0] and "target projections" in lines[0]
    assert not any(line.startswith(("reading: rho_on", "reading: target", "departure: standardize")) for line in lines)
    assert "changed from the paper's recipe: lr = 0.001 (paper 0.0001) (1 of 1 runs)" in lines
    assert "lr 0.0001" not in lines[0]


def test_fine_tuned_runs_augment_live_and_take_the_backbone_rate_from_the_text():
    run = _run("f", data_root="data/cub", loss="pcmc")
    lines = recipe_lines([run])
    assert "backbone_lr 1e-06" in lines[0]
    assert not any(line.startswith("departure: augmentation") for line in lines)  # timm / EDA every step


def test_docs_reproducing_lists_every_choice_the_report_names():
    text = (ROOT / "docs" / "reproducing.md").read_text()
    section = text[text.index("## Where pcmpipe still differs from the paper") :]
    for choice in CHOICES:
        assert f"**{choice.kind.capitalize()}: {choice.name}**" in section, choice.name


def test_seeds_and_cached_views_are_stated_once_not_as_changes_from_the_paper():
    """The paper gives no seed, so seed 1 departs from nothing: the seeds line states the seeds. A run without
    its cache's views is named by the augmentation departure, not again as a changed setting."""
    runs = [_run("a"), _run("b", seed=1), _run("c", seed=2, cached_views=False)]
    lines = recipe_lines(runs)
    assert not any(line.startswith("changed from the paper's recipe") for line in lines), lines
    assert not any("seed" in line or "cached_views" in line for line in lines), lines
    assert seed_line(runs).startswith("seeds: 1-2 per setting (2 settings, 3 runs; seed values 0, 1, 2)")
