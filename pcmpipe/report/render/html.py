"""Self-contained HTML report: inline CSS, plots as base64 PNG, one small script; no external requests.

The script only toggles the paper/Δ rows, so a reader can look at our numbers alone; it is plain ES5 that
any browser runs. `pcmpipe report` writes the file; the tests render it in headless Chromium and fail on any
console error.
"""

from __future__ import annotations

import base64
import html

from pcmpipe.report.display import display_rows, header_labels, t_provenance
from pcmpipe.report.model import Report
from pcmpipe.report.tables import Table

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;\
max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.3em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}\
h3{font-size:1.05em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0 1em}\
th,td{border:1px solid #ddd;padding:.2em .5em;text-align:right}
th{background:#f3f3f3}td.label{text-align:left;white-space:nowrap}
tr.ours td{font-weight:600}tr.paper td{color:#555}tr.delta td{color:#777;font-style:italic}
tr.paper-only td{color:#555;background:#fafafa}tr.chance td{color:#888}tr.derived td{font-style:italic}
tr.baseline td{color:#666}
blockquote{margin:.3em 0;padding:.3em .8em;border-left:4px solid #c60;background:#fff7ee;font-size:.85em}
.notes{font-size:.8em;color:#444}figure{margin:1em 0}figcaption{font-size:.8em;color:#555}
.synthetic{border-left-color:#b00;background:#fee}img{max-width:100%}
button{margin:.5em 0;font-size:.85em}
"""

SCRIPT = """
(function () {
  var button = document.getElementById('toggle-paper');
  if (!button) { return; }
  document.body.setAttribute('data-ready', '1');
  var shown = true;
  button.addEventListener('click', function () {
    shown = !shown;
    var rows = document.querySelectorAll('tr.paper, tr.delta');
    for (var i = 0; i < rows.length; i++) { rows[i].style.display = shown ? '' : 'none'; }
    button.textContent = shown ? 'hide paper values' : 'show paper values';
  });
})();
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _quote(lines: list[str]) -> str:
    out = []
    for p in lines:
        cls = ' class="synthetic"' if "SYNTHETIC" in p or "random" in p.lower() else ""
        out.append(f"<blockquote{cls}>{_e(p)}</blockquote>")
    return "\n".join(out)


def table_html(table: Table, provenance: list[str]) -> str:
    parts = [f"<h3>{_e(table.title)}</h3>", _quote(provenance)]
    if table.rows:
        parts.append("<table>")
        if table.groups:
            parts.append(
                "<tr><th></th>" + "".join(f'<th colspan="{s}">{_e(g)}</th>' for g, s in table.groups) + "</tr>"
            )
            parts.append("<tr><th></th>" + "".join(f"<th>{_e(c)}</th>" for c in table.columns) + "</tr>")
        else:
            parts.append("<tr><th></th>" + "".join(f"<th>{_e(c)}</th>" for c in header_labels(table)) + "</tr>")
        for style, label, cells in display_rows(table):
            parts.append(
                f'<tr class="{style}"><td class="label">{_e(label)}</td>'
                + "".join(f"<td>{_e(c)}</td>" for c in cells)
                + "</tr>"
            )
        parts.append("</table>")
    if table.notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in table.notes) + "</ul>")
    return "\n".join(parts)


def report_html(report: Report) -> str:
    body = [
        f"<h1>{_e(report.title)}</h1>",
        _quote(report.preamble),
        '<button id="toggle-paper" type="button">hide paper values</button>',
    ]
    for sec in report.sections:
        body += [f"<h2>{_e(sec.title)}</h2>", _quote(sec.provenance)]
        for t in sec.tables:
            body.append(table_html(t, t_provenance(sec, t)))
        for f in sec.figures:
            b64 = base64.b64encode(f.png).decode("ascii")
            body.append(
                f'<figure><img alt="{_e(f.title)}" src="data:image/png;base64,{b64}">'
                f"<figcaption>{_e(f.title)}: {_e(f.caption)}</figcaption></figure>"
            )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(report.title)}</title>"
        '<link rel="icon" href="data:,">'  # no favicon request: the page makes no request at all
        f"<style>{CSS}</style></head>\n<body>\n" + "\n".join(body) + f"\n<script>{SCRIPT}</script>\n</body></html>\n"
    )
