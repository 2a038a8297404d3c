"""Using a trained run: `embed` (new inputs -> coordinated embeddings), `index` (FAISS), `search`, `export`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from pcmpipe.cli.app import _guard, app, err_console
from pcmpipe.cli.options import GivenSettings, settings_command
from pcmpipe.config.commands import IndexConfig
from pcmpipe.errors import UserError

RUN_HELP = "a finished run directory (cache/runs/<name>) or a folder written by `pcmpipe export`"


def _texts(text: list[str] | None, text_file: Path | None) -> list[str]:
    from pcmpipe.textfile import read_text

    out = list(text or [])
    if text_file is not None:
        if not text_file.is_file():
            raise UserError(f"--text-file {text_file} does not exist")
        out += [line.strip() for line in read_text(text_file, "--text-file").splitlines() if line.strip()]
    return out


def _check_embed_args(run_dir: Path, modality: str, out: Path, given: list[bool], **sizes) -> None:
    """What `embed` can refuse before torch is imported (seconds): the modality, the inputs, sizes, --out."""
    from pcmpipe.runs.outdir import check_embed_settings, check_out
    from pcmpipe.training.rundir.record import modalities_of, read_record

    mods = modalities_of(read_record(run_dir))
    if modality not in mods:
        raise UserError(f"run {run_dir.name} has no modality {modality!r}; it has {', '.join(mods)}")
    if sum(given) != 1:
        raise UserError("pass exactly one kind of input: files/folders, --text/--text-file, or --cache DIR")
    check_embed_settings(**sizes)
    check_out(out, "--out", "embeddings")


@app.command("embed")
def embed_cmd(
    run_dir: Path = typer.Argument(..., help=RUN_HELP),
    inputs: list[Path] | None = typer.Argument(None, help="image or audio files, or folders of them"),
    modality: str = typer.Option(..., "--modality", help="which of the run's modalities the inputs are, e.g. I or T"),
    out: Path = typer.Option(..., "--out", help="new cache directory for the embeddings"),
    text: list[str] | None = typer.Option(None, "--text", help="a text to embed (repeatable)"),
    text_file: Path | None = typer.Option(None, "--text-file", help="texts to embed, one per line"),
    cache: Path | None = typer.Option(
        None, "--cache", help="a feature cache directory of this modality: its rows go through the head only"
    ),
    dtype: str = typer.Option("float32", "--dtype", help="stored precision: float32 or float16"),
    batch_size: int = typer.Option(64, "--batch-size", help="inputs per backbone forward pass"),
    workers: int | None = typer.Option(
        None, "--workers", help="image/audio decoding processes (default as `pcmpipe extract`; 0 = main process)"
    ),
    strict: bool = typer.Option(False, "--strict", help="stop at the first unusable input instead of skipping it"),
    rows_per_shard: int = typer.Option(4096, "--rows-per-shard", help="rows per finished shard (the unit of resume)"),
) -> None:
    """Embed new inputs with a trained run (backbone + head) into a cache of normalised embeddings."""
    with _guard():
        texts = _texts(text, text_file)
        given = [bool(inputs), bool(texts), cache is not None]
        sizes = {"dtype": dtype, "batch_size": batch_size, "workers": workers or 0, "rows_per_shard": rows_per_shard}
        _check_embed_args(run_dir, modality, out, given, **sizes)
        from rich.console import Console

        from pcmpipe.cli.render import ExtractBar
        from pcmpipe.extract.runner import default_workers
        from pcmpipe.runs import load_run
        from pcmpipe.runs.embed import embed_cache_to_cache, embed_inputs_to_cache
        from pcmpipe.runs.inputs import expand_files

        run = load_run(run_dir)
        with ExtractBar(Console(stderr=True)) as bar:

            def progress(done: int, total: int) -> None:
                bar(f"embed {modality}", done, total)

            if cache is not None:
                result = embed_cache_to_cache(
                    run, modality, cache, out, dtype=dtype, rows_per_shard=rows_per_shard, progress=progress
                )
            else:
                kind = run.kind(modality)
                if texts and kind != "text":
                    raise UserError(f"modality {modality} takes {kind or 'vector'} inputs, not --text")
                if inputs and kind not in ("image", "audio"):
                    raise UserError(
                        f"modality {modality} takes {kind or 'vector'} inputs, not files; use --text or --cache"
                    )
                items = texts if texts else [str(p) for p in expand_files(inputs or [], str(kind))]
                result = embed_inputs_to_cache(
                    run, modality, items, out, dtype=dtype, batch_size=batch_size, strict=strict,
                    workers=default_workers("cpu") if workers is None else workers, rows_per_shard=rows_per_shard,
                    progress=progress,
                )  # fmt: skip
        _report_embed(result, modality, dtype)


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
def search_cmd(
    run_dir: Path = typer.Argument(..., help=RUN_HELP),
    query: str | None = typer.Option(None, "--query", help="a text, or an image/audio file of the --from modality"),
    query_id: str | None = typer.Option(
        None, "--query-id", help="a row id of --from in any split of the run (the stored test rows first)"
    ),
    from_: str = typer.Option(..., "--from", help="the query's modality, e.g. T"),
    to: str = typer.Option(..., "--to", help="the modality to search, e.g. I"),
    k: int = typer.Option(10, "-k", "--k", help="how many results"),
    gallery: Path | None = typer.Option(
        None,
        "--gallery",
        help="an embeddings cache (`pcmpipe embed`) or index folder (`pcmpipe index`) of --to, embedded by this run "
        "(default: the run's stored test embeddings)",
    ),
    as_json: bool = typer.Option(False, "--json", help="print JSON (for scripts) instead of a table"),
) -> None:
    """Search from any of a run's modalities to any other; prints ids, scores and each row's caption or file."""
    with _guard():
        # every check that needs no torch comes first: a wrong name is answered in a fraction of a second
        from pcmpipe.runs.gallery import gallery_kind, read_run_record, search_gallery, stored_embedding

        if (query is None) == (query_id is None):
            raise UserError("pass one of --query (text or file) or --query-id (a stored row id)")
        if k < 1:
            raise UserError(f"-k must be at least 1, got {k}")
        record = read_run_record(run_dir)
        record.check_modality(from_, "--from")
        record.check_modality(to, "--to")
        if gallery is not None:
            gallery_kind(gallery)
        split = record.split_test
        if query_id is not None:  # a stored row: no backbone, no heads
            split, q = _row(record, from_, query_id, stored_embedding)
            pairs = search_gallery(record, to, q, k, gallery)[0]
        else:
            from pcmpipe.runs import load_run

            run = load_run(run_dir)
            pairs = search_gallery(run, to, run.embed(from_, [str(query)]), k, gallery)[0]
        from pcmpipe.runs.payload import Hit, item_sources

        sources = item_sources(run_dir) if gallery is None else None
        hits = sources.attach(to, pairs) if sources is not None else [Hit(i, s) for i, s in pairs]
        if as_json:
            typer.echo(json.dumps([h.as_dict() for h in hits]))
            return
        caption = _searched(record, to, gallery)
        if sources is not None and sources.note(to):
            caption += f"; no captions or files shown: {sources.note(to)}"
        what = query if query is not None else f"{query_id} (a row of the {split} split)"
        _print_hits(hits, f"{from_} -> {to}: {what}", caption)


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
def export_cmd(
    run_dir: Path = typer.Argument(..., help="a finished run directory, e.g. cache/runs/<name>"),
    out: Path = typer.Argument(..., help="new or empty folder to write"),
) -> None:
    """Write a run as a Hub-style folder: safetensors heads, config.json and a README model card."""
    with _guard():
        from pcmpipe.runs.export import export_run

        result = export_run(run_dir, out)
        if result.reused:
            typer.echo(f"{out} already holds this export of {run_dir.name}; nothing to do")
            return
        typer.echo(f"exported {run_dir.name} to {result.out}")
