"""Cell text and row order shared by every renderer (terminal, Markdown, HTML); no renderer-specific markup.

`display_rows` turns a Table into the rows people read: each run row with our numbers, followed (when the
paper has values for it) by a "paper" row and a "Δ" row (ours minus paper, in points). Missing values are "—".
"""

from __future__ import annotations

from pcmpipe.report.model import Section
from pcmpipe.report.tables import Cell, Table

MISSING = "—"


def fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return MISSING
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def fmt_ours(cell: Cell) -> str:
    """Our value, with its spread over seeds where the cell has one ("41.2 ± 0.8")."""
    if cell.ours is None or cell.spread is None:
        return fmt(cell.ours)
    return f"{cell.ours:.1f} ± {cell.spread:.1f}"


def display_rows(table: Table) -> list[tuple[str, str, list[str]]]:
    """-> [(style, label, cell strings)], style in {'ours', 'paper', 'delta', 'paper-only', 'derived', 'chance',
    'baseline'}."""
    out: list[tuple[str, str, list[str]]] = []
    for row in table.rows:
        if row.kind == "paper":
            out.append(("paper-only", row.label, [fmt(c.paper) for c in row.cells]))
            continue
        if row.kind in ("derived", "chance", "baseline"):
            out.append((row.kind, row.label, [fmt(c.ours, signed=row.kind == "derived") for c in row.cells]))
            continue
        out.append(("ours", row.label, [fmt_ours(c) for c in row.cells]))
        if any(c.paper is not None for c in row.cells):
            out.append(("paper", "  paper", [fmt(c.paper) for c in row.cells]))
            if table.delta_withheld:  # a difference from the paper would be noise: the row says why instead
                out.append(("delta", f"  no Δ: {table.delta_withheld}", ["n/a" for _ in row.cells]))
            else:
                out.append(("delta", "  Δ (ours − paper)", [fmt(c.delta, signed=True) for c in row.cells]))
    return out


def header_labels(table: Table) -> list[str]:
    """Column labels with their group prefixed when the table has groups ('r@1 I->T')."""
    if not table.groups:
        return list(table.columns)
    labels, i = [], 0
    for g, span in table.groups:
        labels += [f"{g} {c}" for c in table.columns[i : i + span]]
        i += span
    return labels


def t_provenance(section: Section, table: Table) -> list[str]:
    """Per-table provenance: the runs that filled it (section-level provenance covers data and weights)."""
    runs = list(dict.fromkeys(table.runs))
    missing = [r for r in runs if r in section.missing_runs]
    out = [f"numbers from runs: {', '.join(runs)}" if runs else "numbers from: paper only"]
    if missing:
        out.append(f"missing runs (shown as {MISSING}): {', '.join(missing)}")
    return out
