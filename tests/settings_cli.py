"""Calling a command on the settings schema the way a user would: flags, a settings file, `--set` items.

`run_cli` returns the command's output when it succeeds, else its one error line (a test that expects code 2
fails if there is more than one line or a traceback); `settings_file` writes a YAML mapping of settings;
`as_sets` turns the same mapping into `--set key=<JSON>` arguments (JSON is a YAML value)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from pcmpipe.cli import app

ENV = {"COLUMNS": "400", "TERM": "dumb", "NO_COLOR": "1"}


def run_cli(*args: Any, code: int = 0) -> str:
    """The command's output when it succeeds (code 0), else its one error line (code 2)."""
    res = CliRunner().invoke(app, [str(a) for a in args], env=ENV)
    assert res.exit_code == code and "Traceback" not in res.output, (args, res.output, res.exception)
    if code == 0:
        return res.stdout
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, (args, res.stderr)
    return lines[0]


def settings_file(path: Path, **values: Any) -> Path:
    path.write_text(yaml.safe_dump(values))
    return path


def as_sets(settings: dict[str, Any]) -> list[str]:
    return [a for k, v in settings.items() for a in ("--set", f"{k}={json.dumps(v)}")]
