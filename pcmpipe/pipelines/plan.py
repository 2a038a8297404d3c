"""What a pipeline still needs: each step (extract per dataset, train or finetune per run, each evaluation) with
its status and the command that does it by hand.

A step is `cached` when its output already exists and matches (complete cache manifests naming the plan's
backbones; a complete run directory with the same config fingerprint; an evaluation file written with the same
options), so a second `pcmpipe run` does nothing and a killed one resumes. How a missing step is done is
`pcmpipe.pipelines.actions`; `pcmpipe.pipelines.run` does both in order.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from pcmpipe.datasets.base import SPLITS
from pcmpipe.errors import UserError
from pcmpipe.pipelines.spec import DataSpec, EvalSpec, Pipeline, RunSpec
from pcmpipe.training.rundir.files import is_complete, read_json, result_ok
from pcmpipe.training.rundir.protocol import final_dir
from pcmpipe.training.rundir.record import run_config


@dataclass
class Step:
    kind: str  # extract | train | finetune | zeroshot | enrichment
    target: str  # dataset, run name, or "run: evaluation"
    status: str  # cached | missing | blocked (a run this step needs is missing and cannot be made here)
    command: str  # the equivalent CLI command, for the plan table and for doing it by hand
    detail: str = ""
    # what the step works on (pcmpipe.pipelines.actions runs it): the DataSpec of an extraction, the RunSpec of a
    # run, the EvalSpec of an evaluation; an extraction also names the modalities it must (re)write
    subject: DataSpec | RunSpec | EvalSpec | None = field(default=None, repr=False)
    modalities: list[str] = field(default_factory=list)


def extraction_state(cache_root: Path, data: DataSpec, modality: str, splits=SPLITS) -> str:
    """'' when every split of `modality` has a complete manifest naming the backbone and weights this plan
    extracts it with; else 'missing' (absent, unfinished or unreadable: the extraction step then says what is
    wrong) or 'stale: <what differs>'. Each manifest is read once. Cheap (no weights are loaded): the weights'
    checksum and the rest of the fingerprint are compared by `extract` itself, which refuses a cache built
    with other settings."""
    from pcmpipe.backbones import parse_weights
    from pcmpipe.backbones.identity import same_encoder
    from pcmpipe.cache.reader import read_manifest
    from pcmpipe.extract.plan import choose_backbone, split_views
    from pcmpipe.modalities import KINDS

    kind = KINDS.get(modality)  # None: the dataset's own vectors (A, C) or a user's modality, chosen by no plan
    wanted = None
    if kind is not None:
        name, weights, _ = choose_backbone(modality, kind, data.backbones, data.weights)
        wanted = {"backbone": name, "weights": parse_weights(weights).label}
    for split in splits:
        try:
            manifest = read_manifest(cache_root, data.dataset, modality, split) or {}
        except UserError:
            return "missing"
        if not manifest.get("complete"):
            return "missing"
        meta = manifest.get("meta") or {}
        # imported or hand-made features carry no weights: the user placed them there on purpose
        if wanted is not None and "weights" in meta and not same_encoder(wanted, meta):
            have = f"{meta.get('backbone')} ({meta.get('weights')})"
            plan = f"{wanted['backbone']} ({wanted['weights']})"
            return f"stale: {modality} {split} was built with {have}, the plan names {plan}"
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


def needed_modalities(p: Pipeline, dataset: str) -> list[str]:
    """Modalities of `dataset` the pipeline's runs train on, plus P when a zero-shot evaluation asks for it."""
    mods = {m for r in p.runs.values() if r.train.dataset == dataset for m in r.train.modalities}
    for ev in p.evaluations:
        if ev.kind == "zeroshot" and p.runs[ev.run].train.dataset == dataset and "P" in ev.options.get("outputs", []):
            mods.add("P")
    declared = p.data[dataset].modalities
    return [m for m in declared if m in mods] + sorted(mods - set(declared))


def _extract_command(spec: DataSpec, cache_root: Path, mods: list[str]) -> str:
    """The `pcmpipe extract` command that writes the caches this plan needs, with every setting it extracts with."""
    return shlex.join(["pcmpipe", "extract", *spec.extract_config(cache_root, mods).to_cli_args()])


def _train_command(spec: RunSpec) -> str:
    """The `pcmpipe train` (or `finetune`) command that trains this run: the same config, so the same fingerprint."""
    return shlex.join(["pcmpipe", "finetune" if spec.finetune else "train", *spec.train.to_cli_args()])


def make_plan(p: Pipeline) -> list[Step]:
    """Every step of the pipeline with its status and its command; `pcmpipe.pipelines.actions` runs them."""
    steps: list[Step] = []
    cache_root = p.cache_root
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
                detail=detail or f"cached: {','.join(mods)}",
                subject=data,
                modalities=todo,
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
                subject=spec,
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
                subject=ev,
            )
        )
    return steps
