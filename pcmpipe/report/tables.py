"""Report tables: our numbers (from run files) beside the paper's (from paper_tables.json), with deltas.

One builder per layout kind (pcmpipe.report.layouts.TABLE_KINDS), registered in pcmpipe.report.builders. A
builder takes the layout mapping from the pipeline file and the loaded runs and returns a `Table`. Missing runs
or metrics give `None` cells, printed "—"; nothing is ever filled with 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import mean
from typing import Any

from pcmpipe.report.baseline import BASELINE_LABEL, baseline_values
from pcmpipe.report.paper import paper_value
from pcmpipe.report.results import RunResult


@dataclass
class Cell:
    ours: float | None = None
    paper: float | None = None
    spread: float | None = None  # over seeds (pcmpipe.report.seeds): printed "mean ± spread"

    @property
    def delta(self) -> float | None:
        return None if self.ours is None or self.paper is None else self.ours - self.paper


@dataclass
class Row:
    label: str
    cells: list[Cell]
    kind: str = "run"  # run | paper (a baseline the paper prints; we have no run of it) | derived | chance | baseline
    run: str | None = None


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[Row]
    groups: list[tuple[str, int]] = field(default_factory=list)  # header groups over columns: (label, span)
    notes: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)  # the runs whose files filled it (for provenance)
    unit: str = "%"
    delta_withheld: str | None = None  # why no Δ against the paper is shown (synthetic data, random weights)

    @property
    def has_paper(self) -> bool:
        return any(c.paper is not None for r in self.rows for c in r.cells)

    @property
    def has_ours(self) -> bool:
        return any(c.ours is not None for r in self.rows for c in r.cells)


def _avg(values: list[float | None]) -> float | None:
    """Mean of the values, or None if any is missing (a partial average would look like a real number)."""
    present = [v for v in values if v is not None]
    if not values or len(present) != len(values):
        return None
    return float(mean(present))


def _paper(layout: dict, group: str, row: str | None, col: str) -> float | None:
    if not layout.get("paper") or row is None:
        return None
    return paper_value(f"{layout['paper']}/{layout.get('paper_path') or group}/{row}/{col}")


def _pair_dirs(pair: str) -> tuple[str, str]:
    a, b = pair.split("+")
    return f"{a}->{b}", f"{b}->{a}"


def _pair_value(run: RunResult | None, pair: str, metric: str) -> float | None:
    if run is None:
        return None
    return _avg([run.metric(d, metric) for d in _pair_dirs(pair)])


def _paper_only_rows(layout: dict, metrics: list[str], columns: list[str]) -> list[Row]:
    rows = []
    for name in layout.get("paper_only") or []:
        cells = [Cell(None, _paper(layout, m, name, c)) for m in metrics for c in columns]
        rows.append(Row(label=f"{name} (paper)", cells=cells, kind="paper"))
    return rows


def _run_rows(layout: dict, runs: dict[str, RunResult], value) -> tuple[list[str], list[str], list[Row]]:
    """(metrics, columns, rows): the paper-only rows, then one row per run of the layout with
    `value(run or None, column, metric)` in each metric x column cell beside the paper's value."""
    metrics, columns = list(layout["metrics"]), list(layout["columns"])
    rows = _paper_only_rows(layout, metrics, columns)
    for spec in layout["rows"]:
        run = runs.get(spec["run"])
        cells = [Cell(value(run, c, m), _paper(layout, m, spec.get("paper_row"), c)) for m in metrics for c in columns]
        rows.append(Row(label=spec["label"], cells=cells, run=spec["run"]))
    return metrics, columns, rows


def metric_table(layout: dict, rows: list[Row], runs: list[str], notes: list[str]) -> Table:
    """The layout's table with one column per metric x column, grouped under each metric."""
    metrics, columns = list(layout["metrics"]), list(layout["columns"])
    return Table(
        title=layout["title"],
        columns=columns * len(metrics),
        rows=rows,
        groups=[(m, len(columns)) for m in metrics],
        runs=runs,
        notes=notes,
    )


def _metric_groups(layout: dict, runs: dict[str, RunResult], value, notes: list[str] | None = None) -> Table:
    """A table whose columns are grouped by metric (metric x column), one row per run."""
    metrics, columns, rows = _run_rows(layout, runs, value)
    base = baseline_values(layout, runs, metrics, columns)
    if base is not None:  # where two modalities already share a space (CLIP's I and T): what the heads add
        rows.append(Row(label=BASELINE_LABEL, cells=[Cell(v) for v in base], kind="baseline"))
    return metric_table(layout, rows, runs=[s["run"] for s in layout["rows"]], notes=notes or [])


def build_directions(layout: dict, runs: dict[str, RunResult]) -> Table:
    """Rows = runs, columns = metric x direction (Tables 1, 6, 7)."""
    return _metric_groups(layout, runs, lambda run, c, m: run.metric(c, m) if run else None)


def build_pair_average(layout: dict, runs: dict[str, RunResult]) -> Table:
    """Rows = runs, columns = metric x pair; a pair's value is the mean of its two directions (Table 2)."""
    return _metric_groups(layout, runs, _pair_value, notes=["each cell: mean of the pair's two directions"])


def build_ablation(layout: dict, runs: dict[str, RunResult]) -> Table:
    """Baseline and variant rows per direction, plus the relative change of the variant (percent)."""
    metrics, columns = list(layout["metrics"]), list(layout["columns"])
    base, var = runs.get(layout["baseline"]["run"]), runs.get(layout["variant"]["run"])
    b = [base.metric(c, m) if base else None for m in metrics for c in columns]
    v = [var.metric(c, m) if var else None for m in metrics for c in columns]
    rel = [None if x is None or y is None or x == 0 else 100.0 * (y - x) / x for x, y in zip(b, v)]
    rows = [
        Row(layout["baseline"]["label"], [Cell(x) for x in b], run=layout["baseline"]["run"]),
        Row(layout["variant"]["label"], [Cell(x) for x in v], run=layout["variant"]["run"]),
        Row("relative change", [Cell(x) for x in rel], kind="derived"),
    ]
    rel_avg = _avg(rel)
    notes = [f"average relative change: {'—' if rel_avg is None else f'{rel_avg:+.1f}%'}"]
    if layout.get("paper_note"):
        notes.append(f"paper: {_paper_text(layout['paper_note'])}")
    return metric_table(layout, rows, runs=[layout["baseline"]["run"], layout["variant"]["run"]], notes=notes)


def build_added_modality(layout: dict, runs: dict[str, RunResult]) -> Table:
    """Table 3: relative change (%) of a pair's average metric when a third modality joins the pair's model."""
    metric, columns = layout["metric"], list(layout["columns"])
    triples = {frozenset(runs[n].modalities): runs[n] for n in layout["triple_runs"] if n in runs}
    rows = []
    for added in layout["added"]:
        cells = []
        for pair in columns:
            members = set(pair.split("+"))
            if added in members:
                cells.append(Cell())
                continue
            bi = runs.get(layout["pair_runs"].get(pair, ""))
            tri = triples.get(frozenset(members | {added}))
            x, y = _pair_value(bi, pair, metric), _pair_value(tri, pair, metric)
            gain = None if x is None or y is None or x == 0 else 100.0 * (y - x) / x
            cells.append(Cell(gain, _paper(layout, "rows", f"+{added}", pair)))
        applicable = [c.ours for c, pair in zip(cells, columns) if added not in pair.split("+")]
        cells.append(Cell(_avg(applicable), _paper(layout, "rows", f"+{added}", "avg")))
        rows.append(Row(label=f"+{added}", cells=cells))
    used = list(layout["pair_runs"].values()) + list(layout["triple_runs"])
    return Table(
        title=layout["title"],
        columns=columns + ["avg"],
        rows=rows,
        runs=used,
        notes=[f"relative change of the pair's mean {metric} (both directions), tri-modal vs bi-modal model"],
    )


def m_modalities_values(layout: dict, runs: dict[str, RunResult]) -> dict[str, dict[str, dict[int, float | None]]]:
    """{group: {pair: {M: mean pair metric over the group's runs with M modalities that contain the pair}}}."""
    out: dict[str, dict[str, dict[int, float | None]]] = {}
    for group, names in layout["groups"].items():
        present = [runs[n] for n in names if n in runs]
        sizes = sorted({len(r.modalities) for r in present}) or [2]
        out[group] = {}
        for pair in layout["pairs"]:
            members = set(pair.split("+"))
            out[group][pair] = {}
            for m in sizes:
                vals = [
                    _pair_value(r, pair, layout["metric"])
                    for r in present
                    if len(r.modalities) == m and members <= set(r.modalities)
                ]
                out[group][pair][m] = _avg(vals) if vals else None
    return out


def build_m_modalities(layout: dict, runs: dict[str, RunResult]) -> Table:
    """Figure 1 as a table: rows = pairs, columns = group x number of training modalities M."""
    values = m_modalities_values(layout, runs)
    col_keys: list[tuple[str, int]] = []  # (group, M) per column
    groups = []
    for g, per_pair in values.items():
        ms = sorted({m for d in per_pair.values() for m in d})
        col_keys += [(g, m) for m in ms]
        groups.append((g, len(ms)))
    rows = [Row(label=pair, cells=[Cell(values[g][pair].get(m)) for g, m in col_keys]) for pair in layout["pairs"]]
    columns = [f"M={m}" for _, m in col_keys]
    notes = [
        f"mean {layout['metric']} of the pair's two directions; for M=3 on four modalities, the mean over the "
        "tri-modal models that contain the pair"
    ]
    if layout.get("paper_note"):
        notes.append(f"paper: {_paper_text(layout['paper_note'])}")
    return Table(
        title=layout["title"],
        columns=columns,
        rows=rows,
        groups=groups,
        notes=notes,
        runs=[n for names in layout["groups"].values() for n in names],
    )


def build_zeroshot(layout: dict, runs: dict[str, RunResult]) -> Table:
    """Table 4: rows = input combinations, columns = outputs (C, P); T1 from the run's zeroshot.json."""
    run = runs.get(layout["run"])
    t1 = ((run.zeroshot or {}).get("T1") if run else None) or {}
    outputs = list(layout["outputs"])
    ppath = "PCMC fine-tuned, input -> output"
    rows = []
    for combo in layout["inputs"]:
        cells = [
            Cell(
                _num((t1.get(combo) or {}).get(o)),
                paper_value(f"{layout['paper']}/{ppath}/{combo}/{o}") if layout.get("paper") else None,
            )
            for o in outputs
        ]
        rows.append(Row(label=combo, cells=cells, run=layout["run"]))
    n_classes = (run.zeroshot or {}).get("num_classes") if run else None
    if isinstance(n_classes, int) and n_classes > 0:
        rows.append(
            Row(
                label=f"chance (1/{n_classes} classes)", cells=[Cell(100.0 / n_classes) for _ in outputs], kind="chance"
            )
        )
    notes = []
    if layout.get("paper"):
        from pcmpipe.report.paper import paper_tables

        # the paper's baselines are single T1 values with their training modalities
        bl = (paper_tables().get(layout["paper"]) or {}).get("baselines") or {}
        notes.append(
            "paper baselines (T1): " + ", ".join(f"{k} [{v.get('trained_on')}] {v.get('T1')}" for k, v in bl.items())
        )
        disc = (paper_tables().get(layout["paper"]) or {}).get("discrepancy")
        if disc:
            notes.append(f"paper note: {disc}")
    return Table(title=layout["title"], columns=outputs, rows=rows, notes=notes, runs=[layout["run"]])


def _added(combo: str) -> str:
    """The column of a combination in Table 5's grid: what joins its first modality ('I+A+C' -> '+A+C')."""
    rest = combo.split("+")[1:]
    return "+" + "+".join(rest) if rest else "alone"


def _enrichment_r1(run: RunResult | None) -> dict:
    """{block: {combination: r@1}} at the run's match level: from enrichment.json's `levels` (every level the
    rows allow), or its `r@1` when it was written at that level (a file from before `levels`)."""
    if run is None or not isinstance(run.enrichment, dict):
        return {}
    levels = run.enrichment.get("levels")
    if isinstance(levels, dict):
        found = levels.get(run.match)
    else:
        found = run.enrichment.get("r@1") if run.enrichment.get("match", "instance") == run.match else None
    return found if isinstance(found, dict) else {}


def build_enrichment(layout: dict, runs: dict[str, RunResult]) -> Table:
    """Table 5 as the paper prints it: one row per block ({}->T, T->{}, ...), one column per what is added to
    the block's own modality (alone, +A, +C, +A+C); r@1 from the run's enrichment.json."""
    r1 = _enrichment_r1(runs.get(layout["run"]))
    columns = list(dict.fromkeys(_added(c) for combos in layout["blocks"].values() for c in combos))
    rows = []
    for block, combos in layout["blocks"].items():
        by_col = {_added(c): c for c in combos}
        cells = []
        for col in columns:
            combo = by_col.get(col)
            paper = paper_value(f"{layout['paper']}/{block}/{combo}") if layout.get("paper") and combo else None
            cells.append(Cell(_num((r1.get(block) or {}).get(combo)) if combo else None, paper))
        base = combos[0].split("+")[0] if combos else "?"
        rows.append(Row(label=f"{block}  ({{}} = {base}…)", cells=cells, run=layout["run"]))
    return Table(
        title=layout["title"],
        columns=columns,
        rows=rows,
        runs=[layout["run"]],
        notes=[
            "{} -> X: the query is the mean of the listed modalities' normalised embeddings, searched against X; "
            "X -> {}: the query is X and each database item is the mean of the listed modalities' embeddings",
            "columns: the block's own modality alone, or with the named modalities averaged in",
        ],
    )


def build_learning(layout: dict, runs: dict[str, RunResult]) -> Table:
    """Trained vs untrained heads vs chance: mean r@1 over all directions, test split, the run's match level."""
    rows = []
    for name in layout["runs"]:
        run = runs.get(name)
        cells = (
            [Cell(mean_metric(run, "r@1", src)) for src in ("test", "untrained", "chance")]
            if run
            else [Cell(), Cell(), Cell()]
        )
        label = f"{name} ({run.match} match)" if run else name
        rows.append(Row(label=label, cells=cells, run=name))
    return Table(
        title=layout["title"],
        columns=["trained", "untrained", "chance"],
        rows=rows,
        runs=list(layout["runs"]),
        groups=[("mean r@1 over all directions", 3)],
        notes=["untrained: the same heads at their seeded initialisation; chance: expected r@1 of a random ranking"],
    )


def build_tsne(layout: dict, runs: dict[str, RunResult]) -> Table:
    """Figure 3's table part, shown when the plot (tsne.py) cannot be drawn: the title and why."""
    run = runs.get(layout["run"])
    return Table(
        title=layout["title"],
        columns=["plotted"],
        rows=[],
        runs=[layout["run"]],
        notes=[] if run else ["run missing: no plot"],
        unit="",
    )


def build_examples(layout: dict, runs: dict[str, RunResult]) -> Table:
    """Figure 2's table part: a title and notes; the grid of retrieved images is in examples.py."""
    run = runs.get(layout["run"])
    return Table(
        title=layout["title"],
        columns=[],
        rows=[],
        runs=[layout["run"]],
        notes=[] if run else ["run missing: no figure"],
        unit="",
    )


def mean_metric(run: RunResult | None, metric: str, source: str = "test") -> float | None:
    """Mean of `metric` over every direction between the run's modalities (None if any is missing)."""
    if run is None or len(run.modalities) < 2:
        return None
    mods = run.modalities
    return _avg([run.metric(f"{a}->{b}", metric, source=source) for a in mods for b in mods if a != b])


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _paper_text(path: str) -> str:
    from pcmpipe.report.paper import paper_tables

    node: Any = paper_tables()
    for p in path.split("/"):
        node = node.get(p) if isinstance(node, dict) else None
    return str(node) if node is not None else "—"
