"""WordNet synonyms for EDA, offline: a table shipped as package data plus WordNet's own morphy.

Source: Princeton WordNet 3.0 (license in `pcmpipe/data/WORDNET_LICENSE.txt`, which must travel with the
table). `pcmpipe/data/wordnet_synonyms.txt` holds every synset with two or more distinct lemmas, one per
line as `<pos> lemma lemma ...` (pos in n, v, a, r; satellite adjectives folded into `a`, as NLTK does);
`pcmpipe/data/wordnet_exceptions.txt` holds WordNet's irregular-form lists (`<pos> inflected base ...`).
One-lemma synsets are kept once per lemma, and only for lemmas of a-z letters: the table is exact for
every word EDA can look up (EDA's cleaning leaves only a-z words), which a cross-check against NLTK showed.

`synonyms(word)` reproduces EDA's `get_synonyms` (Wei & Zou, built on `nltk.corpus.wordnet.synsets`):
the word is lemmatised per part of speech with morphy, every lemma of every matching synset is
lower-cased, `_` and `-` become spaces, characters other than a-z and space are dropped, and the word
itself is removed. The result is sorted (EDA returns a set's arbitrary order), so choices are seeded-stable.
`build_tables` regenerates both files from a WordNet 3.0 `dict/` folder (Debian: /usr/share/wordnet).
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from pathlib import Path

POS = ("n", "v", "a", "r")

# WordNet's detachment rules (morphy(7WN)), in the order NLTK applies them.
SUBSTITUTIONS: dict[str, list[tuple[str, str]]] = {
    "n": [
        ("s", ""),
        ("ses", "s"),
        ("ves", "f"),
        ("xes", "x"),
        ("zes", "z"),
        ("ches", "ch"),
        ("shes", "sh"),
        ("men", "man"),
        ("ies", "y"),
    ],
    "v": [("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", "")],
    "a": [("er", ""), ("est", ""), ("er", "e"), ("est", "e")],
    "r": [],
}

SYNONYM_FILE = "wordnet_synonyms.txt"
EXCEPTION_FILE = "wordnet_exceptions.txt"
_KEEP = set("qwertyuiopasdfghjklzxcvbnm ")


class _Tables:
    """Parsed package data: synsets, lemma -> synset indices per pos, exceptions per pos."""

    def __init__(self, synonym_text: str, exception_text: str) -> None:
        self.synsets: list[list[str]] = []
        self.index: dict[str, dict[str, list[int]]] = {p: {} for p in POS}
        for line in synonym_text.splitlines():
            if not line or line.startswith("#"):
                continue
            pos, *lemmas = line.split(" ")
            k = len(self.synsets)
            self.synsets.append(lemmas)
            for lemma in lemmas:
                self.index[pos].setdefault(lemma, []).append(k)
        self.exceptions: dict[str, dict[str, list[str]]] = {p: {} for p in POS}
        for line in exception_text.splitlines():
            if not line or line.startswith("#"):
                continue
            pos, form, *bases = line.split(" ")
            self.exceptions[pos][form] = bases


@functools.lru_cache(maxsize=1)
def _tables() -> _Tables:
    data = resources.files("pcmpipe") / "data"
    return _Tables((data / SYNONYM_FILE).read_text("utf-8"), (data / EXCEPTION_FILE).read_text("utf-8"))


def morphy(form: str, pos: str) -> list[str]:
    """Base forms of `form` for part of speech `pos` that have synonyms (NLTK `_morphy` semantics)."""
    t = _tables()
    if form in t.exceptions[pos]:
        candidates = [form] + t.exceptions[pos][form]
    else:
        candidates = [form] + [form[: -len(old)] + new for old, new in SUBSTITUTIONS[pos] if form.endswith(old)]
    out: list[str] = []
    for c in candidates:
        if c in t.index[pos] and c not in out:
            out.append(c)
    return out


@functools.lru_cache(maxsize=65536)
def _synonyms(word: str) -> tuple[str, ...]:
    t = _tables()
    found: set[str] = set()
    lemma = word.lower()
    for pos in POS:
        for form in morphy(lemma, pos):
            for k in t.index[pos][form]:
                for name in t.synsets[k]:
                    clean = name.replace("_", " ").replace("-", " ").lower()
                    found.add("".join(ch for ch in clean if ch in _KEEP))
    found.discard(word)
    return tuple(sorted(found))


def synonyms(word: str) -> list[str]:
    """EDA's `get_synonyms(word)`: sorted list of cleaned WordNet synonyms, without `word` itself."""
    return list(_synonyms(word))


def build_tables(wordnet_dir: Path, out_dir: Path) -> tuple[int, int]:
    """Write the two package-data files from a WordNet 3.0 `dict/` folder; returns (synsets, exceptions)."""
    wordnet_dir, out_dir = Path(wordnet_dir), Path(out_dir)
    header = (
        "# Derived from Princeton WordNet 3.0 by pcmpipe.augment.synonyms.build_tables.\n"
        "# WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved. "
        "License: WORDNET_LICENSE.txt beside this file.\n"
    )
    fold = {"n": "n", "v": "v", "a": "a", "s": "a", "r": "r"}
    lines: list[str] = []
    singles: dict[str, set[str]] = {p: set() for p in POS}
    in_index: dict[str, set[str]] = {p: set() for p in POS}
    for name in ("noun", "verb", "adj", "adv"):
        for line in (wordnet_dir / f"data.{name}").read_text("latin-1").splitlines():
            if line.startswith("  "):  # the license header of the data file
                continue
            parts = line.split(" ")
            count = int(parts[3], 16)
            # adjective position markers such as "(a)", "(p)", "(ip)" are not part of the lemma (NLTK strips them)
            words = [re.sub(r"\((a|p|ip)\)$", "", parts[4 + 2 * i]).lower() for i in range(count)]
            distinct = list(dict.fromkeys(words))
            pos = fold[parts[2]]
            if len(distinct) >= 2:
                lines.append(pos + " " + " ".join(distinct))
                in_index[pos].update(distinct)
            elif re.fullmatch(r"[a-z]+", distinct[0]):
                singles[pos].add(distinct[0])
    # A one-lemma synset still matters when morphy reaches it from an inflected word ("wrens" -> "wren"):
    # NLTK then returns the base form as a synonym. EDA's words are [a-z]+ and so are their base forms.
    for pos in POS:
        lines.extend(f"{pos} {lemma}" for lemma in sorted(singles[pos] - in_index[pos]))
    exc = []
    for name, pos in (("noun", "n"), ("verb", "v"), ("adj", "a"), ("adv", "r")):
        for line in (wordnet_dir / f"{name}.exc").read_text("latin-1").splitlines():
            if line.strip():
                exc.append(pos + " " + " ".join(line.split()))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / SYNONYM_FILE).write_text(header + "\n".join(lines) + "\n", "utf-8")
    (out_dir / EXCEPTION_FILE).write_text(header + "\n".join(exc) + "\n", "utf-8")
    return len(lines), len(exc)
