"""A trained run on generated data, and `pcmpipe serve` over it started as a real subprocess on loopback."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from trained_run import TINY, extract_and_train

from pcmpipe.datasets.synthetic import synth

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 300  # seconds: loading torch and the run on a loaded two-core machine


@pytest.fixture(scope="package")
def served_run(tmp_path_factory) -> dict:
    """{"data", "cache", "run"}: 48 synthetic Flickr8k images (8 in the test split, 40 captions) and a run."""
    root = tmp_path_factory.mktemp("serve")
    data, cache = root / "flickr8k", root / "cache"
    synth("flickr8k", data, images=48, seed=5)
    run = extract_and_train(data, cache, ["I", "T"], TINY, epochs=2, name="beach")
    return {"data": data, "cache": cache, "run": run}


class Server:
    """`python -m pcmpipe serve ...` in its own process; `url` once it printed it, stopped with SIGINT."""

    def __init__(self, args: list[str], log: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}
        self.log = log
        self._out = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pcmpipe", "serve", *args], stdout=self._out, stderr=subprocess.STDOUT, env=env
        )
        self.url = self._wait_for_url()

    def _wait_for_url(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            found = re.search(r"open (http://\S+)", self.log.read_text())
            if found:
                base = found.group(1).split("?")[0]
                if self._healthy(base):
                    return found.group(1)
            if self.proc.poll() is not None:
                raise AssertionError(f"pcmpipe serve exited {self.proc.returncode}: {self.log.read_text()}")
            time.sleep(0.5)
        self.stop()
        raise AssertionError(f"pcmpipe serve did not start in {START_TIMEOUT} s: {self.log.read_text()}")

    def _healthy(self, base: str) -> bool:
        try:
            return httpx.get(base + "api/health", timeout=5).status_code in (200, 401)
        except httpx.HTTPError:
            return False

    @property
    def base(self) -> str:
        return self.url.split("?")[0].rstrip("/")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()


@pytest.fixture(scope="package")
def start_server(tmp_path_factory):
    """start_server(*args) -> a running Server (stopped at the end of the package)."""
    started: list[Server] = []

    def start(*args: str) -> Server:
        log = tmp_path_factory.mktemp("serve-log") / "serve.log"
        server = Server([str(a) for a in args], log)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="package")
def server(served_run, start_server) -> Iterator[Server]:
    """The service over the run on a free loopback port, with a 1 MB upload limit (to test it)."""
    yield start_server(served_run["run"], "--port", "0", "--max-upload-mb", "1")
