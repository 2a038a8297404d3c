"""The paper's own numbers, loaded from the one data file `pcmpipe/data/paper_tables.json`.

These are the only values the report does not read from a run: they are printed beside ours, with deltas.
All values are percentages, as printed in the paper.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

PAPER_FILE = "paper_tables.json"


@lru_cache(maxsize=1)
def paper_tables() -> dict[str, Any]:
    """The whole parsed `paper_tables.json` (cached; treat as read-only)."""
    text = resources.files("pcmpipe").joinpath("data", PAPER_FILE).read_text(encoding="utf-8")
    return json.loads(text)


def paper_value(path: str) -> float | None:
    """The paper's value at a '/'-separated key path, or None where the paper prints none.

    Example: ``paper_value("table1_flickr8k/r@1/PCMR/I->T") == 66.8``. Key names may contain '->' and '+'
    but not '/'. A path that leaves the JSON tree (a typo or a cell the paper leaves blank) gives None, so a
    missing paper cell shows as "—", never as 0.
    """
    node: Any = paper_tables()
    for part in path.split("/"):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        return None
    return float(node)


def paper_source() -> str:
    """One line naming the paper the values come from."""
    return str(paper_tables().get("source", "paper"))
