"""`pcmpipe report`: every recorded pipeline's tables and plots as a Report, and its report.md / report.html.

Sections follow the pipeline records `pcmpipe run` left under `<runs_root>/_pipelines/`; a last section lists
every run found with trained vs untrained vs chance and the training curves. Each section opens with where its
numbers come from: the data (synthetic or not, root, test-split size), the feature backbones and weights as the
cache manifests record them, and the match level, so a synthetic run is never mistaken for a reproduction.
"""

from __future__ import annotations

from pathlib import Path

from pcmpipe.datasets.synthetic import SYNTHETIC_MARKER
from pcmpipe.errors import UserError
from pcmpipe.report import plots
from pcmpipe.report.builders import build_table
from pcmpipe.report.examples import examples_figure
from pcmpipe.report.levels import build_levels
from pcmpipe.report.model import Report, Section
from pcmpipe.report.paper import paper_source
from pcmpipe.report.recipe import LEGEND, build_line, recipe_lines, seed_line
from pcmpipe.report.render.html import report_html
from pcmpipe.report.render.markdown import report_markdown
from pcmpipe.report.results import RunResult, cache_manifest, load_pipeline_records, load_runs, matching_runs
from pcmpipe.report.tables import m_modalities_values, mean_metric
from pcmpipe.report.tsne import tsne_figure

REAL_TEST_SIZES = {"flickr8k": ("I", 1000), "cub": ("C", 50)}  # the paper's test split, for the scale line


def data_origin(spec: dict, recorded: set | None = None, dataset: str = "") -> str:
    """SYNTHETIC / real / not recorded, from the pipeline's data spec or the marker in the data root, else from
    what the runs recorded of their caches (`recorded`: their config.json's data_origin values; a run recorded
    before that field, or on caches extracted before the manifests said, has None)."""
    syn = (spec.get("options") or {}).get("synthetic")
    root = spec.get("root")
    if syn is None and root and (Path(str(root)) / SYNTHETIC_MARKER).is_file():
        syn = True
    if syn is None and recorded:
        # one synthetic cache is enough to say so; "real" only when every run says real
        syn = True if "synthetic" in recorded else False if recorded == {"real"} else None
    if syn is True:
        return "SYNTHETIC data (pcmpipe synth): not a reproduction of the paper"
    return (f"real {dataset} data" if dataset else "real data layout") if syn is False else "data origin not recorded"


def _weights_line(manifest: dict | None) -> str:
    if manifest is None:
        return "no cache manifest found"
    meta = manifest.get("meta") or {}
    keys = [
        k for k in ("backbone", "weights", "pretrained", "weights_sha256", "source") if meta.get(k) not in (None, "")
    ]
    text = (
        ", ".join(f"{k}={str(meta[k])[:16] if k.endswith('sha256') else meta[k]}" for k in keys)
        or "no backbone recorded"
    )
    weights = str(meta.get("weights", meta.get("pretrained", ""))).lower()
    if (weights.startswith("random") or weights in ("none", "")) and meta.get("backbone") not in (
        None,
        "",
        "synthetic",
    ):
        text += " [RANDOM weights]"
    return text


def data_provenance(record: dict | None, runs: list[RunResult]) -> list[str]:
    """Lines saying where a section's numbers come from (data, weights, scale, match level)."""
    lines = []
    datasets = sorted({str(r.config.get("dataset")) for r in runs if r.config.get("dataset")})
    data = (record or {}).get("data") or {}
    for ds in datasets:
        spec = data.get(ds) or {}
        ds_runs = [r for r in runs if r.config.get("dataset") == ds]
        recorded = {r.meta.get("data_origin") for r in ds_runs}
        lines.append(f"{ds}: {data_origin(spec, recorded, ds)}; root {spec.get('root', '?')}")
        cache_root = Path(str(ds_runs[0].config.get("cache_root", "cache")))
        mods = sorted({m for r in ds_runs for m in r.modalities})
        lines.append(
            f"{ds} features: " + "; ".join(f"{m}: {_weights_line(cache_manifest(cache_root, ds, m))}" for m in mods)
        )
        if ds in REAL_TEST_SIZES:
            m, real = REAL_TEST_SIZES[ds]
            man = cache_manifest(cache_root, ds, m)
            if man is not None:
                lines.append(f"{ds} test split: {man.get('num_rows')} {m} rows (the paper's: {real})")
        levels = sorted({r.match for r in ds_runs})
        lines.append(f"{ds} match level: {', '.join(levels)}")
    return lines + recipe_lines(runs, list((record or {}).get("evaluations") or []))


def delta_withheld(provenance: list[str]) -> str | None:
    """Why a section's numbers get no Δ against the paper: its data are synthetic or its features come from
    random weights (then any difference is noise, -80 or +50 points alike); None for real data and weights."""
    why = [
        what
        for what, mark in (("synthetic data", "SYNTHETIC data"), ("random weights", "[RANDOM weights]"))
        if any(mark in line for line in provenance)
    ]
    return " and ".join(why) if why else None


def _section(record: dict, runs: dict[str, RunResult], cache: dict) -> Section:
    runs, skipped = matching_runs(record, runs)  # same name, other config: not this pipeline's result
    used = [runs[n] for n in record.get("runs", {}) if n in runs]
    missing = {n for n in record.get("runs", {}) if n not in runs or not runs[n].complete}
    sec = Section(
        title=str(record.get("title") or record.get("name")),
        provenance=data_provenance(record, used),
        missing_runs=missing,
    )
    sec.provenance += skipped
    withheld = delta_withheld(sec.provenance)
    for layout in record["tables"]:
        table = build_levels(layout, runs, withheld)
        if layout["kind"] == "m_modalities":
            fig = plots.m_modalities_bars(layout["title"], m_modalities_values(layout, runs), layout["metric"])
            if fig:
                sec.figures.append(fig)
        elif layout["kind"] in ("tsne", "examples"):
            fig, why = _figure(layout, runs, record, cache)
            if fig:
                sec.figures.append(fig)
            else:  # the layout is a figure: its table only carries the title and why it is missing
                table.notes.append(why)
                sec.tables.append(table)
            continue
        sec.tables.append(table)
    return sec


def _figure(layout: dict, runs: dict[str, RunResult], record: dict, cache: dict) -> tuple[plots.Figure | None, str]:
    """Figure 3 (t-SNE) or Figure 2 (retrieval examples) of a layout, computed once per run and layout,
    or (None, why not)."""
    run = runs.get(layout["run"])
    if run is None or not run.complete:
        return None, f"run {layout['run']} missing or unfinished: no figure"
    key = (layout["kind"], run.name, repr(sorted(layout.items())))
    if key not in cache:  # t-SNE is the slow part of a report; compute once per run
        if layout["kind"] == "tsne":
            fig = tsne_figure(
                run, list(layout["modalities"]), int(layout.get("max_points", 2000)), title=layout["title"]
            )
            cache[key] = fig or f"{run.name} has no test embeddings of {', '.join(layout['modalities'])}: no plot"
        else:
            ds = str(run.config.get("dataset"))
            root = ((record.get("data") or {}).get(ds) or {}).get("root")
            fig, why = examples_figure(
                run, ds, root or "", list(layout["enrich"]), int(layout.get("examples", 4)), layout["title"]
            )
            cache[key] = fig if fig is not None else why
    found = cache[key]
    return (found, "") if isinstance(found, plots.Figure) else (None, str(found))


def learning_section(runs: dict[str, RunResult], records: list[dict]) -> Section | None:
    """Every finished run: trained vs untrained heads vs chance, and the training curves. The data, features and
    recipe lines are printed for the runs no pipeline section has described already, never twice."""
    done = [r for r in runs.values() if r.complete]
    if not done:
        return None
    described = {n for rec in records for n in rec.get("runs", {})}
    layout = {
        "kind": "learning",
        "title": "Trained vs untrained vs chance (every finished run, test split)",
        "runs": [r.name for r in done],
    }
    data: dict = {}
    for rec in records:  # what the pipelines say about each dataset (synthetic or not, root)
        data.update(rec.get("data") or {})
    rest = [r for r in done if r.name not in described]
    provenance = data_provenance({"data": data}, rest) if rest else []
    if len(rest) < len(done):
        provenance.insert(0, "data, features and recipe of the runs in the sections above: as stated there")
    sec = Section(title="All runs: did the heads learn?", provenance=provenance)
    shown = {n for rec in records for t in rec.get("tables", []) if t.get("kind") == "learning" for n in t["runs"]}
    if not {r.name for r in done} <= shown:  # a pipeline's own learning table already lists them all: once
        sec.tables.append(build_table(layout, runs))
    bars = plots.learning_bars(
        [r.name for r in done],
        [mean_metric(r, "r@1") for r in done],
        [mean_metric(r, "r@1", "untrained") for r in done],
        [mean_metric(r, "r@1", "chance") for r in done],
    )
    curves = plots.training_curves(done)
    sec.figures += [f for f in (bars, curves) if f is not None]
    return sec


ABBREVIATIONS = (
    "abbreviations: I image, T caption (text), S spoken caption, A attributes, C class, P class-name prompt; "
    "X->Y: queries of X against a gallery of Y; X+Y: the mean of X->Y and Y->X; r@k: recall at k (the share of "
    "queries with a match among their k nearest); R-P: R-precision (the share of a query's R matches in its top "
    "R); T1: mean per-class top-1 accuracy (zero-shot, Table 4)"
)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def build_report(runs_root: Path) -> Report:
    """Read every pipeline record and run under runs_root into a Report (no files written)."""
    runs_root = Path(runs_root)
    if not runs_root.is_dir():
        raise UserError(
            f"runs root {runs_root} not found; run `pcmpipe run pipelines/<name>.yaml` or `pcmpipe demo` first"
        )
    problems: list[str] = []  # damaged files: one line each in the preamble, never a silent gap
    runs = load_runs(runs_root, problems)
    records = load_pipeline_records(runs_root, problems)
    if not runs and not records:
        raise UserError(f"no runs under {runs_root}; run `pcmpipe run pipelines/<name>.yaml` or `pcmpipe demo` first")
    tsne_cache: dict = {}
    sections = [_section(rec, runs, tsne_cache) for rec in records]
    learn = learning_section(runs, records)
    if learn:
        sections.append(learn)
    preamble = [
        build_line(),
        f"runs root: {runs_root} ({_count(sum(r.complete for r in runs.values()), 'finished run')}, "
        f"{_count(len(records), 'pipeline record')})",
        seed_line([r for r in runs.values() if r.complete] or list(runs.values())),
        f"paper values: {paper_source()}",
        "cells: ours / paper / Δ = ours − paper (percentage points); — = missing, never zero",
        LEGEND,
        ABBREVIATIONS,
        *problems,
    ]
    return Report(title="pcmpipe report", preamble=preamble, sections=sections)


def write_report(report: Report, out: Path) -> dict[str, Path]:
    """Write out/report.md, out/report.html and out/figures/*.png for a built report; returns their paths."""
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    n = 0
    for sec in report.sections:
        for fig in sec.figures:
            n += 1
            fig.filename = f"figures/fig{n:02d}.png"
            (out / fig.filename).write_bytes(fig.png)
    md, html_path = out / "report.md", out / "report.html"
    md.write_text(report_markdown(report), encoding="utf-8")
    html_path.write_text(report_html(report), encoding="utf-8")
    return {"markdown": md, "html": html_path}
