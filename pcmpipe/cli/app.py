"""The typer app and what every command shares: the error guard and list parsing.

Every command body runs inside `_guard`, which turns a `UserError` into one red line on stderr and exit
code 2. Heavy modules (torch, transformers) are imported inside the commands so `pcmpipe --help` is fast.
"""

from __future__ import annotations

import contextlib

import typer
from rich.console import Console

from pcmpipe.cli.options import FlagGroup
from pcmpipe.errors import UserError

app = typer.Typer(
    cls=FlagGroup,
    name="pcmpipe",
    help="Cross-modal coordination across many modalities: extract features, train PCMC/PCMR heads, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


@contextlib.contextmanager
def _guard():
    """User errors end in one line and exit 2; KeyboardInterrupt exits 130 without a traceback."""
    try:
        yield
    except UserError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None  # the one line above is the whole story; no chained traceback
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None


def _csv(value: str | None) -> list[str] | None:
    """'I,T,S' -> ['I', 'T', 'S']; None stays None."""
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]
