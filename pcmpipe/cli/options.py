"""Typer options built from the settings schema, and the help rendering every command shares.

A setting's flag, help text, default and choices are read from its field in pcmpipe.config, so they are
written once. Flags are parsed as text and validated by the schema, which gives every mistake in one line
whatever its source (flag, YAML file or `--set`).
"""

from __future__ import annotations

import types
import typing
from typing import Any

import typer
from pydantic import BaseModel
from typer.core import TyperCommand, TyperGroup, TyperOption

from pcmpipe.config import TrainConfig
from pcmpipe.config.base import literal_values

SET_HELP = "override any setting: key=value, a YAML value (repeatable), e.g. --set stream_val_mb=8"
CONFIG_HELP = "YAML file of settings; flags override it, --set overrides both"
FORMAT_METAVAR = (
    "<parquet|hdf5>"  # the cache's shard formats (pcmpipe.cache.shard.FORMATS, not imported for help speed)
)
_TYPE_NAMES = {int: "int", float: "float", str: "str"}


def setting(name: str, *flags: str, model: type[BaseModel] = TrainConfig, help: str | None = None) -> Any:
    """The option of schema field `name`: `--name-with-dashes`, the field's help and choices; None when not given."""
    field = model.model_fields[name]
    decls = flags or (f"--{name.replace('_', '-')}",)
    default = None if field.is_required() else field.get_default(call_default_factory=True)
    text = describe(help or field.description or "", default)
    if _bare(field.annotation) is bool:
        n = decls[0].removeprefix("--")
        return typer.Option(None, f"--{n}/--no-{n}", help=text, metavar="")
    return typer.Option(None, *decls, help=text, metavar=metavar(field.annotation))


def set_option() -> Any:
    """`--set key=value` (repeatable): any setting, parsed as a YAML value; wins over the file and the flags."""
    return typer.Option(None, "--set", help=SET_HELP, metavar="<key=value>")


def hidden_alias(*flags: str) -> Any:
    """An old spelling of an option, still accepted but not listed in the help."""
    return typer.Option(None, *flags, hidden=True)


def describe(text: str, default: Any) -> str:
    """The field's help plus its default, unless the help already says what the default is."""
    if default is None or "default" in text:
        return text
    return f"{text} (default {format_default(default)})"


def format_default(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        # 1e-4 reads better than 0.0001 for learning rates
        return f"{value:.0e}".replace("e-0", "e-") if value and abs(value) < 1e-3 else repr(value)
    if isinstance(value, list):
        return ",".join(map(str, value)) or "none"
    return str(value)


def metavar(annotation: Any) -> str:
    """`<pcmc|pcmr>` for a choice, else `<int>`, `<float>` or `<str>` (lists are comma-separated text)."""
    choices = literal_values(annotation)
    if choices and typing.get_origin(annotation) is not list:
        return f"<{'|'.join(map(str, choices))}>"
    return f"<{_TYPE_NAMES.get(_bare(annotation), 'str')}>"


def _bare(annotation: Any) -> Any:
    """Optional[int] -> int; anything else as it is."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _plain_flags(params: list) -> None:
    """A flag takes no value, so its help shows no `<bool>` type after it (typer's default does)."""
    for p in params:
        if isinstance(p, TyperOption) and p.is_flag and p.metavar is None:
            p.metavar = ""


class FlagCommand(TyperCommand):
    """A typer command whose help lists boolean flags as plain flags (`--dry-run`, not `--dry-run <bool>`)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _plain_flags(self.get_params(ctx))
        super().format_help(ctx, formatter)


class FlagGroup(TyperGroup):
    """The same for the top-level `pcmpipe --help`."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _plain_flags(self.get_params(ctx))
        super().format_help(ctx, formatter)
