"""The paper's recipe as its text states it (Sec. 3-4), and where pcmpipe's defaults read or depart from it.

`PAPER_TEXT` holds the settings the paper gives a value for; `CHOICES` every place where pcmpipe's default is
not that text: a *reading* interprets a passage the paper leaves ambiguous, a *departure* does something the
text does not say. The report lists both (pcmpipe.report.recipe), docs/reproducing.md explains each, and
`pcmpipe run --recipe paper` (or `recipe: paper` in a pipeline file) trains with `PAPER_SETTINGS`, the literal
text of every choice that is a setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

RECIPES = ("ours", "paper")
Recipe = Literal["ours", "paper"]

# Sec. 4, "Model design and training strategy" (batch size: 80 Flickr8k, 128 CUB, see DATASET_BATCH_SIZE)
PAPER_TEXT: dict[str, Any] = {
    "lr": 1e-4,
    "backbone_lr": 1e-6,
    "weight_decay": 0.2,
    "epochs": 50,
    "patience": 5,
    "dim": 256,
    "rho": 1.0,
    "threshold": 0.99,
}


@dataclass(frozen=True)
class Choice:
    """One place where pcmpipe's default is not the paper's text."""

    name: str  # the setting (a config key) or, for what is not a setting, what it is about
    kind: Literal["reading", "departure"]
    paper: str  # what the paper's text says, in a few words
    reason: str  # one line: why pcmpipe does otherwise
    see: str  # where docs/conventions.md explains it
    literal: Any = None  # the setting's value under the literal text (`--recipe paper`); None: not a setting


CONVENTIONS = "docs/conventions.md"
CHOICES: tuple[Choice, ...] = (
    Choice(
        "rho_on",
        "reading",
        "Eq. 6 raises the Frobenius norm to 2 + rho (norm)",
        "per entry, as in its ref. [21]: only then does rho balance matching and non-matching pairs as Sec. 3.1 says",
        f'{CONVENTIONS}, "PCMR power factor: entries, not the norm"',
        literal="norm",
    ),
    Choice(
        "target",
        "reading",
        "Eq. 7 marks a shared view where a cosine exceeds t = 0.99 (projections)",
        "the same cached row, the paper's own example: a cosine threshold merges distinct samples on anisotropic "
        "features",
        f'{CONVENTIONS}, "PCMR (Eq. 6, 7, 9)"',
        literal="projections",
    ),
    Choice(
        "zero-shot T",
        "reading",
        "Table 4 does not say whether T is one caption or an image's captions averaged",
        "per caption: Table 4's T->C (34.5) equals Table 7's per-caption T->C r@1 (34.6)",
        f'{CONVENTIONS}, "Zero-shot (Table 4): per-caption T"',
    ),
    Choice(
        "CUB match level",
        "reading",
        "the note under Table 6 reads as instance level; Sec. 4.4 calls CUB r@1 class-level",
        "class level, as Sec. 4.4 and PCME's protocol, whose numbers Table 2 compares with, score it",
        f'{CONVENTIONS}, "Directions, match levels, means"',
    ),
    Choice(
        "Flickr8k T<->S match level",
        "reading",
        "no level is named for T<->S and Table 5's I+S cells: the same caption, or any caption of the image",
        "the same caption (instance level), which early stopping uses; Tables 1 and 5 show image level beside it",
        f'{CONVENTIONS}, "Directions, match levels, means"',
    ),
    Choice(
        "standardize",
        "departure",
        "backbone features go to the heads as they are (none)",
        "minus the train mean: removes the component anisotropic features share, which otherwise swamps both losses",
        f'{CONVENTIONS}, "Input standardisation"',
        literal="none",
    ),
    Choice(
        "augmentation",
        "departure",
        "fresh timm / EDA augmentation at every step, in all cases",
        "runs on cached features draw one of K augmented views cached once (none: clean features only)",
        f'{CONVENTIONS}, "Augmented views for cached runs"',
    ),
    Choice(
        "optimiser",
        "departure",
        '"the Adam optimizer" with weight decay 0.2',
        "AdamW (decoupled decay) on weight matrices only, as CLIP trains; the paper does not say its decay is coupled",
        "docs/training.md",
    ),
    Choice(
        "logit_scale",
        "departure",
        "tau fixed or learned (Eq. 5), value not given",
        "learned, from CLIP's 1/0.07 and clamped at 100 as CLIP does",
        f'{CONVENTIONS}, "PCMC (Eq. 3-5, 8)"',
    ),
)
CHOICE_BY_NAME = {c.name: c for c in CHOICES}
# the settings `--recipe paper` sets: the literal text of every choice that is a setting
PAPER_SETTINGS: dict[str, Any] = {c.name: c.literal for c in CHOICES if c.literal is not None}


def paper_literal(key: str) -> Any:
    """The value the paper's text gives setting `key`, or None when the text gives none."""
    if key in PAPER_TEXT:
        return PAPER_TEXT[key]
    return PAPER_SETTINGS.get(key)
