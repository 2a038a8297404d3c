"""report.md: the Report as GitHub-flavoured Markdown (tables, provenance as quotes, figures as links)."""

from __future__ import annotations

from pcmpipe.report.display import display_rows, header_labels, t_provenance
from pcmpipe.report.model import Report
from pcmpipe.report.tables import Table


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


def report_markdown(report: Report) -> str:
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
