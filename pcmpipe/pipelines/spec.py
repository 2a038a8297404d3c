"""Experiment pipelines: one YAML file per paper table or figure (specs/*.yaml) -> typed configs -> runs.

The paper's pipeline files ship inside the package (pcmpipe/pipelines/specs/, also reachable as the top-level
`pipelines/` link of a checkout), so `pcmpipe run table1_flickr8k` finds one by name and any other file is
given by path.

A pipeline file names the data it needs (per dataset: root, modalities, backbones, weights), the training runs
(TrainConfig settings over shared `defaults`, plus an optional `finetune:` list of backbones to unfreeze), the
evaluations to run on finished runs (zero-shot, enrichment) and the table layouts the report renders.

`run_pipeline` does only what is missing: features are extracted unless a complete cache exists, a run is
reused when a complete run directory (test_metrics.json present) carries the same config fingerprint, and
evaluations are skipped when their result file exists. Killing it and starting again resumes. After running,
the resolved pipeline is recorded under `<runs_root>/_pipelines/<name>.json`; `pcmpipe report` reads those
records, so the report knows which run fills which table cell.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pcmpipe.config import ExtractConfig, FinetuneConfig, TrainConfig, config_fingerprint, merge_settings
from pcmpipe.config.base import unknown_key_message
from pcmpipe.config.extract import BACKBONE_KINDS
from pcmpipe.config.paper_recipe import PAPER_SETTINGS, Recipe
from pcmpipe.config.schema import MODALITY_RE
from pcmpipe.errors import UserError
from pcmpipe.pipelines.overrides import apply_overrides, apply_roots
from pcmpipe.readback import read_yaml, validate
from pcmpipe.report.layouts import check_table

PIPELINE_RECORDS = "_pipelines"  # directory under runs_root holding one JSON record per pipeline that ran
EVAL_KINDS = ("zeroshot", "enrichment")
EVAL_FILES = {"zeroshot": "zeroshot.json", "enrichment": "enrichment.json"}
FINETUNE_PARTS = ("image", "text")  # which CLIP towers a `finetune:` list may unfreeze
_PIPELINE_KEYS = {"name", "title", "recipe", "data", "defaults", "runs", "evaluations", "tables"}
SPECS = Path(__file__).parent / "specs"  # the shipped pipeline files, loadable by name
# the paper's largest pipeline is 8 KB and about 600 values: one far larger (or an alias bomb) is no pipeline
MAX_PIPELINE_BYTES = 1 << 22
MAX_PIPELINE_VALUES = 100_000
# extract settings the pipeline fills in for every extraction step (from `data.<ds>` itself and the runs): not
# settable under `data.<ds>.extract`
_SET_BY_PIPELINE = (
    "dataset", "root", "modalities", "backbones", "weights", "cache_root",
    *(f"{kind}_backbone" for kind in BACKBONE_KINDS), *(f"weights_{kind}" for kind in BACKBONE_KINDS),
)  # fmt: skip


@dataclass
class DataSpec:
    """Where one dataset lives and how its features are extracted."""

    dataset: str
    root: str
    modalities: list[str]
    backbones: dict[str, str] = field(default_factory=dict)  # modality -> backbone registry name
    weights: dict[str, str] = field(default_factory=dict)  # modality -> weights tag
    options: dict[str, Any] = field(default_factory=dict)  # extra extraction settings (e.g. fmt)

    def extract_config(self, cache_root: str | Path, modalities: list[str]) -> ExtractConfig:
        """The extraction of `modalities` this data needs: its `extract:` settings with its root and backbones."""
        return ExtractConfig.from_dict(
            {
                **(self.options.get("extract") or {}),
                "dataset": self.dataset,
                "root": self.root,
                "modalities": modalities,
                "backbones": dict(self.backbones),
                "weights": dict(self.weights),
                "cache_root": str(cache_root),
            }
        )


@dataclass
class RunSpec:
    """One training run: a TrainConfig (its `name` is the run directory) and the backbones to fine-tune."""

    name: str
    train: TrainConfig
    finetune: list[str] = field(default_factory=list)

    @property
    def fingerprint(self) -> str:
        """The fingerprint the trainer (or fine-tuner) records in the run's config.json: stage two's with its
        loading mode resolved as training resolves it (`stream` left to the budget reads the caches' manifests)."""
        if self.finetune:
            return config_fingerprint(self.train)
        from pcmpipe.samples import resolve_stream

        return config_fingerprint(resolve_stream(self.train))


@dataclass
class EvalSpec:
    """An evaluation on a finished run: `zeroshot` (inputs, outputs) or `enrichment` (blocks)."""

    kind: str
    run: str
    options: dict[str, Any]

    @property
    def result_file(self) -> str:
        return EVAL_FILES[self.kind]


@dataclass
class Pipeline:
    name: str
    title: str
    path: Path | None
    data: dict[str, DataSpec]
    runs: dict[str, RunSpec]
    evaluations: list[EvalSpec]
    tables: list[dict[str, Any]]
    command: str = ""  # how a user runs this pipeline again, for the plan (e.g. `pcmpipe run table1_flickr8k`)
    recipe: str = "ours"  # "paper": every run starts from the paper's literal text (pcmpipe.config.paper_recipe)

    @property
    def runs_root(self) -> Path:
        roots = {r.train.runs_root for r in self.runs.values()}
        return Path(sorted(roots)[0]) if roots else Path("cache/runs")

    @property
    def cache_root(self) -> Path:
        roots = {r.train.cache_root for r in self.runs.values()}
        return Path(sorted(roots)[0]) if roots else Path("cache")

    def record(self) -> dict[str, Any]:
        """What `pcmpipe report` needs: tables, run names with their configs, data provenance."""
        return {
            "name": self.name,
            "title": self.title,
            "recipe": self.recipe,
            "path": str(self.path) if self.path else None,
            "data": {k: vars(v) for k, v in self.data.items()},
            "runs": {
                k: {"fingerprint": r.fingerprint, "finetune": r.finetune, "config": r.train.to_dict()}
                for k, r in self.runs.items()
            },
            "evaluations": [{"kind": e.kind, "run": e.run, **e.options} for e in self.evaluations],
            "tables": self.tables,
        }


# ---------------------------------------------------------------- loading


def load_pipeline(
    path: str | Path,
    *,
    overrides: list[str] | None = None,
    roots: list[str] | None = None,
    cache_root: str | None = None,
    runs_root: str | None = None,
    recipe: str | None = None,
) -> Pipeline:
    """Read a pipeline YAML into typed configs.

    overrides: `key=value` strings (`--set`). A dotted key (`data.cub.root=/x`) edits the document; a plain key
        (`epochs=2`) is a TrainConfig setting applied to every run.
    roots: dataset roots (`--root`): `PATH` for a one-dataset pipeline, or `DATASET=PATH` (repeatable).
    cache_root / runs_root: where features and runs live (default: TrainConfig's, cache/ and cache/runs).
    recipe: `paper` (`--recipe paper`) or `ours`; default: the file's `recipe:` key, else `ours`.
    """
    path = find_pipeline(path)
    doc = read_yaml(path, "pipeline file", max_bytes=MAX_PIPELINE_BYTES, max_nodes=MAX_PIPELINE_VALUES)
    if recipe is not None and isinstance(doc, dict):
        doc["recipe"] = recipe
    p = pipeline_from_dict(doc, path=path, overrides=overrides, roots=roots, cache_root=cache_root, runs_root=runs_root)
    p.command = f"pcmpipe run {path.stem if path.parent.resolve() == SPECS.resolve() else path}"
    return p


def shipped_pipelines() -> list[str]:
    """Names of the pipeline files that ship with pcmpipe (one per paper table or figure)."""
    return sorted(f.stem for f in SPECS.glob("*.yaml"))


def find_pipeline(name_or_path: str | Path) -> Path:
    """A pipeline file given by path, or a shipped one by name (`table1_flickr8k`, with or without .yaml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = SPECS / f"{path.name.removesuffix('.yaml')}.yaml"
    if path.parent == Path(".") and shipped.is_file():
        return shipped
    if str(name_or_path) == "demo":
        raise UserError("the demo is built in, with its own synthetic data: run `pcmpipe demo` (--out DIR, --fast)")
    raise UserError(
        f"pipeline {name_or_path} not found: give a pipeline file or one of the shipped names: "
        f"{', '.join(shipped_pipelines())}"
    )


class PipelineDoc(BaseModel):
    """A pipeline file's top level (the values' own checks follow in `pipeline_from_dict`)."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    name: str | None = Field(None, description="the pipeline's name (default: the file's stem)")
    title: str | None = Field(None, description="the report's title for it")
    recipe: Recipe = Field("ours", description="ours (pcmpipe's defaults) or paper (the paper's literal text)")
    data: dict[str, Any] | None = Field(None, description="dataset -> {root, modalities, backbones, weights, ...}")
    defaults: dict[str, Any] | None = Field(None, description="settings every run starts from")
    runs: dict[str, dict[str, Any] | None] | None = Field(None, description="run name -> its settings")
    evaluations: list[Any] | None = Field(None, description="zeroshot / enrichment evaluations of runs")
    tables: list[Any] | None = Field(None, description="table layouts (pcmpipe.report.layouts)")


def pipeline_from_dict(
    doc: Any,
    *,
    path: Path | None = None,
    overrides: list[str] | None = None,
    roots: list[str] | None = None,
    cache_root: str | None = None,
    runs_root: str | None = None,
) -> Pipeline:
    """Validate a parsed pipeline document (see `load_pipeline`); every mistake is one UserError line."""
    where = str(path) if path else "pipeline"
    if not isinstance(doc, dict):
        raise UserError(f"{where}: a pipeline must be a mapping with name, data, runs and tables")
    doc = copy.deepcopy(doc)
    unknown = sorted(set(doc) - _PIPELINE_KEYS)
    if unknown:
        raise UserError(
            f"{where}: unknown pipeline key(s) {', '.join(unknown)}; valid: {', '.join(sorted(_PIPELINE_KEYS))}"
        )
    plain_sets = apply_overrides(doc, overrides or [], where)
    apply_roots(doc, roots or [], where)
    validate(PipelineDoc, doc, where)
    name = str(doc.get("name") or (path.stem if path else "pipeline"))
    data = {ds: _data_spec(ds, spec, where) for ds, spec in (doc.get("data") or {}).items()}

    recipe = str(doc.get("recipe") or "ours")
    # `recipe: paper` starts every run from the paper's literal text; the file's own settings still win, so a
    # table that varies one of them keeps doing so. Its runs keep their names, so they go to their own runs root.
    defaults = {**(PAPER_SETTINGS if recipe == "paper" else {}), **(doc.get("defaults") or {})}
    if recipe == "paper" and not runs_root:
        runs_root = f"{cache_root or 'cache'}/runs-paper"
    # the settings every run gets: --cache-root / --runs-root, then plain `--set key=value` items
    run_settings = merge_settings(
        flags={"cache_root": cache_root or None, "runs_root": runs_root or None}, sets=plain_sets
    )
    runs_doc = doc.get("runs") or {}
    if not isinstance(runs_doc, dict) or not runs_doc:
        raise UserError(f"{where}: `runs` must map run names to their settings")
    runs = {rn: _run_spec(rn, defaults, spec, run_settings, where, data) for rn, spec in runs_doc.items()}

    evaluations = []
    for i, ev in enumerate(doc.get("evaluations") or []):
        if not isinstance(ev, dict) or ev.get("kind") not in EVAL_KINDS:
            raise UserError(f"{where}: evaluation {i + 1} needs kind: one of {', '.join(EVAL_KINDS)}")
        if not isinstance(ev.get("run"), str) or ev["run"] not in runs:
            raise UserError(f"{where}: evaluation {i + 1} refers to run {ev.get('run')!r}, not defined in `runs`")
        opts = {k: v for k, v in ev.items() if k not in ("kind", "run")}
        evaluations.append(EvalSpec(kind=ev["kind"], run=ev["run"], options=opts))

    tables = doc.get("tables") or []
    if not isinstance(tables, list) or not tables:
        raise UserError(f"{where}: `tables` must list at least one table layout")
    for i, t in enumerate(tables):
        check_table(t, set(runs), f"{where}: table {i + 1}")
    return Pipeline(
        name=name,
        recipe=recipe,
        title=str(doc.get("title") or name),
        path=path,
        data=data,
        runs=runs,
        evaluations=evaluations,
        tables=tables,
    )


def _data_spec(dataset: str, spec: Any, where: str) -> DataSpec:
    if not isinstance(spec, dict) or "root" not in spec or not spec.get("modalities"):
        raise UserError(f"{where}: data.{dataset} needs `root` and `modalities`")
    known = {"root", "modalities", "backbones", "weights"}
    mods = spec["modalities"]
    mods = [m.strip() for m in mods.split(",") if m.strip()] if isinstance(mods, str) else mods
    if not isinstance(mods, list) or not all(isinstance(m, str) and MODALITY_RE.match(m) for m in mods):
        raise UserError(
            f"{where}: data.{dataset}.modalities must list modality names, e.g. [I, T, S], got {spec['modalities']!r}"
        )
    if "extract" in spec:
        _check_extract_options(dataset, spec["extract"], f"{where}: data.{dataset}.extract")
    return DataSpec(
        dataset=dataset,
        root=str(spec["root"]),
        modalities=list(mods),
        backbones=_names(spec.get("backbones"), f"{where}: data.{dataset}.backbones"),
        weights=_names(spec.get("weights"), f"{where}: data.{dataset}.weights"),
        options={k: v for k, v in spec.items() if k not in known},
    )


def _names(value: Any, where: str) -> dict[str, str]:
    """A {modality or kind: name} mapping of backbones or weights."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str | int | float) for v in value.values()):
        raise UserError(f"{where} must map modalities to names, e.g. {{image: clip}}, got {value!r:.80}")
    return {str(k): str(v) for k, v in value.items()}


def _check_extract_options(dataset: str, options: Any, where: str) -> None:
    """An `extract:` mapping must name ExtractConfig settings with values it accepts, so a typo fails at
    `--dry-run` instead of when the step runs; a dataset's reader options are checked against the reader."""
    import inspect

    from pcmpipe.datasets import DATASETS

    if options is None:
        return
    if not isinstance(options, dict):
        raise UserError(f"{where} must be a mapping of extract options (e.g. batch_size: 32), got {options!r}")
    allowed = [n for n in ExtractConfig.model_fields if n not in _SET_BY_PIPELINE]
    for key in options:
        if key not in allowed:
            raise UserError(f"{where}: {unknown_key_message(str(key), allowed, 'extract option')}")
    try:
        ExtractConfig.from_dict({**options, "dataset": dataset})
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    reader = DATASETS.get(dataset)
    if reader is not None and isinstance(options.get("dataset_options"), dict):
        takes = [n for n in inspect.signature(reader).parameters if n != "root"]
        for key in options["dataset_options"]:
            if key not in takes:
                raise UserError(f"{where}: dataset_options: {unknown_key_message(str(key), takes, 'option')}")


def _run_spec(name: str, defaults: dict, spec: Any, settings: dict, where: str, data: dict[str, DataSpec]) -> RunSpec:
    if spec is not None and not isinstance(spec, dict):
        raise UserError(f"{where}: run {name} must be a mapping of settings")
    merged = {**defaults, **(spec or {}), **settings, "name": name}
    finetune = merged.pop("finetune", None) or []
    if isinstance(finetune, str):
        finetune = [p.strip() for p in finetune.split(",") if p.strip()]
    bad = [p for p in finetune if p not in FINETUNE_PARTS] if isinstance(finetune, list) else [finetune]
    if bad:
        raise UserError(
            f"{where}: run {name}: finetune may list {', '.join(FINETUNE_PARTS)}, got {', '.join(map(str, bad))}"
        )
    if not isinstance(merged.get("dataset"), str) or merged["dataset"] not in data:
        raise UserError(f"{where}: run {name} trains on {merged.get('dataset')!r} but `data` has no such dataset")
    # A tower can only be fine-tuned when its modality is trained (I for image, T for text).
    mods = merged.get("modalities") or []
    # a wrong type is left to the TrainConfig below, which names the setting
    mods = [m.strip() for m in mods.split(",")] if isinstance(mods, str) else mods if isinstance(mods, list) else []
    finetune = [p for p in finetune if {"image": "I", "text": "T"}[p] in mods]
    try:
        cfg = _finetune_config(merged, finetune, data[merged["dataset"]]) if finetune else TrainConfig.from_dict(merged)
    except UserError as e:
        raise UserError(f"{where}: run {name}: {e}") from None
    return RunSpec(name=name, train=cfg, finetune=finetune)


def _finetune_config(settings: dict, unfreeze: list[str], data: DataSpec) -> TrainConfig:
    """The FinetuneConfig for a run with `finetune:`; its fingerprint is the one
    `pcmpipe.training.finetune.finetune` records, so a finished fine-tuned run is found again."""
    extra = {"data_root": data.root, "unfreeze": list(unfreeze)}
    for kind in ("image", "text"):
        if kind in data.backbones:
            extra[f"{kind}_backbone"] = data.backbones[kind]
        if kind in data.weights:
            extra[f"weights_{kind}"] = data.weights[kind]
    return FinetuneConfig.from_dict({**settings, **extra})
