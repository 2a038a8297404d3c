"""The service's JSON API over real HTTP on loopback (the app in its own process): search from any modality to
any other with payloads, uploads within bounds, media only from the recorded roots, one-line 4xx errors,
batched concurrent queries, bearer tokens, and no lock or open file on the run."""

from __future__ import annotations

import concurrent.futures
import io
import os
import shutil
import struct
import zlib
from pathlib import Path

import httpx
import pytest
from PIL import Image
from typer.testing import CliRunner

from pcmpipe.cli import app
from pcmpipe.datasets import open_dataset


def _post(server, path: str, **kw) -> httpx.Response:
    return httpx.post(server.base + path, timeout=120, **kw)


def _one_line_error(r: httpx.Response, status: int, fragment: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert list(body) == ["error"] and "\n" not in body["error"] and fragment in body["error"], body
    assert "Traceback" not in r.text


def test_text_to_images_and_back_to_captions(server, served_run):
    ds = open_dataset("flickr8k", served_run["data"])
    images = {r.id: r.path for r in ds.records("I", "test")}
    texts = {r.id: r.text for r in ds.records("T", "test")}
    r = _post(server, "/api/search", json={"from": "T", "to": "I", "text": "a dog running on the beach", "k": 5})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert len(hits) == 5 and [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    for h in hits:
        assert (served_run["data"] / h["path"]).resolve() == images[h["id"]].resolve()
        thumb = httpx.get(server.base + h["thumb_url"], timeout=60)
        assert thumb.headers["content-type"] == "image/jpeg" and max(Image.open(io.BytesIO(thumb.content)).size) <= 256
        media = httpx.get(server.base + h["media_url"], timeout=60)
        assert media.content == images[h["id"]].read_bytes()
    # a result's id is a query of its own modality: image -> captions, with their text
    r = _post(server, "/api/search", json={"from": "I", "to": "T", "id": hits[0]["id"], "k": 3})
    assert [h["text"] for h in r.json()["hits"]] == [texts[h["id"]] for h in r.json()["hits"]]


def test_an_uploaded_image_searches_as_its_stored_row(server, served_run):
    ds = open_dataset("flickr8k", served_run["data"])
    first = ds.records("I", "test")[0]
    by_id = _post(server, "/api/search", json={"from": "I", "to": "T", "id": first.id, "k": 4}).json()["hits"]
    with open(first.path, "rb") as f:
        r = _post(server, "/api/search/file", data={"from": "I", "to": "T", "k": "4"}, files={"file": ("q.jpg", f)})
    assert r.status_code == 200, r.text
    assert [h["id"] for h in r.json()["hits"]] == [h["id"] for h in by_id]
    assert [h["score"] for h in r.json()["hits"]] == pytest.approx([h["score"] for h in by_id], abs=1e-3)
    emb = _post(server, "/api/embed", json={"from": "T", "text": "a dog"}).json()["embedding"]
    assert len(emb) == 32 and sum(x * x for x in emb) == pytest.approx(1.0, abs=1e-4)


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels in a few dozen bytes (a decompression bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    idat = b"IDAT" + zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", 13)
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + struct.pack(">I", len(idat) - 4)
        + idat
        + struct.pack(">I", zlib.crc32(idat))
    )


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("big.jpg", b"\xff\xd8\xff" + b"0" * (1 << 20), "this service takes up to 1,048,576"),
        ("bomb.png", _png_header(60000, 60000), "89,478,485 pcmpipe decodes"),
        ("wide.png", _png_header(30000, 10), "aspect ratio"),
        ("notes.jpg", b"hello, not an image", "is not an image file this service takes"),
        ("empty.jpg", b"", "empty"),
        ("broken.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "cannot be read"),
    ],
)
def test_uploads_are_bounded_and_checked_before_decoding(server, name, content, fragment):
    r = _post(server, "/api/search/file", data={"from": "I", "to": "T"}, files={"file": (name, content)})
    _one_line_error(r, 400, fragment)


def test_a_body_far_over_the_limit_is_refused_from_its_declared_size(server):
    big = b"\xff\xd8\xff" + b"0" * (3 << 20)
    r = _post(server, "/api/search/file", data={"from": "I", "to": "T"}, files={"file": ("huge.jpg", big)})
    _one_line_error(r, 413, "this service takes uploads up to 1,048,576")


@pytest.mark.parametrize(
    ("path", "body", "status", "fragment"),
    [
        ("/api/search", b"{not json", 422, "JSON"),
        ("/api/search", b'{"from": "T", "to": "I"}', 422, "pass one of text or id"),
        ("/api/search", b'{"from": "T", "to": "I", "text": "x", "k": 0}', 422, "k:"),
        ("/api/search", b'{"from": "T", "to": "I", "text": "x", "extra": 1}', 422, "extra"),
        ("/api/search", b'{"from": "Z", "to": "I", "text": "x"}', 400, "no modality 'Z'"),
        ("/api/search", b'{"from": "T", "to": "I", "text": "x", "run": "nope"}', 400, "no run named 'nope'"),
        ("/api/search", b'{"from": "I", "to": "T", "id": "../../etc/passwd"}', 400, "no I row"),
        ("/api/search", b'{"from": "T", "to": "I"' + b" " * 10, 422, "JSON"),
    ],
)
def test_malformed_requests_get_one_line_4xx(server, path, body, status, fragment):
    r = _post(server, path, content=body, headers={"content-type": "application/json"})
    _one_line_error(r, status, fragment)


@pytest.mark.parametrize(
    "row",
    ["../../../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "nope", "a%2F..%2F..%2Fb", "%00"],
)
def test_crafted_ids_reach_no_file(server, row):
    for route in ("media", "thumb", "item"):
        r = httpx.get(f"{server.base}/api/{route}/beach/I/{row}", timeout=30)
        assert r.status_code in (404, 400), (route, row, r.status_code, r.text[:200])
        assert list(r.json()) == ["error"]
    assert httpx.get(f"{server.base}/api/media/nope/I/x", timeout=30).status_code == 400
    assert httpx.get(f"{server.base}/../../etc/passwd", timeout=30).status_code == 404


def test_a_symlink_out_of_the_dataset_root_is_refused(server, served_run, tmp_path):
    ds = open_dataset("flickr8k", served_run["data"])
    record = ds.records("I", "test")[-1]
    secret = tmp_path / "secret.jpg"
    shutil.copy(record.path, secret)
    kept = tmp_path / "kept.jpg"
    shutil.move(record.path, kept)
    try:
        os.symlink(secret, record.path)
        for route in ("media", "thumb"):
            r = httpx.get(f"{server.base}/api/{route}/beach/I/{record.id}", timeout=30)
            _one_line_error(r, 404, "outside the dataset roots")
    finally:
        Path(record.path).unlink()
        shutil.move(kept, record.path)
    assert httpx.get(f"{server.base}/api/media/beach/I/{record.id}", timeout=30).status_code == 200


def test_concurrent_queries_are_answered_in_batches(server):
    texts = [f"a dog number {i} running on the beach" for i in range(32)]

    def ask(text: str) -> list:
        r = _post(server, "/api/search", json={"from": "T", "to": "I", "text": text, "k": 3})
        assert r.status_code == 200, r.text
        return r.json()["hits"]

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(ask, texts))
    assert all(len(a) == 3 for a in answers)
    stats = httpx.get(server.base + "/api/health", timeout=30).json()["batches"]
    assert stats["largest_batch"] > 1, stats  # 32 waiting queries were not encoded one at a time


def test_the_service_holds_no_file_of_the_run_open(server, served_run):
    run = served_run["run"].resolve()
    fds = Path(f"/proc/{server.proc.pid}/fd")
    if not fds.is_dir():
        pytest.skip("no /proc on this system")
    held = [os.readlink(fd) for fd in fds.iterdir() if os.path.exists(fd)]
    assert not [p for p in held if p.startswith(str(run))], held
    assert not list(run.parent.glob("*.lock")) and not list(run.glob("*.lock"))


def test_a_token_is_checked_on_every_route(served_run, start_server):
    token = "s3cret-token-for-the-test"
    server = start_server(served_run["run"], "--port", "0", "--token", token)
    assert server.url.endswith(f"?token={token}")
    for path in ("/", "/api/health", "/api/runs", "/explorer/app.js", "/api/thumb/beach/I/x"):
        _one_line_error(httpx.get(server.base + path, timeout=30), 401, "bearer token")
    wrong = {"Authorization": "Bearer not-the-token-at-all"}
    assert httpx.get(server.base + "/api/health", headers=wrong, timeout=30).status_code == 401
    good = {"Authorization": f"Bearer {token}"}
    assert httpx.get(server.base + "/api/health", headers=good, timeout=30).status_code == 200
    assert httpx.get(server.base + f"/?token={token}", timeout=30).status_code == 200
    r = _post(server, "/api/search", json={"from": "T", "to": "I", "text": "a dog"}, headers=good)
    assert r.status_code == 200 and r.json()["hits"][0]["thumb_url"].endswith(f"?token={token}")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--host", "0.0.0.0"], "pass --token SECRET"),
        (["--host", "0.0.0.0", "--token", "short"], "at least 16 characters"),
        (["--token", "x" * 20, "--no-auth"], "not both"),
        (["--port", "70000"], "--port"),
        (["--gallery", "I"], "M=DIR"),
        (["--set", "port=70000"], "--port must be between 0 and 65535"),
        (["--set", "max_upload_mb=201"], "--max-upload-mb must be between 1 and 200"),
        (["--set", "gallery=[I]"], "M=DIR"),
        (["--set", "galery=[I=x]"], "unknown serve setting galery; did you mean gallery?"),
    ],
)
def test_unsafe_or_wrong_flags_are_one_line(served_run, args, fragment):
    r = CliRunner().invoke(app, ["serve", str(served_run["run"]), *args], env={"COLUMNS": "300", "NO_COLOR": "1"})
    assert r.exit_code == 2, r.output
    assert len(r.stderr.strip().splitlines()) == 1 and fragment in r.stderr, r.stderr


def test_a_settings_file_reaches_the_service(served_run, start_server, tmp_path):
    """The file's port and upload limit are the service's (--set over the file), as the flags' are."""
    path = tmp_path / "serve.yaml"
    path.write_text("port: 8\nmax_upload_mb: 5\n")
    server = start_server(served_run["run"], "--config", path, "--set", "port=0", "--set", "max_upload_mb=2")
    big = b"\xff\xd8\xff" + b"0" * (3 << 20)
    r = _post(server, "/api/search/file", data={"from": "I", "to": "T"}, files={"file": ("huge.jpg", big)})
    _one_line_error(r, 413, "this service takes uploads up to 2,097,152")


def test_a_killed_service_restarts_with_nothing_to_repair(served_run, start_server):
    first = start_server(served_run["run"], "--port", "0")
    first.proc.kill()  # SIGKILL: no shutdown code runs
    first.proc.wait()
    again = start_server(served_run["run"], "--port", "0")
    r = _post(again, "/api/search", json={"from": "T", "to": "I", "text": "a dog", "k": 2})
    assert r.status_code == 200 and len(r.json()["hits"]) == 2
