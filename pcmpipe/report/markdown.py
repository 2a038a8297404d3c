"""Plain-text rendering shared by the terminal, Markdown and HTML outputs.

`display_rows` turns a Table into the rows people read: each run row with our numbers, followed (when the
paper has values for it) by a "paper" row and a "Δ" row (ours minus paper, in points). Missing values are "—".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from pcmpipe.report.tables import Row, Table

if TYPE_CHECKING:  # pragma: no cover
    from pcmpipe.report.build import Report

MISSING = "—"


def fmt(value: Optional[float], signed: bool = False) -> str:
    if value is None:
        return MISSING
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def display_rows(table: Table) -> list[tuple[str, str, list[str]]]:
    """-> [(style, label, cell strings)], style in {'ours', 'paper', 'delta', 'paper-only', 'derived', 'chance'}."""
    out: list[tuple[str, str, list[str]]] = []
    for row in table.rows:
        if row.kind == "paper":
            out.append(("paper-only", row.label, [fmt(c.paper) for c in row.cells]))
            continue
        if row.kind in ("derived", "chance"):
            out.append((row.kind, row.label, [fmt(c.ours, signed=row.kind == "derived") for c in row.cells]))
            continue
        out.append(("ours", row.label, [fmt(c.ours) for c in row.cells]))
        if any(c.paper is not None for c in row.cells):
            out.append(("paper", "  paper", [fmt(c.paper) for c in row.cells]))
            out.append(("delta", "  Δ (ours − paper)", [fmt(c.delta, signed=True) for c in row.cells]))
    return out


def header_labels(table: Table) -> list[str]:
    """Column labels with their group prefixed when the table has groups ('r@1 I->T')."""
    if not table.groups:
        return list(table.columns)
    labels, i = [], 0
    for g, span in table.groups:
        labels += [f"{g} {c}" for c in table.columns[i:i + span]]
        i += span
    return labels


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def table_markdown(table: Table, provenance: list[str]) -> str:
    lines = [f"### {table.title}", ""]
    lines += [f"> {p}" for p in provenance]
    if provenance:
        lines.append("")
    if table.rows:
        heads = ["", *header_labels(table)]
        lines.append("| " + " | ".join(_escape(h) for h in heads) + " |")
        lines.append("|" + "---|" * len(heads))
        for style, label, cells in display_rows(table):
            text = _escape(label.strip())
            lab = f"**{text}**" if style == "ours" else text if style == "paper-only" else f"*{text}*"
            lines.append("| " + " | ".join([lab, *cells]) + " |")
        lines.append("")
    for n in table.notes:
        lines.append(f"- {n}")
    if table.notes:
        lines.append("")
    return "\n".join(lines)


def report_markdown(report: "Report") -> str:
    lines = [f"# {report.title}", "", *[f"{line}  " for line in report.preamble], ""]
    for sec in report.sections:
        lines += [f"## {sec.title}", ""]
        lines += [f"> {p}" for p in sec.provenance]
        lines.append("")
        for t in sec.tables:
            lines.append(table_markdown(t, t_provenance(sec, t)))
        for f in sec.figures:
            lines += [f"![{f.title}]({f.filename})", "", f"*{f.title}*: {f.caption}", ""]
    return "\n".join(lines) + "\n"


def t_provenance(section, table: Table) -> list[str]:
    """Per-table provenance: the runs that filled it (section-level provenance covers data and weights)."""
    runs = list(dict.fromkeys(table.runs))
    missing = [r for r in runs if r in section.missing_runs]
    out = [f"numbers from runs: {', '.join(runs)}" if runs else "numbers from: paper only"]
    if missing:
        out.append(f"missing runs (shown as {MISSING}): {', '.join(missing)}")
    return out
