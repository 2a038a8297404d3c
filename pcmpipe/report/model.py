"""What a report is, apart from how it is shown: sections of tables and figures with their provenance.

`report.build` fills these from the runs on disk; `report.render` turns them into terminal, Markdown and HTML.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pcmpipe.report.plots import Figure
from pcmpipe.report.tables import Table


@dataclass
class Section:
    title: str
    provenance: list[str]
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    missing_runs: set[str] = field(default_factory=set)


@dataclass
class Report:
    title: str
    preamble: list[str]
    sections: list[Section]
