"""EDA text augmentation (Wei & Zou, 2019): synonym replacement, random insertion, swap and deletion.

The four operations follow the reference implementation (`eda_nlp/code/eda.py`) step by step, with
two differences that make them reproducible: every random draw comes from a `random.Random` passed in
(never the global generator), and synonym lists are sorted (see `pcmpipe.augment.synonyms`).
For training captions we do what Fini et al. ("Improved baselines for vision-language pre-training")
do with EDA: each caption gets ONE operation drawn at random, with n = max(1, int(alpha * words)) and
deletion probability p = alpha; alpha = 0.1 as in the paper.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from pcmpipe.augment.synonyms import synonyms

# EDA's own stop-word list (eda_nlp/code/eda.py): synonym replacement never touches these words.
STOP_WORDS = frozenset(
    """
i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers
herself it its itself they them their theirs themselves what which who whom this that these those am is
are was were be been being have has had having do does did doing a an the and but if or because as until
while of at by for with about against between into through during before after above below to from up
down in out on off over under again further then once here there when where why how all any both each
few more most other some such no nor not only own same so than too very s t can will just don should now
""".split()
) | {""}

OPS = ("sr", "ri", "rs", "rd")


def clean(text: str) -> str:
    """EDA's `get_only_chars`: lower-case, keep a-z and single spaces, drop apostrophes."""
    text = text.replace("\u2019", "").replace("'", "").replace("-", " ").replace("\t", " ").replace("\n", " ")
    text = "".join(ch if ch in "qwertyuiopasdfghjklzxcvbnm " else " " for ch in text.lower())
    text = re.sub(" +", " ", text)
    return text[1:] if text.startswith(" ") else text


def synonym_replacement(words: list[str], n: int, rng: random.Random) -> list[str]:
    """Replace every occurrence of up to `n` distinct non-stop words by one random synonym each."""
    new_words = list(words)
    # sorted before shuffling: EDA's list(set(...)) order would depend on the hash seed
    candidates = sorted({w for w in words if w not in STOP_WORDS})
    rng.shuffle(candidates)
    replaced = 0
    for word in candidates:
        options = synonyms(word)
        if options:
            choice = rng.choice(options)
            new_words = [choice if w == word else w for w in new_words]
            replaced += 1
        if replaced >= n:
            break
    # a multi-word synonym becomes several words, as in EDA
    return " ".join(new_words).split(" ")


def random_insertion(words: list[str], n: int, rng: random.Random) -> list[str]:
    """Insert, `n` times, a synonym of a random word at a random position (up to 10 tries each)."""
    new_words = list(words)
    for _ in range(n):
        options: list[str] = []
        tries = 0
        while not options:
            options = synonyms(new_words[rng.randint(0, len(new_words) - 1)])
            tries += 1
            if tries >= 10:
                break
        if options:
            new_words.insert(rng.randint(0, len(new_words) - 1), options[0])
    return new_words


def random_swap(words: list[str], n: int, rng: random.Random) -> list[str]:
    """Swap two random positions `n` times (each swap gives up after 3 draws of the same index)."""
    new_words = list(words)
    for _ in range(n):
        i = rng.randint(0, len(new_words) - 1)
        j, tries = i, 0
        while j == i:
            j = rng.randint(0, len(new_words) - 1)
            tries += 1
            if tries > 3:
                break
        new_words[i], new_words[j] = new_words[j], new_words[i]
    return new_words


def random_deletion(words: list[str], p: float, rng: random.Random) -> list[str]:
    """Drop each word with probability `p`; never return an empty sentence (keeps one random word)."""
    if len(words) == 1:
        return list(words)
    kept = [w for w in words if rng.uniform(0, 1) > p]
    return kept if kept else [words[rng.randint(0, len(words) - 1)]]


@dataclass(frozen=True)
class EDA:
    """One random EDA operation per caption. `__call__(text, seed)` is a pure function of its inputs."""

    alpha: float = 0.1
    ops: tuple[str, ...] = field(default=OPS)

    def __post_init__(self) -> None:
        unknown = set(self.ops) - set(OPS)
        if unknown or not self.ops:
            raise ValueError(f"EDA ops must be a non-empty subset of {OPS}, got {self.ops}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"EDA alpha must lie in [0, 1], got {self.alpha}")

    def apply(self, op: str, text: str, rng: random.Random) -> str:
        """Run one named operation on the cleaned words of `text`."""
        words = [w for w in clean(text).split(" ") if w]
        if not words:
            return text  # nothing EDA can work on (e.g. only punctuation): leave the caption alone
        n = max(1, int(self.alpha * len(words)))
        if op == "sr":
            out = synonym_replacement(words, n, rng)
        elif op == "ri":
            out = random_insertion(words, n, rng)
        elif op == "rs":
            out = random_swap(words, n, rng)
        elif op == "rd":
            out = random_deletion(words, self.alpha, rng)
        else:
            raise ValueError(f"unknown EDA op {op!r}")
        return clean(" ".join(out))

    def __call__(self, text: str, seed: int) -> str:
        rng = random.Random(seed)
        return self.apply(rng.choice(self.ops), text, rng)
