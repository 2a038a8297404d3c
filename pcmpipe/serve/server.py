"""Start the service: load the runs, bind the socket, print the URL, run uvicorn until interrupted."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pcmpipe.errors import UserError


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port); port 0 picks a free one. One line when the address is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port} ({err.strerror}); pick another --port or --host") from None
    sock.listen(128)
    return sock


@dataclass
class Service:
    """A loaded service, its socket bound: `url` is where to open it, `served` what it serves."""

    app: Any
    sock: socket.socket
    url: str
    served: dict

    def summary(self) -> str:
        """What is served, in words: each run with its galleries' modalities and sizes."""
        runs = (
            f"{r.name} ({', '.join(f'{m} {g.size}' for m, g in r.galleries.items())})" for r in self.served.values()
        )
        return ", ".join(runs)


def prepare(
    runs: list[Path], *, host: str, port: int, token: str | None, galleries: list[str], max_upload: int
) -> Service:
    """Load `runs` (catalog.load_served), build the app and bind host:port (0: a free port)."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as err:
        raise UserError(f"`pcmpipe serve` needs {err.name}: pip install 'pcmpipe[serve]'") from None
    from pcmpipe.serve.app import create_app
    from pcmpipe.serve.catalog import load_served

    served = load_served(runs, galleries)
    app = create_app(served, token=token, max_upload=max_upload)
    sock = bind(host, port)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{sock.getsockname()[1]}/" + (f"?token={token}" if token else "")
    return Service(app, sock, url, served)


def run_until_stopped(service: Service) -> None:
    """Answer HTTP on the service's socket until Ctrl-C (or SIGTERM)."""
    import uvicorn

    config = uvicorn.Config(service.app, log_level="warning", access_log=False, lifespan="on")
    try:
        uvicorn.Server(config).run(sockets=[service.sock])
    finally:
        service.sock.close()
