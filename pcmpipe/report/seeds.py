"""Tables over seeds: one row per setting, each cell the mean over the setting's seeds with their spread.

The readings pipeline (pipelines/readings.yaml, docs/conventions.md "Settling the readings") trains every
setting pcmpipe chose where the paper is ambiguous or silent, at several seeds. A single run per setting would
not tell a real difference from seed noise, so a cell here is the mean over seeds with the sample standard
deviation beside it; a setting whose seeds are not all finished shows "—", since a mean over the seeds that
happen to be done would look like a full one.

Layout (`kind: readings`): `metrics` (column groups), `columns` (labels, e.g. one per dataset), and `rows`,
each `{label, runs: {column: [run per seed, ...]}}`. A run's value is its mean `metric` over every direction
between its modalities (`mean_metric`), at the run's own match level.
"""

from __future__ import annotations

from statistics import mean, stdev

from pcmpipe.report.results import RunResult
from pcmpipe.report.tables import Cell, Row, Table, mean_metric, metric_table


def seed_cell(values: list[float | None]) -> Cell:
    """Mean and sample standard deviation of one setting's per-seed values; empty if any seed is missing."""
    if not values or any(v is None for v in values):
        return Cell()
    present = [float(v) for v in values if v is not None]
    return Cell(ours=mean(present), spread=stdev(present) if len(present) > 1 else None)


def build_readings(layout: dict, runs: dict[str, RunResult]) -> Table:
    """Rows = settings, columns = metric x column; each cell the mean ± spread over the row's seeds."""
    metrics, columns = list(layout["metrics"]), list(layout["columns"])
    rows, used, seeds = [], [], set()
    for spec in layout["rows"]:
        per_column = spec["runs"]
        cells = []
        for m in metrics:
            for c in columns:
                names = list(per_column.get(c) or [])
                seeds.add(len(names))
                cells.append(seed_cell([mean_metric(runs.get(n), m) for n in names]))
        rows.append(Row(label=spec["label"], cells=cells))
        used += [n for c in columns for n in per_column.get(c) or []]
    n = "/".join(str(k) for k in sorted(seeds))
    note = (
        f"each cell: mean ± sample standard deviation over {n} seeds of a run's mean over all directions "
        "between its modalities (the run's match level); — where a seed's run is missing"
    )
    return metric_table(layout, rows, runs=used, notes=[note])
