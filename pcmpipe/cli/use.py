"""Using a trained run: `embed` (new inputs -> coordinated embeddings), `index` (FAISS), `search`, `export`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import typer

from pcmpipe.cli.app import _guard, app, err_console
from pcmpipe.cli.options import GivenSettings, settings_command
from pcmpipe.config.commands import IndexConfig
from pcmpipe.config.use import EmbedConfig, ExportConfig, SearchConfig
from pcmpipe.errors import UserError


def _texts(text: list[str], text_file: str | None) -> list[str]:
    from pcmpipe.textfile import read_text

    out = list(text)
    if text_file is not None:
        path = Path(text_file)
        if not path.is_file():
            raise UserError(f"--text-file {path} does not exist")
        lines = [line.strip() for line in read_text(path, "--text-file").splitlines() if line.strip()]
        if not lines:
            raise UserError(f"--text-file {path} holds no texts (every line is empty)")
        out += lines
    return out


def _check_embed_args(cfg: EmbedConfig) -> None:
    """What `embed` can refuse before torch is imported (seconds): the modality, the sizes, --out (the schema
    checked the rest)."""
    from pcmpipe.runs.outdir import check_embed_settings, check_out
    from pcmpipe.training.rundir.record import modalities_of, read_record

    run_dir = Path(cfg.run_dir)
    mods = modalities_of(read_record(run_dir))
    if cfg.modality not in mods:
        raise UserError(f"run {run_dir.name} has no modality {cfg.modality!r}; it has {', '.join(mods)}")
    check_embed_settings(
        dtype=cfg.dtype, batch_size=cfg.batch_size, workers=cfg.workers or 0, rows_per_shard=cfg.rows_per_shard
    )
    check_out(Path(cfg.out), "--out", "embeddings")


@app.command("embed")
@settings_command(EmbedConfig, shown_defaults=True)
def embed_cmd(given: GivenSettings) -> None:
    """Embed new inputs with a trained run (backbone + head) into a cache of normalised embeddings."""
    with _guard():
        cfg = given.load()
        texts = _texts(cfg.text, cfg.text_file)
        _check_embed_args(cfg)
        from rich.console import Console

        from pcmpipe.cli.render import ExtractBar
        from pcmpipe.runs import load_run

        run = load_run(Path(cfg.run_dir))
        with ExtractBar(Console(stderr=True)) as bar:

            def progress(done: int, total: int) -> None:
                bar(f"embed {cfg.modality}", done, total)

            result = _embed(run, cfg, texts, progress)
        _report_embed(result, cfg.modality, cfg.dtype)


def _embed(run, cfg: EmbedConfig, texts: list[str], progress: Callable[[int, int], None]) -> dict:
    """The embedding job the settings ask for: a feature cache through the head, or texts or files through the
    backbone and the head -> the library's summary."""
    from pcmpipe.extract.runner import default_workers
    from pcmpipe.runs.embed import embed_cache_to_cache, embed_inputs_to_cache
    from pcmpipe.runs.inputs import expand_files

    modality, out = cfg.modality, Path(cfg.out)
    if cfg.cache is not None:
        return embed_cache_to_cache(
            run, modality, Path(cfg.cache), out, dtype=cfg.dtype, rows_per_shard=cfg.rows_per_shard, progress=progress
        )
    kind = run.kind(modality)
    if texts and kind != "text":
        raise UserError(f"modality {modality} takes {kind or 'vector'} inputs, not --text")
    if cfg.inputs and kind not in ("image", "audio"):
        raise UserError(f"modality {modality} takes {kind or 'vector'} inputs, not files; use --text or --cache")
    items = texts if texts else [str(p) for p in expand_files(cfg.inputs, str(kind))]
    return embed_inputs_to_cache(
        run, modality, items, out, dtype=cfg.dtype, batch_size=cfg.batch_size, strict=cfg.strict,
        workers=default_workers("cpu") if cfg.workers is None else cfg.workers, rows_per_shard=cfg.rows_per_shard,
        progress=progress,
    )  # fmt: skip


def _report_embed(result: dict, modality: str, dtype: str) -> None:
    for rid, reason in result["skipped"].items():
        err_console.print(f"[yellow]skipped {rid}: {reason}[/]", highlight=False, soft_wrap=True)
    if result["replaced"]:
        err_console.print(f"[yellow]rebuilt {result['out']}: {result['replaced']}[/]", highlight=False, soft_wrap=True)
    if result["reused"]:
        typer.echo(f"{result['out']} already holds these {result['rows']} {modality} embeddings; nothing to do")
        return
    typer.echo(f"wrote {result['rows']} {modality} embeddings ({dtype}) to {result['out']}")


@app.command("index")
@settings_command(IndexConfig, shown_defaults=True)
def index_cmd(given: GivenSettings) -> None:
    """Build an index (inner product on normalised vectors) over one modality's embeddings."""
    with _guard():
        from pcmpipe.index.folder import check_output
        from pcmpipe.index.params import check_flags

        cfg = given.load()
        kind, nlist, nprobe, pq_m, emb_dir = cfg.index_kind, cfg.nlist, cfg.nprobe, cfg.pq_m, Path(cfg.emb_dir)
        out, memory_budget = (None if cfg.out is None else Path(cfg.out)), cfg.memory_budget
        check_flags("flat" if kind == "auto" else kind, nlist, nprobe, pq_m)
        _embeddings_dir(emb_dir)
        target = check_output(out if out is not None else emb_dir.with_name(emb_dir.name + ".index"))
        from pcmpipe.cache import open_cache
        from pcmpipe.runs.gallery import check_named

        reader = open_cache(emb_dir)
        if "embedding" not in reader.feature_names:
            raise UserError(f"{emb_dir} holds features, not embeddings; make them with `pcmpipe embed`")
        check_named(f"embeddings cache {emb_dir}", reader.meta, None, None)
        shape = reader.shapes["embedding"]
        kind, pq_m, why = _resolve_kind(kind, pq_m, reader.num_rows, shape[0] if len(shape) == 1 else 0, memory_budget)
        result = _build(reader, kind, nlist, nprobe, pq_m, target, emb_dir)
        chosen = f", chosen: {why}" if why else ""
        typer.echo(f"indexed {result['rows']} embeddings ({kind}{chosen}) into {target}")
        typer.echo(result["recall"])


def _resolve_kind(kind: str, pq_m: int | None, rows: int, dim: int, budget: float) -> tuple[str, int | None, str]:
    """--kind auto -> (kind, pq_m, why) from the gallery's size and the budget; an explicit kind as given."""
    if kind != "auto":
        return kind, pq_m, ""
    from pcmpipe.index.auto import fit

    choice = fit(rows, dim, budget)
    return choice.kind, pq_m if pq_m is not None else choice.pq_m, f"{choice.why}, ~{choice.bytes / (1 << 20):,.1f} MiB"


def _build(reader, kind: str, nlist, nprobe, pq_m, target: Path, emb_dir: Path) -> dict:
    """Build and save the index; its recall@10 against exact search measured and recorded in index.json."""
    from pcmpipe.index import build_index, save_index
    from pcmpipe.index.auto import RECALL_K, RECALL_QUERIES, recall_at_k
    from pcmpipe.index.params import fit_params

    shape = reader.shapes["embedding"]
    params = fit_params(kind, reader.num_rows, shape[0] if len(shape) == 1 else 0, nlist, nprobe, pq_m)
    for note in params.advice:
        err_console.print(f"[yellow]note: {note}[/]", highlight=False, soft_wrap=True)
    cols, feats = reader.read(["embedding"])
    index = build_index(feats["embedding"], kind, nlist=params.nlist, nprobe=params.nprobe, pq_m=params.pq_m)
    meta: dict = {"kind": kind, "source": str(emb_dir), "source_fingerprint": reader.fingerprint}
    if params.pq_m is not None:
        meta["pq_m"] = params.pq_m
    queries = min(RECALL_QUERIES, len(cols["id"]))
    if kind == "flat":
        line = f"recall@{RECALL_K}: 1 (exact search)"
    else:
        meta["recall_at_10"] = recall_at_k(index, feats["embedding"])
        line = f"recall@{RECALL_K} against flat on {queries} gallery rows as queries: {meta['recall_at_10']:.3f}"
    save_index(target, index, cols["id"], {**meta, "meta": reader.meta})
    return {"rows": len(cols["id"]), "recall": line}


def _embeddings_dir(path: Path) -> None:
    """What EMB_DIR is when it is not an embeddings cache, and what to pass instead (no heavy import)."""
    from pcmpipe.runs.gallery import folder_kind

    found = folder_kind(path, "an embeddings cache (the --out of `pcmpipe embed`)")
    if found == "index":
        raise UserError(
            f"{path} is an index folder already; search it with `pcmpipe search RUN --gallery {path}`, "
            "or index the embeddings cache it was built from"
        )
    if found == "run":
        raise UserError(
            f"{path} is a run directory, not embeddings; embed rows with it first (`pcmpipe embed {path} "
            "--modality M ... --out DIR`), then `pcmpipe index DIR`"
        )


@app.command("search")
@settings_command(SearchConfig, shown_defaults=True)
def search_cmd(given: GivenSettings) -> None:
    """Search from any of a run's modalities to any other; prints ids, scores and each row's caption or file."""
    with _guard():
        # every check that needs no torch comes first: a wrong name is answered in a fraction of a second
        from pcmpipe.runs.gallery import gallery_kind, read_run_record, search_gallery, stored_embedding

        cfg = given.load()
        run_dir, gallery, k = Path(cfg.run_dir), None if cfg.gallery is None else Path(cfg.gallery), cfg.k
        record = read_run_record(run_dir)
        record.check_modality(cfg.from_, "--from")
        record.check_modality(cfg.to, "--to")
        if gallery is not None:
            gallery_kind(gallery)
        split = record.split_test
        if cfg.query_id is not None:  # a stored row: no backbone, no heads
            split, q = _row(record, cfg.from_, cfg.query_id, stored_embedding)
            pairs = search_gallery(record, cfg.to, q, k, gallery)[0]
        else:
            from pcmpipe.runs import load_run

            run = load_run(run_dir)
            pairs = search_gallery(run, cfg.to, run.embed(cfg.from_, [str(cfg.query)]), k, gallery)[0]
        from pcmpipe.runs.payload import Hit, item_sources

        sources = item_sources(run_dir) if gallery is None else None
        hits = sources.attach(cfg.to, pairs) if sources is not None else [Hit(i, s) for i, s in pairs]
        if cfg.as_json:
            typer.echo(json.dumps([h.as_dict() for h in hits]))
            return
        caption = _searched(record, cfg.to, gallery)
        if sources is not None and sources.note(cfg.to):
            caption += f"; no captions or files shown: {sources.note(cfg.to)}"
        what = cfg.query if cfg.query is not None else f"{cfg.query_id} (a row of the {split} split)"
        _print_hits(hits, f"{cfg.from_} -> {cfg.to}: {what}", caption)


def _row(record, modality: str, row_id: str, stored_embedding) -> tuple:
    """(split, embedding) of a row id: the run's stored test rows first (no torch), then its other cached splits
    through the head."""
    try:
        return record.split_test, stored_embedding(record, modality, row_id)
    except UserError as err:
        from pcmpipe.runs.rows import row_embedding, splits_of

        found = row_embedding(record.path, modality, row_id, record.split_test)
        if found is None:
            others = sorted(set(splits_of(record.path, modality)) - {record.split_test})
            raise UserError(f"{err}, nor in its cached {', '.join(others) or 'other'} splits") from None
        return found


def _searched(record, to: str, gallery: Path | None) -> str:
    """The line under the results that says what was searched."""
    if gallery is not None:
        return f"searched {to} gallery {gallery}"
    return f"searched the {to} embeddings of the {record.split_test} split stored in {record.path.name}"


def _print_hits(hits: list, title: str, caption: str) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title)
    table.add_column("rank", justify="right")
    table.add_column("id")
    table.add_column("score", justify="right")
    shown = any(h.text is not None or h.path is not None for h in hits)
    if shown:
        table.add_column("caption or file")
    for rank, hit in enumerate(hits, 1):
        cells = [str(rank), escape(hit.id), f"{hit.score:.4f}"]
        table.add_row(*cells, escape(hit.text or hit.path or "")) if shown else table.add_row(*cells)
    console = Console()
    console.print(table)
    console.print(caption, style="dim", highlight=False, soft_wrap=True)


@app.command("export")
@settings_command(ExportConfig, shown_defaults=True)
def export_cmd(given: GivenSettings) -> None:
    """Write a run as a Hub-style folder: safetensors heads, config.json and a README model card."""
    with _guard():
        from pcmpipe.runs.export import export_run

        cfg = given.load()
        run_dir, out = Path(cfg.run_dir), Path(cfg.out)
        result = export_run(run_dir, out)
        if result.reused:
            typer.echo(f"{out} already holds this export of {run_dir.name}; nothing to do")
            return
        typer.echo(f"exported {run_dir.name} to {result.out}")
