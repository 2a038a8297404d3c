"""Table layouts a pipeline file may ask for, and their validation.

A layout is a plain mapping from the pipeline YAML (`tables:` list). Its `kind` picks the builder in
`pcmpipe.report.tables`; this module only checks that the keys the builder needs are there and that every run
it names is defined by the pipeline, so a typo fails at load time with one line, not halfway through a report.
"""

from __future__ import annotations

from typing import Any

# kind -> (required keys, keys whose values name runs)
TABLE_KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "directions": (("title", "metrics", "columns", "rows"), ("rows",)),
    "pair_average": (("title", "metrics", "columns", "rows"), ("rows",)),
    "ablation": (("title", "metrics", "columns", "baseline", "variant"), ("baseline", "variant")),
    "added_modality": (
        ("title", "metric", "columns", "added", "pair_runs", "triple_runs"),
        ("pair_runs", "triple_runs"),
    ),
    "m_modalities": (("title", "metric", "pairs", "groups"), ("groups",)),
    "zeroshot": (("title", "run", "inputs", "outputs"), ("run",)),
    "enrichment": (("title", "run", "blocks"), ("run",)),
    "tsne": (("title", "run", "modalities"), ("run",)),
    "examples": (("title", "run", "enrich"), ("run",)),
    "learning": (("title", "runs"), ("runs",)),
    "readings": (("title", "metrics", "columns", "rows"), ("rows",)),  # rows: {label, runs: {column: [seeds]}}
}


def runs_named(value: Any) -> list[str]:
    """Run names in a layout value: a name, a list of names, a {label, run} row, lists/dicts of those."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        if "run" in value:
            return [str(value["run"])]
        if "runs" in value:  # a row over several runs ({label, runs}): its label is no run
            return runs_named(value["runs"])
        return [n for v in value.values() for n in runs_named(v)]
    if isinstance(value, list):
        return [n for v in value for n in runs_named(v)]
    return []


def check_table(layout: Any, runs: set[str], where: str) -> None:
    """Raise UserError if `layout` lacks a key its kind needs or names a run the pipeline does not define."""
    from pcmpipe.errors import UserError

    if not isinstance(layout, dict) or not isinstance(layout.get("kind"), str) or layout["kind"] not in TABLE_KINDS:
        raise UserError(f"{where}: needs kind: one of {', '.join(TABLE_KINDS)}")
    required, run_keys = TABLE_KINDS[layout["kind"]]
    missing = [k for k in required if k not in layout]
    if missing:
        raise UserError(f"{where} ({layout['kind']}): missing key(s) {', '.join(missing)}")
    if layout["kind"] == "readings":
        _check_seed_rows(layout, where)
    for key in run_keys:
        for name in runs_named(layout[key]):
            if name not in runs:
                raise UserError(f"{where}: names run {name!r}, which the pipeline's `runs` does not define")


def _check_seed_rows(layout: dict, where: str) -> None:
    """A `readings` row is {label, runs: {column: [run, ...]}} whose columns are the layout's."""
    from pcmpipe.errors import UserError

    columns = layout["columns"] if isinstance(layout["columns"], list) else []
    rows = layout["rows"] if isinstance(layout["rows"], list) else [None]
    for row in rows:
        runs = row.get("runs") if isinstance(row, dict) else None
        if not isinstance(row, dict) or "label" not in row or not isinstance(runs, dict):
            raise UserError(f"{where} (readings): each row needs label and runs: {{column: [run per seed]}}")
        for column, names in runs.items():
            if column not in columns or not isinstance(names, list):
                raise UserError(
                    f"{where} (readings): row {row['label']!r}: runs must map columns ({', '.join(map(str, columns))})"
                    f" to lists of runs, got {column!r}: {names!r:.60}"
                )
