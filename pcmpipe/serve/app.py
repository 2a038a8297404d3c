"""The HTTP service: a JSON API over the served runs, and the web explorer (static files in `explorer/`).

    GET  /api/health                       {"status": "ok", "runs": [...]}
    GET  /api/runs                         each run: modalities, kinds, gallery sizes, where payloads come from
    POST /api/search        JSON           {"from": "T", "to": "I", "text": "a dog", "k": 10} (or "id": a row)
    POST /api/search/file   multipart      file, from, to, k, run: an image or audio file as the query
    POST /api/embed         JSON           {"from": "T", "text": "a dog"} -> {"embedding": [...]}
    POST /api/embed/file    multipart      file, from, run
    GET  /api/item/RUN/M/ID                a stored row: its caption, or its media URLs
    GET  /api/media/RUN/M/ID               the row's file as is (image, audio)
    GET  /api/thumb/RUN/M/ID               a JPEG thumbnail of an image row

Every error is a 4xx (or 503) with one line of JSON, {"error": "..."}; an unexpected failure is a 500 with the
exception's type, never a traceback. Queries go through one batcher (pcmpipe.serve.batcher).
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from pcmpipe.errors import UserError
from pcmpipe.serve import queries as Q
from pcmpipe.serve.auth import token_ok
from pcmpipe.serve.batcher import Batcher
from pcmpipe.serve.catalog import ServedRun
from pcmpipe.serve.media import MAX_UPLOAD_BYTES, NotServable, Thumbnails, check_upload, inside_roots, media_type

EXPLORER = Path(__file__).with_name("explorer")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())[:500]}, status_code=status)


def _validation_line(err: RequestValidationError) -> str:
    first = err.errors()[0] if err.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    return f"{where}: {first.get('msg', 'invalid request')}" if where else str(first.get("msg", "invalid request"))


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(NotServable)
    async def _not_servable(_: Request, err: NotServable) -> JSONResponse:
        return _error(404, str(err))

    @app.exception_handler(UserError)
    async def _user(_: Request, err: UserError) -> JSONResponse:
        return _error(400, str(err))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_line(err))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, err: StarletteHTTPException) -> JSONResponse:
        return _error(err.status_code, str(err.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, err: Exception) -> JSONResponse:
        return _error(500, f"internal error ({type(err).__name__}); the service log has no more either")


def _install_auth(app: FastAPI, token: str | None) -> None:
    if token is None:
        return

    @app.middleware("http")
    async def _bearer(request: Request, call_next):
        if not token_ok(request.headers.get("authorization"), request.query_params.get("token"), token):
            return _error(401, "missing or wrong bearer token (Authorization: Bearer TOKEN, or ?token= in a URL)")
        return await call_next(request)


def create_app(served: dict[str, ServedRun], *, token: str | None = None, max_upload: int = MAX_UPLOAD_BYTES):
    """The FastAPI app over `served` (pcmpipe.serve.catalog.load_served). token: required on every route."""
    state: dict = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        state["batcher"] = Batcher(
            lambda g, items: Q.encode_group(served, g, items), lambda t, q: Q.search_group(served, t, q)
        )
        state["uploads"] = Q.UploadDir()
        yield
        state["batcher"].close()
        state["uploads"].close()

    app = FastAPI(
        title="pcmpipe serve",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        redirect_slashes=False,
    )
    _install_errors(app)
    _install_auth(app, token)
    thumbs = Thumbnails()
    suffix = f"?token={token}" if token else ""

    async def run_query(run: ServedRun, group_kind: str, item, from_: str, to: str | None, k: int):
        run.run.kind(from_)  # an unknown modality is one line before anything is queued
        target = None
        if to is not None:
            run.run.kind(to)
            target = (run.name, to, k)
        future = state["batcher"].submit((run.name, from_, group_kind), item, target)
        return await asyncio.wrap_future(future)

    def answer(run: ServedRun, from_: str, to: str, hits: list) -> dict:
        return {
            "run": run.name,
            "from": from_,
            "to": to,
            "searched": run.galleries[to].source,
            "note": run.describe_payload(to),
            "hits": [Q.hit_json(run, to, h, suffix) for h in hits],
        }

    def direct(run: ServedRun, query: Q.Query) -> tuple[str, object]:
        if query.id is not None:
            return "vector", run.vector_of(query.from_, query.id)
        return "text", query.text

    @app.get("/api/health")
    async def health() -> dict:
        return {"status": "ok", "runs": list(served), "batches": dict(state["batcher"].stats)}

    @app.get("/api/runs")
    async def runs() -> dict:
        return {"runs": [r.describe() for r in served.values()]}

    @app.post("/api/search")
    async def search(query: Q.Query) -> dict:
        run = Q.pick_run(served, query.run)
        if query.to is None:
            raise UserError("to: the modality to search is missing")
        kind, item = direct(run, query)
        hits = await run_query(run, kind, item, query.from_, query.to, query.k)
        return answer(run, query.from_, query.to, hits)

    @app.post("/api/embed")
    async def embed(query: Q.Query) -> dict:
        run = Q.pick_run(served, query.run)
        kind, item = direct(run, query)
        vec = await run_query(run, kind, item, query.from_, None, 1)
        return {"run": run.name, "modality": query.from_, "embedding": [round(float(x), 7) for x in vec]}

    async def uploaded(run: ServedRun, file: UploadFile, from_: str) -> Path:
        data = await file.read(max_upload + 1)
        kind = run.run.kind(from_) or "vector"
        return state["uploads"].write(data, check_upload(data, kind, max_upload))

    @app.post("/api/search/file")
    async def search_file(
        file: UploadFile = File(...),
        from_: str = Form(..., alias="from", max_length=32),
        to: str = Form(..., max_length=32),
        k: int = Form(10, ge=1, le=Q.MAX_K),
        run: str | None = Form(None, max_length=200),
    ) -> dict:
        served_run = Q.pick_run(served, run)
        path = await uploaded(served_run, file, from_)
        try:
            hits = await run_query(served_run, "file", path, from_, to, k)
        finally:
            path.unlink(missing_ok=True)
        return answer(served_run, from_, to, hits)

    @app.post("/api/embed/file")
    async def embed_file(
        file: UploadFile = File(...),
        from_: str = Form(..., alias="from", max_length=32),
        run: str | None = Form(None, max_length=200),
    ) -> dict:
        served_run = Q.pick_run(served, run)
        path = await uploaded(served_run, file, from_)
        try:
            vec = await run_query(served_run, "file", path, from_, None, 1)
        finally:
            path.unlink(missing_ok=True)
        return {"run": served_run.name, "modality": from_, "embedding": [round(float(x), 7) for x in vec]}

    def stored_file(run: str, modality: str, row_id: str) -> tuple[ServedRun, Path]:
        served_run = Q.pick_run(served, run)
        text, path = served_run.item(modality, row_id)
        if path is None:
            raise NotServable(f"run {run} has no media file for {modality} row {row_id[:80]!r}")
        return served_run, inside_roots(path, served_run.sources.roots())

    @app.get("/api/item/{run}/{modality}/{row_id:path}")
    def item(run: str, modality: str, row_id: str) -> dict:
        served_run = Q.pick_run(served, run)
        text, path = served_run.item(modality, row_id)
        if text is None and path is None:
            raise NotServable(f"run {run} knows no caption or file of {modality} row {row_id[:80]!r}")
        from pcmpipe.runs.payload import Hit

        return Q.hit_json(served_run, modality, Hit(row_id, 0.0, text, path), suffix) | {"modality": modality}

    @app.get("/api/media/{run}/{modality}/{row_id:path}")
    def media(run: str, modality: str, row_id: str) -> FileResponse:
        _, real = stored_file(run, modality, row_id)
        return FileResponse(real, media_type=media_type(real))

    @app.get("/api/thumb/{run}/{modality}/{row_id:path}")
    def thumb(run: str, modality: str, row_id: str) -> Response:
        _, real = stored_file(run, modality, row_id)
        headers = {"Cache-Control": "private, max-age=3600"}
        return Response(thumbs.get(real), media_type="image/jpeg", headers=headers)

    @app.get("/")
    def index() -> FileResponse:
        return FileResponse(EXPLORER / "index.html", media_type="text/html")

    app.mount("/explorer", StaticFiles(directory=EXPLORER), name="explorer")
    return app
