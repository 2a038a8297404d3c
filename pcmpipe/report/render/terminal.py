"""The report in a terminal (rich): what `pcmpipe report` and `pcmpipe demo` print."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table as RichTable

from pcmpipe.report.display import display_rows, header_labels, t_provenance
from pcmpipe.report.model import Report


def print_report(report: Report, console: Console) -> None:
    """Every table in the terminal (rich)."""
    styles = {
        "ours": "bold",
        "paper": "dim",
        "delta": "dim italic",
        "paper-only": "dim",
        "derived": "italic",
        "chance": "dim",
        "baseline": "dim",
    }
    console.print(f"[bold]{report.title}[/]")
    for p in report.preamble:
        console.print(p, highlight=False)
    for sec in report.sections:
        console.rule(sec.title)
        for p in sec.provenance:
            console.print(f"[yellow]{p}[/]" if "SYNTHETIC" in p or "RANDOM" in p else p, highlight=False)
        for t in sec.tables:
            rt = RichTable(title=t.title, title_justify="left", show_lines=False)
            rt.add_column("")
            for h in header_labels(t):
                rt.add_column(h, justify="right")
            for style, label, cells in display_rows(t):
                rt.add_row(label, *cells, style=styles.get(style, ""))
            console.print(rt)
            for line in t_provenance(sec, t) + t.notes:
                console.print(f"  {line}", highlight=False)
