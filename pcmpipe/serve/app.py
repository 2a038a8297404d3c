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
from pcmpipe.runs.payload import Hit
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


def _install_size_limit(app: FastAPI, limit: int) -> None:
    """A request declaring a body larger than an upload (plus its form fields) is refused before it is read."""

    @app.middleware("http")
    async def _size(request: Request, call_next):
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit + (64 << 10):
            return _error(413, f"the request has {int(declared):,} bytes; this service takes uploads up to {limit:,}")
        return await call_next(request)


def _install_auth(app: FastAPI, token: str | None) -> None:
    if token is None:
        return

    @app.middleware("http")
    async def _bearer(request: Request, call_next):
        if not token_ok(request.headers.get("authorization"), request.query_params.get("token"), token):
            return _error(401, "missing or wrong bearer token (Authorization: Bearer TOKEN, or ?token= in a URL)")
        return await call_next(request)


class Service:
    """What the routes share: the runs, the batcher (started with the app), thumbnails, the upload folder."""

    def __init__(self, served: dict[str, ServedRun], token: str | None, max_upload: int) -> None:
        self.served, self.max_upload = served, max_upload
        self.suffix = f"?token={token}" if token else ""  # media URLs carry it: an <img> sends no header
        self.thumbs = Thumbnails()
        self.batcher: Batcher | None = None
        self.uploads: Q.UploadDir | None = None

    def start(self) -> None:
        served = self.served
        self.batcher = Batcher(
            lambda g, items: Q.encode_group(served, g, items), lambda t, q: Q.search_group(served, t, q)
        )
        self.uploads = Q.UploadDir()

    def stop(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
        if self.uploads is not None:
            self.uploads.close()

    async def query(self, run: ServedRun, group_kind: str, item, from_: str, to: str | None, k: int):
        """Queue one query on the batcher and wait for its hits (or its embedding when `to` is None)."""
        assert self.batcher is not None, "the app's lifespan starts the batcher"
        run.run.kind(from_)  # an unknown modality is one line before anything is queued
        target = None
        if to is not None:
            run.run.kind(to)
            target = (run.name, to, k)
        return await asyncio.wrap_future(self.batcher.submit((run.name, from_, group_kind), item, target))

    def answer(self, run: ServedRun, from_: str, to: str, hits: list) -> dict:
        return {
            "run": run.name,
            "from": from_,
            "to": to,
            "searched": run.galleries[to].source,
            "note": run.describe_payload(to),
            "hits": [Q.hit_json(run, to, h, self.suffix) for h in hits],
        }

    async def uploaded(self, run: ServedRun, file: UploadFile, from_: str) -> Path:
        """An uploaded query file, checked (size, type, image header), written to the private upload folder."""
        assert self.uploads is not None
        data = await file.read(self.max_upload + 1)
        kind = run.run.kind(from_) or "vector"
        return self.uploads.write(data, check_upload(data, kind, self.max_upload))

    def stored_file(self, run: str, modality: str, row_id: str) -> Path:
        """The file of a stored row, only from under the run's recorded dataset roots (media.inside_roots)."""
        served_run = Q.pick_run(self.served, run)
        _, path = served_run.item(modality, row_id)
        if path is None:
            raise NotServable(f"run {run} has no media file for {modality} row {row_id[:80]!r}")
        return inside_roots(path, served_run.sources.roots())


def _direct(run: ServedRun, query: Q.Query) -> tuple[str, object]:
    """A JSON query's input: a stored row's vector (by id) or a text."""
    if query.id is not None:
        return "vector", run.vector_of(query.from_, query.id)
    return "text", query.text


def _json_routes(app: FastAPI, svc: Service) -> None:
    @app.get("/api/health")
    async def health() -> dict:
        stats = dict(svc.batcher.stats) if svc.batcher is not None else {}
        return {"status": "ok", "runs": list(svc.served), "batches": stats}

    @app.get("/api/runs")
    async def runs() -> dict:
        return {"runs": [r.describe() for r in svc.served.values()]}

    @app.post("/api/search")
    async def search(query: Q.Query) -> dict:
        run = Q.pick_run(svc.served, query.run)
        if query.to is None:
            raise UserError("to: the modality to search is missing")
        kind, item = _direct(run, query)
        hits = await svc.query(run, kind, item, query.from_, query.to, query.k)
        return svc.answer(run, query.from_, query.to, hits)

    @app.post("/api/embed")
    async def embed(query: Q.Query) -> dict:
        run = Q.pick_run(svc.served, query.run)
        kind, item = _direct(run, query)
        vec = await svc.query(run, kind, item, query.from_, None, 1)
        return {"run": run.name, "modality": query.from_, "embedding": [round(float(x), 7) for x in vec]}


def _upload_routes(app: FastAPI, svc: Service) -> None:
    @app.post("/api/search/file")
    async def search_file(
        file: UploadFile = File(...),
        from_: str = Form(..., alias="from", max_length=32),
        to: str = Form(..., max_length=32),
        k: int = Form(10, ge=1, le=Q.MAX_K),
        run: str | None = Form(None, max_length=200),
    ) -> dict:
        served_run = Q.pick_run(svc.served, run)
        path = await svc.uploaded(served_run, file, from_)
        try:
            hits = await svc.query(served_run, "file", path, from_, to, k)
        finally:
            path.unlink(missing_ok=True)
        return svc.answer(served_run, from_, to, hits)

    @app.post("/api/embed/file")
    async def embed_file(
        file: UploadFile = File(...),
        from_: str = Form(..., alias="from", max_length=32),
        run: str | None = Form(None, max_length=200),
    ) -> dict:
        served_run = Q.pick_run(svc.served, run)
        path = await svc.uploaded(served_run, file, from_)
        try:
            vec = await svc.query(served_run, "file", path, from_, None, 1)
        finally:
            path.unlink(missing_ok=True)
        return {"run": served_run.name, "modality": from_, "embedding": [round(float(x), 7) for x in vec]}


def _media_routes(app: FastAPI, svc: Service) -> None:
    @app.get("/api/item/{run}/{modality}/{row_id:path}")
    def item(run: str, modality: str, row_id: str) -> dict:
        served_run = Q.pick_run(svc.served, run)
        text, path = served_run.item(modality, row_id)
        if text is None and path is None:
            raise NotServable(f"run {run} knows no caption or file of {modality} row {row_id[:80]!r}")
        return Q.hit_json(served_run, modality, Hit(row_id, 0.0, text, path), svc.suffix) | {"modality": modality}

    @app.get("/api/media/{run}/{modality}/{row_id:path}")
    def media(run: str, modality: str, row_id: str) -> FileResponse:
        real = svc.stored_file(run, modality, row_id)
        return FileResponse(real, media_type=media_type(real))

    @app.get("/api/thumb/{run}/{modality}/{row_id:path}")
    def thumb(run: str, modality: str, row_id: str) -> Response:
        real = svc.stored_file(run, modality, row_id)
        headers = {"Cache-Control": "private, max-age=3600"}
        return Response(svc.thumbs.get(real), media_type="image/jpeg", headers=headers)

    @app.get("/")
    def index() -> FileResponse:
        return FileResponse(EXPLORER / "index.html", media_type="text/html")

    app.mount("/explorer", StaticFiles(directory=EXPLORER), name="explorer")


def create_app(served: dict[str, ServedRun], *, token: str | None = None, max_upload: int = MAX_UPLOAD_BYTES):
    """The FastAPI app over `served` (pcmpipe.serve.catalog.load_served). token: required on every route."""
    svc = Service(served, token, max_upload)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        svc.start()
        yield
        svc.stop()

    app = FastAPI(
        title="pcmpipe serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None,
        redirect_slashes=False,
    )  # fmt: skip
    _install_errors(app)
    _install_size_limit(app, max_upload)
    _install_auth(app, token)  # added last, so it runs first: no unauthenticated request is even measured
    _json_routes(app, svc)
    _upload_routes(app, svc)
    _media_routes(app, svc)
    return app
