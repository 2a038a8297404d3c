"""Typer options built from the settings schema, and the help rendering every command shares.

A setting's flag, help text, default and choices are read from its field in pcmpipe.config, so they are
written once: `settings_command(Model)` gives a command one option per setting plus `--config FILE` and
`--set key=value`, and hands it what was typed (`GivenSettings`, merged by `pcmpipe.config.merge_settings`).
Flags are parsed as text and validated by the schema, which gives every mistake in one line whatever its
source (flag, YAML file or `--set`).
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup, TyperOption

from pcmpipe.config.base import Settings, literal_values

SET_HELP = "override any setting: key=value, a YAML value (repeatable), e.g. --set {}"
CONFIG_HELP = "YAML file of settings; flags override it, --set overrides both"
_TYPE_NAMES = {int: "int", float: "float", str: "str"}


@dataclass
class GivenSettings:
    """What a command's user typed: a settings file, the flags given (not their defaults) and `--set` items."""

    model: type[Settings]
    config: Path | None = None
    flags: dict[str, Any] = field(default_factory=dict)
    sets: list[str] = field(default_factory=list)

    def load(self) -> Any:
        """The validated settings: defaults < the file < the flags < `--set` (pcmpipe.config.merge)."""
        from pcmpipe.config import merge_settings

        return self.model.from_dict(merge_settings(self.config, self.flags, self.sets, model=self.model))


# the two options every settings command takes besides its settings; `names` may place them
CONFIG, SET = "config", "set"


def settings_command(
    model: type[Settings],
    *,
    help: dict[str, str] | None = None,
    aliases: dict[str, str] | None = None,
    shown_defaults: bool = False,
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command one option per setting of `model`, plus `--config FILE` and `--set key=value`.

    The command function takes `given: GivenSettings` (and any parameters of its own, declared as usual);
    `given.load()` is the validated config. The settings with a flag, and their order, are `model.cli.cli_order`
    (where "config" and "set" place those two) or every field but `model.cli.not_flags`. help: help text of
    this command that differs from the field's description (or, under "config", from `--config`'s).
    aliases: an old, hidden spelling of a setting's flag.
    shown_defaults: typer's own `[default: X]` after the help, plain switches (`--no-X` only beside a switch that
    is on by default) and the required settings required on the command line (extract's help), instead of
    `(default X)` and everything optional.
    """
    order = [*model.cli.arguments, *(model.cli.cli_order or [*model.flag_names(), CONFIG, SET])]

    def wrap(command: Callable[..., None]) -> Callable[..., None]:
        own = [p for p in inspect.signature(command).parameters.values() if p.name != "given"]
        params = [_param(model, n, (help or {}).get(n), shown_defaults) for n in order]
        params += [_alias_param(n, flag) for n, flag in (aliases or {}).items()]

        @functools.wraps(command)
        def run(_ctx: typer.Context, **values: Any) -> None:
            given = GivenSettings(model, values.pop(CONFIG, None), sets=list(values.pop(SET, None) or []))
            for name in [n for n in order if n not in (CONFIG, SET)] + [f"{n}_alias" for n in aliases or {}]:
                value = values.pop(name)
                source = _ctx.get_parameter_source(name)  # a default (or a value typer filled in) was not typed
                if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP") and value is not None:
                    given.flags.setdefault(name.removesuffix("_alias"), value)
            command(given=given, **values)

        context = inspect.Parameter("_ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
        run.__signature__ = inspect.Signature([context, *own, *params])  # type: ignore[attr-defined]
        return run

    return wrap


def _param(model: type[Settings], name: str, help: str | None, shown_defaults: bool) -> inspect.Parameter:
    """One keyword parameter of a generated command: typer reads its annotation and its Option default."""
    if name == CONFIG:
        option = typer.Option(None, "--config", help=help or CONFIG_HELP)
        return _keyword(name, option, Path | None)
    if name == SET:
        return _keyword(name, set_option(model.cli.set_example), list[str] | None)
    field_info, cli = model.model_fields[name], model.cli
    if name in cli.arguments:
        return _argument(model, name, help or field_info.description)
    flags = [model.flag_of(name), *([cli.short[name]] if name in cli.short else [])]
    text = help or field_info.description or ""
    default = None if field_info.is_required() else field_info.get_default(call_default_factory=True)
    shown_metavar = cli.metavars.get(name) or metavar(field_info.annotation)
    if name in cli.repeated:  # typed once per value (`--text a --text b`); typer shows <list[str]>
        option = typer.Option(None, *flags, help=text, metavar=cli.metavars.get(name))
        return _keyword(name, option, list[str] | None)
    if _bare(field_info.annotation) is bool:
        n = flags[0].removeprefix("--")
        if shown_defaults and default:  # on by default, so it needs its off form: `--tags/--no-tags`
            return _keyword(name, typer.Option(True, f"--{n}/--no-{n}", *flags[1:], help=text), bool)
        if shown_defaults:  # a plain switch, off by default (`--strict`)
            return _keyword(name, typer.Option(default, *flags, help=text, metavar=""), bool)
        option = typer.Option(None, f"--{n}/--no-{n}", *flags[1:], help=describe(text, default), metavar="")
        return _keyword(name, option, bool | None)
    if shown_defaults:  # typer shows the default (lists as they are typed: train,val,test) or [required]
        shown = format_default(default) if isinstance(default, list) else ... if field_info.is_required() else default
        option = typer.Option(shown, *flags, help=text, metavar=shown_metavar)
    else:
        option = typer.Option(None, *flags, help=describe(text, default), metavar=shown_metavar)
    return _keyword(name, option, str | None)


def _argument(model: type[Settings], name: str, help: str | None) -> inspect.Parameter:
    """A positional argument: typer names it by its parameter and shows its type (path or str); a repeated one
    takes the rest of the command line (embed's files)."""
    field_info = model.model_fields[name]
    kind: Any = Path if model.cli.metavars.get(name) == "<path>" else str
    required = field_info.is_required()
    if name in model.cli.repeated:
        return _keyword(name, typer.Argument(... if required else None, help=help), list[kind] | None)
    return _keyword(name, typer.Argument(... if required else field_info.default, help=help), kind)


def _keyword(name: str, default: Any, annotation: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def _alias_param(name: str, flag: str) -> inspect.Parameter:
    return _keyword(f"{name}_alias", hidden_alias(flag), str | None)


def set_option(example: str) -> Any:
    """`--set key=value` (repeatable): any setting, parsed as a YAML value; wins over the file and the flags."""
    return typer.Option(None, "--set", help=SET_HELP.format(example), metavar="<key=value>")


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
