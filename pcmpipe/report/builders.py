"""Which builder makes the table of each layout kind (pcmpipe.report.layouts.TABLE_KINDS).

Kept apart from the builders themselves so that a builder in its own module (seeds.py) can use the table
types of tables.py without an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable

from pcmpipe.report import tables
from pcmpipe.report.results import RunResult
from pcmpipe.report.seeds import build_readings

BUILDERS: dict[str, Callable[[dict, dict[str, RunResult]], tables.Table]] = {
    "directions": tables.build_directions,
    "pair_average": tables.build_pair_average,
    "ablation": tables.build_ablation,
    "added_modality": tables.build_added_modality,
    "m_modalities": tables.build_m_modalities,
    "zeroshot": tables.build_zeroshot,
    "enrichment": tables.build_enrichment,
    "learning": tables.build_learning,
    "tsne": tables.build_tsne,
    "examples": tables.build_examples,
    "readings": build_readings,
}


def build_table(layout: dict, runs: dict[str, RunResult]) -> tables.Table:
    return BUILDERS[layout["kind"]](layout, runs)
