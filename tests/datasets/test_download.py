"""Downloader and safe unpacking against a real HTTP server on 127.0.0.1 (Range, cut connections)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path

import pytest

from pcmpipe.datasets import open_dataset
from pcmpipe.datasets.archive import safe_extract
from pcmpipe.datasets.cub import PCME_COMMIT, PCME_TESTCLASSES_SHA256, PCME_VAL_LIST, PCME_VAL_SHA256
from pcmpipe.datasets.download import SOURCES, Source, download, fetch
from pcmpipe.datasets.synthetic import synth
from pcmpipe.errors import UserError


class Server:
    """Serves `files` (name -> bytes) with Range support; `cut[name] = (n_bytes, times)` makes the next
    `times` responses for `name` stop after n_bytes of the body (full Content-Length announced)."""

    def __init__(self, files: dict[str, bytes], honour_range: bool = True, wrong_range_once: bool = False):
        self.files, self.cut, self.requests = files, {}, []
        self.wrong_range = wrong_range_once
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                outer.requests.append((name, self.headers.get("Range")))
                if name not in outer.files:
                    self.send_error(404)
                    return
                body, start = outer.files[name], 0
                rng = self.headers.get("Range")
                if rng and honour_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if outer.wrong_range:  # a broken proxy: answers from another offset
                        outer.wrong_range, start = False, start // 2
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                chunk = body[start:]
                self.send_header("Content-Length", str(len(chunk)))
                self.end_headers()
                n, times = outer.cut.get(name, (None, 0))
                if times:
                    outer.cut[name] = (n, times - 1)
                    self.wfile.write(chunk[:n])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(chunk)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


PAYLOAD = os.urandom(300_000)


def test_fetch_verifies_and_cleans_up(tmp_path):
    with Server({"f.bin": PAYLOAD}) as srv:
        path = fetch(f"{srv.url}/f.bin", tmp_path / "f.bin", md5=md5(PAYLOAD))
        assert path.read_bytes() == PAYLOAD and not (tmp_path / "f.bin.part").exists()
        fetch(f"{srv.url}/f.bin", tmp_path / "f.bin", md5=md5(PAYLOAD))  # already there: no request
        assert len(srv.requests) == 1


def test_cut_transfer_resumes_with_range(tmp_path):
    with Server({"f.bin": PAYLOAD}) as srv:
        srv.cut["f.bin"] = (100_000, 1)
        path = fetch(f"{srv.url}/f.bin", tmp_path / "f.bin", md5=md5(PAYLOAD))
        assert path.read_bytes() == PAYLOAD
        assert srv.requests == [("f.bin", None), ("f.bin", "bytes=100000-")]


def test_resume_across_runs_from_part_file(tmp_path):
    with Server({"f.bin": PAYLOAD}) as srv:
        srv.cut["f.bin"] = (70_000, 1)
        with pytest.raises(UserError, match=r"broke off after 70000 bytes.*run the command again"):
            fetch(f"{srv.url}/f.bin", tmp_path / "f.bin", md5=md5(PAYLOAD), retries=0)
        assert (tmp_path / "f.bin.part").stat().st_size == 70_000
        fetch(f"{srv.url}/f.bin", tmp_path / "f.bin", md5=md5(PAYLOAD), retries=0)
        assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
        assert srv.requests[-1] == ("f.bin", "bytes=70000-")


def test_part_already_complete_gets_416_and_verifies(tmp_path):
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD)
    with Server({"f.bin": PAYLOAD}) as srv:
        fetch(f"{srv.url}/f.bin", tmp_path / "f.bin", md5=md5(PAYLOAD))
        assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_from_zero(tmp_path):
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD[:5000])
    with Server({"f.bin": PAYLOAD}, honour_range=False) as srv:
        fetch(f"{srv.url}/f.bin", tmp_path / "f.bin", md5=md5(PAYLOAD))
        assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
        assert srv.requests == [("f.bin", "bytes=5000-")]


def test_answer_for_another_range_restarts(tmp_path):
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD[:8000])
    with Server({"f.bin": PAYLOAD}, wrong_range_once=True) as srv:
        fetch(f"{srv.url}/f.bin", tmp_path / "f.bin", md5=md5(PAYLOAD))
        assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
        assert srv.requests == [("f.bin", "bytes=8000-"), ("f.bin", None)]


def test_checksum_mismatch_moves_file_to_bad(tmp_path):
    with Server({"f.bin": PAYLOAD}) as srv:
        with pytest.raises(UserError, match=r"checksum mismatch for f.bin.*f.bin.bad"):
            fetch(f"{srv.url}/f.bin", tmp_path / "f.bin", md5="0" * 32)
    assert (tmp_path / "f.bin.bad").read_bytes() == PAYLOAD
    assert not (tmp_path / "f.bin").exists() and not (tmp_path / "f.bin.part").exists()


def test_http_error_is_user_error(tmp_path):
    with Server({}) as srv:
        with pytest.raises(UserError, match=r"cannot download .*/nope.zip: HTTP 404"):
            fetch(f"{srv.url}/nope.zip", tmp_path / "nope.zip")


# ---- safe unpacking --------------------------------------------------------------------------------


def make_tar(path: Path, members: list[tarfile.TarInfo], data: dict[str, bytes] | None = None) -> Path:
    data = data or {}
    with tarfile.open(path, "w:gz") as tf:
        for info in members:
            body = data.get(info.name)
            if body is not None:
                info.size = len(body)
            tf.addfile(info, io.BytesIO(body) if body is not None else None)
    return path


def tinfo(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    return info


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(
    "members,data,reason",
    [
        ([tinfo("ok.txt"), tinfo("../evil")], {"ok.txt": b"ok", "../evil": b"x"}, "outside"),
        ([tinfo("/tmp/evil")], {"/tmp/evil": b"x"}, "absolute"),
        ([tinfo("ok.txt"), tinfo("link", tarfile.SYMTYPE, "../../etc/passwd")], {"ok.txt": b"ok"}, "points outside"),
        ([tinfo("link", tarfile.SYMTYPE, "/etc/passwd")], {}, "absolute"),
        ([tinfo("hard", tarfile.LNKTYPE, "../outside.txt")], {}, "hardlink"),
        ([tinfo("dev", tarfile.CHRTYPE)], {}, "device"),
        ([tinfo("fifo", tarfile.FIFOTYPE)], {}, "device"),
    ],
)
def test_tar_refuses_escapes_and_writes_nothing(tmp_path, members, data, reason):
    archive = make_tar(tmp_path / "bad.tar.gz", members, data)
    target = tmp_path / "sandbox" / "target"
    with pytest.raises(UserError, match=reason):
        safe_extract(archive, target)
    assert listing(tmp_path / "sandbox") == ["target"]  # nothing inside, nothing beside


def test_tar_with_inside_links_unpacks(tmp_path):
    archive = make_tar(
        tmp_path / "ok.tgz",
        [
            tinfo("d", tarfile.DIRTYPE),
            tinfo("d/a.txt"),
            tinfo("d/l", tarfile.SYMTYPE, "a.txt"),
            tinfo("__MACOSX/d/._a.txt"),
        ],
        {"d/a.txt": b"hello", "__MACOSX/d/._a.txt": b"junk"},
    )
    names = safe_extract(archive, tmp_path / "out")
    assert (tmp_path / "out" / "d" / "l").read_bytes() == b"hello"
    assert not (tmp_path / "out" / "__MACOSX").exists() and "__MACOSX/d/._a.txt" not in names


def make_zip(path: Path, entries: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, body in entries.items():
            zf.writestr(name, body)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16
            zf.writestr(info, target)
    return path


@pytest.mark.parametrize(
    "entries,links,reason",
    [
        ({"ok.txt": b"ok", "../evil": b"x"}, {}, "outside"),
        ({"/abs/evil": b"x"}, {}, "absolute"),
        ({"C:\\evil": b"x"}, {}, "absolute"),
        ({"ok.txt": b"ok"}, {"up": "../../x"}, "points outside"),
        ({}, {"here": ".", "there": "here/.."}, "outside"),
    ],
)
def test_zip_refuses_escapes(tmp_path, entries, links, reason):
    archive = make_zip(tmp_path / "bad.zip", entries, links)
    target = tmp_path / "sandbox" / "target"
    with pytest.raises(UserError, match=reason):
        safe_extract(archive, target)
    assert not any(p.name in ("evil", "x") for p in tmp_path.rglob("*"))
    assert all(
        str(p).startswith(str(tmp_path / "sandbox" / "target"))
        for p in (tmp_path / "sandbox").rglob("*")
        if p != tmp_path / "sandbox" / "target"
    )


def test_corrupt_archive_is_user_error(tmp_path):
    (tmp_path / "x.tgz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(UserError, match="x.tgz"):
        safe_extract(tmp_path / "x.tgz", tmp_path / "out")


# ---- whole datasets through the server ---------------------------------------------------------------


def pack_tar(src_root: Path, top: list[str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name in top:
            tf.add(src_root / name, arcname=name)
    return buf.getvalue()


def pack_zip(src_root: Path, files: list[Path], macosx: bool = False) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in files:
            rel = p.relative_to(src_root).as_posix()
            zf.write(p, rel)
            if macosx:  # the real Flickr8k zips carry resource forks
                zf.writestr(f"__MACOSX/{Path(rel).parent.as_posix()}/._{p.name}", b"\x00\x05")
    return buf.getvalue()


def test_download_flickr8k_layout_end_to_end(tmp_path):
    src = tmp_path / "src"
    synth("flickr8k", src, images=12, seed=4)
    archives = {
        "Flickr8k_Dataset.zip": pack_zip(src, sorted((src / "Flicker8k_Dataset").glob("*.jpg")), macosx=True),
        "Flickr8k_text.zip": pack_zip(src, sorted(src.glob("*.txt"))),  # real zip: text files at the top
        "flickr_audio.tar.gz": pack_tar(src, ["flickr_audio"]),
    }
    sources = [Source(f"https://example.invalid/x/{n}", md5(b)) for n, b in archives.items()]
    root = tmp_path / "root"
    with Server(archives) as srv:
        srv.cut["flickr_audio.tar.gz"] = (len(archives["flickr_audio.tar.gz"]) // 2, 1)
        summary = download("flickr8k", root, base_url=srv.url + "/", sources=sources, retries=2)
        n_requests = len(srv.requests)
        download("flickr8k", root, base_url=srv.url, sources=sources)  # second run: nothing fetched
        assert len(srv.requests) == n_requests
    record = json.loads((root / "downloads" / "DOWNLOADS.json").read_text())
    audio_sha = hashlib.sha256(archives["flickr_audio.tar.gz"]).hexdigest()
    assert record["flickr_audio.tar.gz"]["sha256"] == audio_sha
    assert record["flickr_audio.tar.gz"]["verified"] == record["Flickr8k_text.zip"]["verified"] == "md5"
    assert summary["manual"] is None
    assert not (root / "__MACOSX").exists()
    got, want = open_dataset("flickr8k", root), open_dataset("flickr8k", src)
    for m in ("I", "T", "S"):
        assert [r.id for r in got.records(m, "train")] == [r.id for r in want.records(m, "train")]


@pytest.mark.slow  # end to end: a synthetic CUB packed, "downloaded", verified and unpacked, then the CLI
def test_download_cub_layout_end_to_end_and_cli_mismatch(tmp_path):
    src = tmp_path / "src"
    synth("cub", src, images=2, seed=4)
    tgz = pack_tar(src, ["CUB_200_2011", "attributes.txt"])
    split_list = (src / "seen_test_images.txt").read_bytes()
    sources = [
        Source("https://x.invalid/CUB_200_2011.tgz", md5(tgz)),
        # PCME's val list: a plain file with a pinned sha256, copied into root (not unpacked)
        Source(
            "https://x.invalid/seen_test_images.txt",
            None,
            sha256=hashlib.sha256(split_list).hexdigest(),
            unpack=False,
        ),
    ]
    root = tmp_path / "root"
    files = {"CUB_200_2011.tgz": tgz, "seen_test_images.txt": split_list}
    with Server(files) as srv:
        summary = download("cub", root, base_url=srv.url, sources=sources)
        assert "cvpr2016_cub" in summary["manual"]
        assert summary["files"]["seen_test_images.txt"]["verified"].startswith("sha256")
        assert (root / "attributes.txt").is_file()
        assert (root / "seen_test_images.txt").read_bytes() == split_list
        ds = open_dataset("cub", root)  # the default val split reads the fetched list
        held_out = {ln.strip() for ln in split_list.decode().splitlines() if ln.strip()}
        val_paths = {r.path.relative_to(root / "CUB_200_2011" / "images").as_posix() for r in ds.records("I", "val")}
        assert val_paths and val_paths <= held_out
        assert len(ds.records("I", "train")) == len(val_paths) == 150  # two images a seen class: one each
        with pytest.raises(UserError, match="cvpr2016_cub"):
            ds.records("T", "train")  # captions are the manual step
        # the real command against the same server: the synthetic archive fails the official md5
        env = {**os.environ, "PCMPIPE_DOWNLOAD_BASE": srv.url}
        proc = subprocess.run(
            [sys.executable, "-m", "pcmpipe", "download", "cub", "--root", str(tmp_path / "r2")],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
    assert proc.returncode == 2, proc.stderr
    assert "checksum mismatch for CUB_200_2011.tgz" in proc.stderr and SOURCES["cub"][0].md5 in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (tmp_path / "r2" / "downloads" / "CUB_200_2011.tgz.bad").is_file()


def test_pcme_split_list_is_pinned_and_checked_by_sha256(tmp_path):
    """The CUB sources fetch PCME's list at a fixed commit; a file that is not the pinned one is refused."""
    [pcme] = [s for s in SOURCES["cub"] if s.filename == PCME_VAL_LIST]
    assert PCME_COMMIT in pcme.url and pcme.url.startswith("https://raw.githubusercontent.com/naver-ai/pcme/")
    assert pcme.sha256 == PCME_VAL_SHA256 and not pcme.unpack
    # the packaged test classes are PCME's testclasses.txt at the same commit
    packaged = resources.files("pcmpipe.data").joinpath("pcme_testclasses.txt").read_bytes()
    assert hashlib.sha256(packaged).hexdigest() == PCME_TESTCLASSES_SHA256
    changed = b"001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111.jpg\n"
    with Server({PCME_VAL_LIST: changed}) as srv:
        with pytest.raises(UserError, match=rf"checksum mismatch for {PCME_VAL_LIST}: sha256 .*expected {pcme.sha256}"):
            download("cub", tmp_path, base_url=srv.url, sources=[pcme])
    assert (tmp_path / "downloads" / f"{PCME_VAL_LIST}.bad").read_bytes() == changed
    assert not (tmp_path / PCME_VAL_LIST).exists()


def test_audio_corpus_is_pinned_and_checked_by_md5(tmp_path):
    """The spoken captions are checked against the md5 their corpus page lists: a real tar.gz of the same
    name that is not the official archive is one line naming both md5s, kept as .bad and never unpacked."""
    [audio] = [s for s in SOURCES["flickr8k"] if s.filename == "flickr_audio.tar.gz"]
    assert audio.md5 == "9d078f1f150c26e864aa64d1d733779a" and audio.unpack
    src = tmp_path / "src"
    synth("flickr8k", src, images=2, seed=4)
    tgz = pack_tar(src, ["flickr_audio"])
    root = tmp_path / "root"
    with Server({audio.filename: tgz}) as srv:
        with pytest.raises(UserError) as err:
            download("flickr8k", root, base_url=srv.url, sources=[audio])
    msg = str(err.value)
    assert "\n" not in msg and f"checksum mismatch for {audio.filename}: md5 {md5(tgz)}, expected {audio.md5}" in msg
    assert (root / "downloads" / f"{audio.filename}.bad").read_bytes() == tgz
    assert not (root / "flickr_audio").exists() and not (root / "downloads" / audio.filename).exists()
