"""Who may ask: the address the service binds to, and the bearer token every route checks.

On 127.0.0.1 (the default) only this machine can connect, and no token is needed. Any other address exposes
the runs and the dataset files to the network, so it needs `--token` (checked on every route, the explorer's
files included) or an explicit `--no-auth`, which prints a warning. The explorer passes the token it was opened
with (`/?token=...`) on to the API in the Authorization header.
"""

from __future__ import annotations

import hmac
import ipaddress

from pcmpipe.errors import UserError

LOOPBACK = "127.0.0.1"
MIN_TOKEN = 16  # characters: a guessable token is no protection


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_policy(host: str, token: str | None, no_auth: bool) -> str | None:
    """Check the address and the token flags together -> a warning to print, or None; one line for a refusal."""
    if token is not None and no_auth:
        raise UserError("pass --token or --no-auth, not both")
    if token is not None and len(token) < MIN_TOKEN:
        raise UserError(f"--token must have at least {MIN_TOKEN} characters (e.g. `python -c 'import secrets; "
                        "print(secrets.token_urlsafe())'`)")  # fmt: skip
    if is_loopback(host) or token is not None:
        return None
    if not no_auth:
        raise UserError(
            f"--host {host} lets other machines reach the runs and the dataset files; pass --token SECRET "
            "(clients send `Authorization: Bearer SECRET`) or --no-auth to serve without one"
        )
    return f"serving on {host} with no token (--no-auth): anyone who can reach this address can search and read media"


def token_ok(header: str | None, query_token: str | None, token: str) -> bool:
    """The request's bearer token (header, or ?token= for the explorer's first page and media elements)."""
    given = None
    if header and header.lower().startswith("bearer "):
        given = header[7:].strip()
    elif query_token:
        given = query_token
    return given is not None and hmac.compare_digest(given.encode(), token.encode())
