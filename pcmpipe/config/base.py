"""What every settings schema shares: construction from plain data, copies, and one-line errors.

pydantic does the typing, coercion and bounds; this module turns its `ValidationError` into one `UserError`
line (the only place that conversion happens) and catches unknown keys first, so that a typo is answered with
the close setting ("unknown setting learning_rate; did you mean lr?") instead of pydantic's generic message.
"""

from __future__ import annotations

import difflib
import json
import os
import typing
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from pcmpipe.errors import UserError

# pydantic's bound errors -> the comparison they check, for a short "must be >= 1" message
_BOUNDS = {
    "greater_than": ("gt", ">"),
    "greater_than_equal": ("ge", ">="),
    "less_than": ("lt", "<"),
    "less_than_equal": ("le", "<="),
}


@dataclass(frozen=True)
class CommandLine:
    """What a schema's fields are on the command line and how its messages name them: one declaration per
    schema (`cli = CommandLine(kind="synth setting", ...)`), read by `Settings` and `pcmpipe.cli.options`."""

    kind: str = "setting"  # how error messages name a key ("training setting", ...)
    required: tuple[str, ...] = ()
    required_hint: str = ""
    # settings whose command-line flag is not `--<name-with-dashes>` (finetune's --workers is num_workers)
    flags: dict[str, str] = field(default_factory=dict)
    # how error messages name a setting whose field name is not the user's word (extract's `fmt` is "format")
    labels: dict[str, str] = field(default_factory=dict)
    # the help's placeholder of a setting where its type says too little (`<path>`, `<auto|cpu|cuda|cuda:N>`)
    metavars: dict[str, str] = field(default_factory=dict)
    # settings that have no flag of their own (mappings): a file, a pipeline or `--set` gives them
    not_flags: tuple[str, ...] = ()
    set_example: str = "stream_val_mb=8"  # the help's example of `--set key=value`
    # the settings with a flag of their own, in help order, where "config" and "set" place `--config FILE` and
    # `--set key=value`; empty: every setting but `not_flags`, then those two (pcmpipe.cli.options)
    cli_order: tuple[str, ...] = ()
    # settings given as the command's positional arguments, in order (evaluate's run directory)
    arguments: tuple[str, ...] = ()
    # list settings given as several values: the last positional argument (embed's files) or an option typed once
    # per value (`--text a --text b`); other lists are one comma-separated value (`--recall-k 1,5`)
    repeated: tuple[str, ...] = ()
    # a setting's short flag beside its long one (search's `-k`)
    short: dict[str, str] = field(default_factory=dict)


class Settings(BaseModel):
    """A schema of settings: every field has its type, bounds, choices and help (its description)."""

    # coerce_numbers_to_str: a YAML `name: 2024` or `split_val: 1` is the string a flag would give.
    # allow_inf_nan=False: a NaN learning rate is a user mistake, not a number.
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True, allow_inf_nan=False, validate_default=False)

    # how the settings are named in messages and given on the command line; each schema declares its own
    cli: typing.ClassVar[CommandLine] = CommandLine()

    @classmethod
    def flag_names(cls) -> list[str]:
        """The settings with a flag of their own, in help order (the others are given with `--set`)."""
        cli = cls.cli
        names = cli.cli_order or tuple(n for n in cls.model_fields if n not in cli.not_flags)
        return [n for n in names if n in cls.model_fields and n not in cli.arguments]

    @classmethod
    def flag_of(cls, name: str) -> str:
        return cls.cli.flags.get(name, f"--{name.replace('_', '-')}")

    @model_validator(mode="before")
    @classmethod
    def _plain_values(cls, data: Any) -> Any:
        """A path object is its text (library callers pass Path); a bool where a number belongs is a mistake
        (pydantic reads `epochs: true` as 1)."""
        if not isinstance(data, dict):
            return data
        numbers = (int, float, int | None, float | None)
        for k, v in data.items():
            f = cls.model_fields.get(k)
            if isinstance(v, bool) and f is not None and f.annotation in numbers:
                raise ValueError(f"setting {k}={v!r} has the wrong type (expected a number)")
        return {k: _plain(v) for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: Any) -> Any:
        """Build from plain data (YAML, flags, a pipeline section); any mistake is one UserError line."""
        if not isinstance(data, dict):
            raise UserError(f"a {cls.cli.kind} mapping is expected, got {type(data).__name__}")
        unknown = sorted(set(data) - set(cls.model_fields))
        if unknown:
            raise UserError(unknown_key_message(unknown[0], list(cls.model_fields), cls.cli.kind))
        missing = [n for n in cls.cli.required if data.get(n) in (None, "", [])]
        if missing:
            raise UserError(f"missing {cls.cli.kind}(s): {', '.join(missing)}{cls.cli.required_hint}")
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise UserError(user_message(cls, e)) from None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def to_cli_args(self) -> list[str]:
        """The command-line arguments that give this config back (after the command's name): each setting that
        differs from its default, as its flag where it has one and as `--set key=<JSON>` (a YAML value) otherwise,
        so a printed command reproduces the config, and its fingerprint, exactly."""
        args: list[str] = []
        cli = self.cli
        for name in cli.arguments:
            value = getattr(self, name)
            args += map(str, value) if name in cli.repeated else [str(value)]
        flagged = set(self.flag_names())
        for name, info in type(self).model_fields.items():
            if name in cli.arguments:
                continue
            value = getattr(self, name)
            if not info.is_required() and value == info.get_default(call_default_factory=True):
                continue
            as_flag = name in flagged and value is not None and not (isinstance(value, bool) and not value)
            if as_flag and isinstance(value, bool):
                args.append(self.flag_of(name))  # a switch: `--strict`, `--augment`
            elif as_flag and name in cli.repeated:
                args += [a for item in value for a in (self.flag_of(name), str(item))]
            elif as_flag and isinstance(value, list):
                args += [self.flag_of(name), ",".join(map(str, value))]
            elif as_flag and not isinstance(value, dict):
                args += [self.flag_of(name), str(value)]
            else:  # no flag, or a value a flag cannot say (None, false, a mapping)
                args += ["--set", f"{name}={json.dumps(value, sort_keys=True)}"]
        return args

    def replace(self, **changes: Any) -> Any:
        """A copy with some settings changed, validated again."""
        return type(self).from_dict({**self.to_dict(), **changes})


def _plain(value: Any) -> Any:
    """A path (or a list of paths, embed's files) as its text."""
    if isinstance(value, list | tuple) and any(isinstance(v, os.PathLike) for v in value):
        return [os.fspath(v) if isinstance(v, os.PathLike) else v for v in value]
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def unknown_key_message(key: str, valid: list[str], kind: str) -> str:
    """One line for an unknown key, with the close setting when there is one (learning_rate -> lr)."""
    # a shared prefix (lr_head -> lr, epoch -> epochs) or the initials of the words (learning_rate -> lr)
    # say more than difflib's ratio, which prefers long names with common letters (lr_head -> threads)
    prefix = sorted((v for v in valid if key.startswith(v) or v.startswith(key)), key=len, reverse=True)
    close = (
        prefix or [v for v in valid if v == _initials(key)] or difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    )
    hint = (
        f"did you mean {close[0]}?"
        if close
        else f"valid {kind}s: {', '.join(sorted(valid))}"
        if valid
        else f"there are no {kind}s here"
    )
    return f"unknown {kind} {key}; {hint}"


def _initials(key: str) -> str:
    return "".join(part[:1] for part in key.split("_"))


def user_message(cls: type[Settings], error: ValidationError) -> str:
    """The first problem of a ValidationError as one line naming the setting, the value and what is expected."""
    err = error.errors(include_url=False)[0]
    loc = [str(p) for p in err["loc"] if not isinstance(p, int)]
    name = loc[0] if loc else ""
    value = err.get("input")
    msg = str(err["msg"]).removeprefix("Value error, ")
    cli = cls.cli
    if not name:  # a check across settings (model validator): its message says everything
        return msg
    if err["type"] == "literal_error":
        label = cli.labels.get(name, name)
        return f"unknown {label} {value!r}; valid choices: {', '.join(map(str, choices(cls, name)))}"
    flag = cls.flag_of(name)
    if err["type"] in _BOUNDS:
        key, op = _BOUNDS[err["type"]]
        return f"{flag} must be {op} {err['ctx'][key]}, got {value!r}"
    if err["type"] == "finite_number":
        return f"{flag} must be a finite number, got {value!r}"
    if err["type"] == "string_pattern_mismatch":
        return f"invalid {name} {value!r}; use letters, digits, '_', '.', '-'"
    if err["type"] == "value_error":
        return msg
    expected = msg[0].lower() + msg[1:] if msg else "another value"
    return f"setting {name}={value!r} has the wrong type ({expected})"


def choices(cls: type[BaseModel], name: str) -> tuple[Any, ...]:
    """The Literal choices of a field (through Optional / list), or () when it has none."""
    return literal_values(cls.model_fields[name].annotation)


def literal_values(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    for arg in typing.get_args(annotation):
        found = literal_values(arg)
        if found:
            return found
    return ()
