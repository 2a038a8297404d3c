"""`pcmpipe run`: turn a loaded Pipeline into a plan of steps and run the missing ones, in order.

Steps: `extract` (per dataset: the cached modalities the runs need), `train` / `finetune` (per run), and the
evaluations (`zeroshot`, `enrichment`) on finished runs. A step is `cached` when its output already exists and
matches (complete cache manifests; a complete run directory with the same config fingerprint; an evaluation
file written with the same options), so a second call does nothing and a killed call resumes.

The runner prints nothing: it reports through `on_event` (PlanReady, StepStarted, StepProgress while features
are extracted, StepFinished; Note for one-line messages) and passes on the training events of the runs it
trains (pcmpipe.training.events); the CLI renders both (pcmpipe.cli.render).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from pcmpipe.config import FinetuneConfig, TrainConfig
from pcmpipe.datasets.base import SPLITS
from pcmpipe.errors import UserError
from pcmpipe.pipelines.spec import PIPELINE_RECORDS, DataSpec, EvalSpec, Pipeline, RunSpec
from pcmpipe.training.events import Event as TrainingEvent
from pcmpipe.training.events import Note  # one-line messages: the same kind the trainers send
from pcmpipe.training.rundir.files import is_complete, read_json, result_ok, write_json
from pcmpipe.training.rundir.protocol import final_dir
from pcmpipe.training.rundir.record import run_config


@dataclass
class Step:
    kind: str  # extract | train | finetune | zeroshot | enrichment
    target: str  # dataset, run name, or "run: evaluation"
    status: str  # cached | missing | blocked (a run this step needs is missing and cannot be made here)
    command: str  # the equivalent CLI command, for the plan table and for doing it by hand
    action: Callable[[], object] | None = field(default=None, repr=False)  # what it returns is not used
    detail: str = ""


@dataclass(frozen=True)
class PlanReady:
    name: str
    title: str
    steps: list[Step]


@dataclass(frozen=True)
class StepStarted:
    step: Step


@dataclass(frozen=True)
class StepProgress:
    """Items of one part of a running step done so far (extraction: one dataset, modality and split)."""

    task: str
    done: int
    total: int


@dataclass(frozen=True)
class StepFinished:
    step: Step
    seconds: float


# The training events of the runs the pipeline trains reach the same callback, unchanged (`_train`).
Event = PlanReady | StepStarted | StepProgress | StepFinished | Note | TrainingEvent
OnEvent = Callable[[Event], None]


def _ignore(event: Event) -> None:
    """The `on_event` of a caller that wants no reports."""


# ---------------------------------------------------------------- status checks


def extraction_state(cache_root: Path, data: DataSpec, modality: str, splits=SPLITS) -> str:
    """'' when every split of `modality` has a complete manifest naming the backbone and weights this plan
    extracts it with; else 'missing' (absent, unfinished or unreadable: the extraction step then says what is
    wrong) or 'stale: <what differs>'. Each manifest is read once. Cheap (no weights are loaded): the weights'
    checksum and the rest of the fingerprint are compared by `extract` itself, which refuses a cache built
    with other settings."""
    from pcmpipe.backbones import parse_weights
    from pcmpipe.cache.reader import read_manifest
    from pcmpipe.extract.plan import choose_backbone, split_views
    from pcmpipe.modalities import KINDS

    kind = KINDS.get(modality)  # None: the dataset's own vectors (A, C) or a user's modality, chosen by no plan
    wanted = None
    if kind is not None:
        name, weights, _ = choose_backbone(modality, kind, data.backbones, data.weights)
        wanted = (name, parse_weights(weights).label)
    for split in splits:
        try:
            manifest = read_manifest(cache_root, data.dataset, modality, split) or {}
        except UserError:
            return "missing"
        if not manifest.get("complete"):
            return "missing"
        meta = manifest.get("meta") or {}
        # imported or hand-made features carry no weights: the user placed them there on purpose
        if wanted is not None and "weights" in meta and (meta.get("backbone"), meta.get("weights")) != wanted:
            have = f"{meta.get('backbone')} ({meta.get('weights')})"
            return f"stale: {modality} {split} was built with {have}, the plan names {wanted[0]} ({wanted[1]})"
        # the plan's `extract: {views: K}` (train images and captions only): a cache with other views is not its own
        views = split_views(int((data.options.get("extract") or {}).get("views", 0)), 0, modality, kind, split)
        want, have_k = views.k if views else 0, (meta.get("augment") or {}).get("views", 0)
        if wanted is not None and "weights" in meta and have_k != want:
            return f"stale: {modality} {split} holds {have_k} augmented views, the plan asks for {want}"
    return ""


def run_is_done(spec: RunSpec) -> bool:
    """A run directory under the run's name whose config fingerprint is this run's and whose test metrics
    read back: a damaged test_metrics.json is a missing result here as in the report, and the train step
    then trains the run again (rundir.claim moves the damaged one aside)."""
    d = final_dir(spec.train.runs_root, spec.name)
    if not is_complete(d):
        return False
    return run_config(d).get("fingerprint") == spec.fingerprint and result_ok(d)


def eval_is_done(ev: EvalSpec, spec: RunSpec) -> bool:
    """The evaluation file exists, reads back, and was written with these options (a damaged one is redone)."""
    path = final_dir(spec.train.runs_root, spec.name) / ev.result_file
    try:
        done = read_json(path)
    except (OSError, UserError):
        return False
    if not isinstance(done, dict):
        return False
    # a zero-shot table written before per-caption samples were the default holds per-image numbers
    per_ok = ev.kind != "zeroshot" or done.get("per") == ev.options.get("per", "caption")
    return done.get("options") == ev.options and per_ok


# ---------------------------------------------------------------- the plan


def needed_modalities(p: Pipeline, dataset: str) -> list[str]:
    """Modalities of `dataset` the pipeline's runs train on, plus P when a zero-shot evaluation asks for it."""
    mods = {m for r in p.runs.values() if r.train.dataset == dataset for m in r.train.modalities}
    for ev in p.evaluations:
        if ev.kind == "zeroshot" and p.runs[ev.run].train.dataset == dataset and "P" in ev.options.get("outputs", []):
            mods.add("P")
    declared = p.data[dataset].modalities
    return [m for m in declared if m in mods] + sorted(mods - set(declared))


def _extract_command(spec: DataSpec, cache_root: Path, mods: list[str]) -> str:
    parts = [
        f"pcmpipe extract --dataset {spec.dataset} --root {spec.root} --cache-root {cache_root}",
        f"--modalities {','.join(mods)}",
    ]
    parts += [f"--{kind}-backbone {value}" for kind, value in spec.backbones.items()]
    parts += [f"--weights-{kind} {value}" for kind, value in spec.weights.items()]
    if (spec.options.get("extract") or {}).get("views"):
        parts.append(f"--views {spec.options['extract']['views']}")
    return " ".join(parts)


def _train_command(spec: RunSpec) -> str:
    c = spec.train
    cmd = "pcmpipe finetune" if spec.finetune else "pcmpipe train"
    out = (
        f"{cmd} --dataset {c.dataset} --modalities {','.join(c.modalities)} --loss {c.loss} --name {spec.name}"
        f" --match {c.match} --seed {c.seed} --cache-root {c.cache_root} --runs-root {c.runs_root}"
    )
    if c.loss == "pcmr" and c.rho != 1.0:
        out += f" --rho {c.rho}"
    if c.loss == "pcmr" and c.rho_on != TrainConfig.model_fields["rho_on"].default:
        out += f" --rho-on {c.rho_on}"
    if spec.finetune:
        out += f" --unfreeze {','.join(spec.finetune)} --root {getattr(c, 'data_root', '?')}"
    return out


def make_plan(p: Pipeline, on_event: OnEvent | None = None) -> list[Step]:
    """Every step of the pipeline with its status; actions run the missing ones."""
    steps: list[Step] = []
    cache_root, emit = p.cache_root, on_event or _ignore
    for ds, data in p.data.items():
        if not any(r.train.dataset == ds for r in p.runs.values()):
            continue
        mods = needed_modalities(p, ds)
        # a complete cache made with other weights (say the demo's random ones) is not this plan's features
        states = {m: extraction_state(cache_root, data, m) for m in mods}
        missing = [m for m, state in states.items() if state == "missing"]
        todo = [m for m, state in states.items() if state]
        stale = [state for state in states.values() if state.startswith("stale")]
        detail = "; ".join(([f"missing: {','.join(missing)}"] if missing else []) + stale)
        steps.append(
            Step(
                "extract",
                ds,
                "missing" if todo else "cached",
                _extract_command(data, cache_root, mods),
                action=partial(_extract, data, cache_root, todo, emit),
                detail=detail or f"cached: {','.join(mods)}",
            )
        )
    for name, spec in p.runs.items():
        done = run_is_done(spec)
        steps.append(
            Step(
                "finetune" if spec.finetune else "train",
                name,
                "cached" if done else "missing",
                _train_command(spec),
                action=partial(_train, spec, emit),
            )
        )
    for ev in p.evaluations:
        spec = p.runs[ev.run]
        done = eval_is_done(ev, spec)
        steps.append(
            Step(
                ev.kind,
                f"{ev.run}",
                "cached" if done else "missing",
                f"(part of `{p.command or f'pcmpipe run {p.path or p.name}'}`) -> {ev.run}/{ev.result_file}",
                action=partial(run_evaluation, ev, spec, cache_root),
            )
        )
    return steps


# ---------------------------------------------------------------- actions


def _extract(spec: DataSpec, cache_root: Path, modalities: list[str], emit: OnEvent) -> None:
    from pcmpipe.extract import extract

    opts = dict(spec.options.get("extract") or {})  # e.g. batch_size, fmt, device, workers
    extract(
        spec.dataset,
        spec.root,
        modalities=modalities,
        backbones=dict(spec.backbones),
        weights=dict(spec.weights),
        cache_root=cache_root,
        progress=lambda task, done, total: emit(StepProgress(task, done, total)),
        **opts,
    )


def _train(spec: RunSpec, emit: OnEvent) -> None:
    """Train (or fine-tune) one run; its training events go to the pipeline's `on_event` as they are."""
    if spec.finetune:
        from pcmpipe.training.finetune import finetune

        assert isinstance(spec.train, FinetuneConfig), "spec.py builds a FinetuneConfig for a run with finetune:"
        finetune(spec.train, on_event=emit)
        return
    from pcmpipe.training.stage2 import train

    train(spec.train, on_event=emit)


def _text_head(run_dir: Path):
    """The run's T head, through which zero-shot's P output passes the cached prompt features."""
    from pcmpipe.training.rundir.tensors import load_heads

    heads, _ = load_heads(run_dir)
    if "T" not in heads:
        raise UserError(f"run {run_dir} has no T head; P (prompts through the T head) needs a run trained with T")
    return heads["T"]


def run_evaluation(ev: EvalSpec, spec: RunSpec, cache_root: Path) -> Path:
    """Compute a zero-shot or enrichment table on a finished run; write it next to the run's test metrics."""
    from pcmpipe.training.rundir.tensors import load_embeddings

    run_dir = final_dir(spec.train.runs_root, spec.name)
    if not is_complete(run_dir):
        raise UserError(f"{ev.kind} needs the finished run {spec.name}; it is missing")
    embs = load_embeddings(run_dir)
    if ev.kind == "zeroshot":
        from pcmpipe.evaluation.zeroshot import class_vectors, run_prompt_vectors, zero_shot_table

        outputs = {}
        for o in ev.options.get("outputs", ["C"]):
            if o == "C":
                outputs["C"] = class_vectors(embs)
            elif o == "P":
                outputs["P"] = run_prompt_vectors(
                    run_dir,
                    run_config(run_dir),
                    _text_head(run_dir),
                    cache_root,
                    spec.train.dataset,
                    spec.train.split_test,
                )
            else:
                raise UserError(f"zero-shot output {o!r} unknown; valid: C, P")
        t1 = zero_shot_table(embs, list(ev.options.get("inputs", ["I"])), outputs, ev.options.get("per", "caption"))
        n_classes = len(next(iter(outputs.values()))[0])
        result = {
            "options": ev.options,
            "per": ev.options.get("per", "caption"),
            "split": spec.train.split_test,
            "num_classes": n_classes,
            "T1": t1,
        }
    else:
        from pcmpipe.evaluation.enrichment import enrichment_table

        level = spec.train.match
        r1 = enrichment_table(embs, dict(ev.options.get("blocks", {})), level)
        result = {"options": ev.options, "split": spec.train.split_test, "match": level, "r@1": r1}
    path = run_dir / ev.result_file
    write_json(path, result)
    return path


def write_record(p: Pipeline) -> Path:
    """The resolved pipeline under <runs_root>/_pipelines/<name>.json, for `pcmpipe report`."""
    folder = p.runs_root / PIPELINE_RECORDS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{p.name}.json"
    write_json(path, p.record())
    return path


def run_pipeline(p: Pipeline, *, dry_run: bool = False, on_event: OnEvent | None = None) -> list[Step]:
    """Report the plan; unless dry_run, do the missing steps in order and record the pipeline for the report.

    Returns the steps, their status "done" where this call ran them.
    """
    emit = on_event or _ignore
    steps = make_plan(p, emit)
    emit(PlanReady(p.name, p.title, list(steps)))
    if dry_run:
        return steps
    write_record(p)
    for s in steps:
        if s.status == "cached" or s.action is None:
            continue
        emit(StepStarted(s))
        t0 = time.perf_counter()
        s.action()
        s.status = "done"
        emit(StepFinished(s, time.perf_counter() - t0))
    return steps
