"""Command line: parse flags, build a config, call one library function, render what it returns.

Every command body runs inside `_guard`, which turns a `UserError` into one red line on stderr and exit
code 2. Heavy modules (torch, transformers) are imported inside the commands so `pcmpipe --help` is fast.
One module per command group; importing it registers its commands on `app`.
"""

from pcmpipe.cli import backbones, cache, datasets, experiments, extract, serve, training, use  # noqa: F401  (registers the commands)
from pcmpipe.cli.app import app
from pcmpipe.cli.options import FlagCommand

# The order `pcmpipe --help` lists the commands in.
_ORDER = [
    "synth",
    "run",
    "report",
    "demo",
    "download",
    "import-features",
    "cache-info",
    "train",
    "evaluate",
    "backbones",
    "extract",
    "finetune",
    "embed",
    "index",
    "search",
    "export",
    "serve",
]
app.registered_commands.sort(key=lambda c: _ORDER.index(c.name) if c.name in _ORDER else len(_ORDER))
for _command in app.registered_commands:
    _command.cls = FlagCommand  # boolean flags render as plain flags in every command's help

__all__ = ["app"]
