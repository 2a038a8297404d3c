"""The settings of the commands that use a trained run: `embed` (`EmbedConfig`), `search` (`SearchConfig`),
`export` (`ExportConfig`) and `serve` (`ServeConfig`).

As in commands.py, each field is a setting once (flag, help, choices, default) and the command takes
`--config FILE` and `--set key=value` (pcmpipe.cli.options.settings_command). What can be checked without the
run or torch is checked here, so a mistake is the same one line from a flag, a file or `--set`. What needs the
run (its modalities, the kind of its inputs) or the machine's limits (pcmpipe.runs.outdir.check_embed_settings,
which the Python API shares) is checked by the command before any heavy import.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pcmpipe import limits
from pcmpipe.config.base import CommandLine, Settings
from pcmpipe.errors import UserError

EmbedDtype = Literal["float32", "float16"]  # pcmpipe.runs.outdir.DTYPES
RUN_HELP = "a finished run directory (cache/runs/<name>) or a folder written by `pcmpipe export`"
ONE_INPUT = "pass exactly one kind of input: files/folders, --text/--text-file, or --cache DIR"
ONE_QUERY = "pass one of --query (text or file) or --query-id (a stored row id)"
MAX_UPLOAD_MB = 200


class EmbedConfig(Settings):
    """What `pcmpipe embed` embeds with a run (files, texts or a feature cache) and where it writes them."""

    # labels: the message embed has always given
    # dtype's help names its two choices, and its placeholder has always been <str>
    cli = CommandLine(
        kind="embed setting",
        arguments=("run_dir", "inputs"),
        repeated=("inputs", "text"),
        labels={"dtype": "--dtype"},
        metavars={
            "run_dir": "<path>",
            "inputs": "<path>",
            "out": "<path>",
            "text_file": "<path>",
            "cache": "<path>",
            "dtype": "<str>",
        },
        set_example="batch_size=32",
    )

    run_dir: str = Field(description=RUN_HELP)
    inputs: list[str] = Field(default_factory=list, description="image or audio files, or folders of them")
    modality: str = Field(description="which of the run's modalities the inputs are, e.g. I or T")
    out: str = Field(description="new cache directory for the embeddings")
    text: list[str] = Field(default_factory=list, description="a text to embed (repeatable)")
    text_file: str | None = Field(None, description="texts to embed, one per line")
    cache: str | None = Field(
        None, description="a feature cache directory of this modality: its rows go through the head only"
    )
    dtype: EmbedDtype = Field("float32", description="stored precision: float32 or float16")
    batch_size: int = Field(64, description="inputs per backbone forward pass")
    workers: int | None = Field(
        None, description="image/audio decoding processes (default as `pcmpipe extract`; 0 = main process)"
    )
    strict: bool = Field(False, description="stop at the first unusable input instead of skipping it")
    rows_per_shard: int = Field(4096, description="rows per finished shard (the unit of resume)")

    @model_validator(mode="after")
    def _one_kind_of_input(self) -> EmbedConfig:
        if sum([bool(self.inputs), bool(self.text) or self.text_file is not None, self.cache is not None]) != 1:
            raise ValueError(ONE_INPUT)
        return self


class SearchConfig(Settings):
    """What `pcmpipe search` looks for (a query or a stored row), between which modalities, and where."""

    # `from` is a Python keyword, so its field is from_; `json` would shadow pydantic's own method
    cli = CommandLine(
        kind="search setting",
        arguments=("run_dir",),
        flags={"from_": "--from", "as_json": "--json"},
        short={"k": "-k"},
        metavars={"run_dir": "<path>", "gallery": "<path>"},
        set_example="k=5",
    )

    run_dir: str = Field(description=RUN_HELP)
    query: str | None = Field(None, description="a text, or an image/audio file of the --from modality")
    query_id: str | None = Field(
        None, description="a row id of --from in any split of the run (the stored test rows first)"
    )
    from_: str = Field(description="the query's modality, e.g. T")
    to: str = Field(description="the modality to search, e.g. I")
    k: int = Field(10, description="how many results")
    gallery: str | None = Field(
        None,
        description="an embeddings cache (`pcmpipe embed`) or index folder (`pcmpipe index`) of --to, embedded by "
        "this run (default: the run's stored test embeddings)",
    )
    as_json: bool = Field(False, description="print JSON (for scripts) instead of a table")

    @field_validator("k")
    @classmethod
    def _at_least_one(cls, k: int) -> int:
        if k < 1:
            raise ValueError(f"-k must be at least 1, got {k}")
        return k

    @model_validator(mode="after")
    def _one_query(self) -> SearchConfig:
        if (self.query is None) == (self.query_id is None):
            raise ValueError(ONE_QUERY)
        return self


class ExportConfig(Settings):
    """Which run `pcmpipe export` writes as a Hub-style folder, and where."""

    cli = CommandLine(
        kind="export setting",
        arguments=("run_dir", "out"),
        metavars={"run_dir": "<path>", "out": "<path>"},
        set_example="out=exported",
    )

    run_dir: str = Field(description="a finished run directory, e.g. cache/runs/<name>")
    out: str = Field(description="new or empty folder to write")


class ServeConfig(Settings):
    """Which runs `pcmpipe serve` serves, on which address, to whom, and over which galleries."""

    cli = CommandLine(
        kind="serve setting",
        arguments=("runs",),
        repeated=("runs", "gallery"),
        required=("runs",),
        metavars={"runs": "<path>"},
        set_example="port=0",
    )

    runs: list[str] = Field(description="finished run directories (or `pcmpipe export` folders) to serve")
    host: str = Field("127.0.0.1", description="address to listen on (other than loopback: --token)")
    port: int = Field(8765, description="TCP port (0: any free one, printed)")
    token: str | None = Field(
        None, description="bearer token every request must carry (needed to listen beyond this machine)"
    )
    no_auth: bool = Field(False, description="listen beyond this machine without a token (warns)")
    gallery: list[str] = Field(
        default_factory=list,
        description="[RUN:]M=DIR: search modality M of RUN in an embeddings cache or index folder",
    )
    max_upload_mb: int = Field(20, description=f"largest uploaded query file, MB (1 to {MAX_UPLOAD_MB})")

    @field_validator("port")
    @classmethod
    def _port(cls, port: int) -> int:
        return _within("--port", port, 0, 65535, "a TCP port")

    @field_validator("max_upload_mb")
    @classmethod
    def _upload(cls, mb: int) -> int:
        return _within("--max-upload-mb", mb, 1, MAX_UPLOAD_MB, "megabytes per uploaded file")

    def max_upload_bytes(self) -> int:
        return self.max_upload_mb << 20


def _within(flag: str, value: Any, low: int, high: int, why: str) -> int:
    """pcmpipe.limits' bound and message, raised as the ValueError pydantic turns into that one line."""
    try:
        return limits.check_int(flag, value, low=low, high=high, why=why)
    except UserError as e:
        raise ValueError(str(e)) from None
