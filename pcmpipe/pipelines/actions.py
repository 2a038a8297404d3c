"""How each step of a plan is done: extract the missing modalities of a dataset, train or fine-tune a run, compute
an evaluation on a finished run (`run_step`). What is missing is `pcmpipe.pipelines.plan`'s question."""

from __future__ import annotations

from pathlib import Path

from pcmpipe.config import FinetuneConfig
from pcmpipe.errors import UserError
from pcmpipe.pipelines.events import OnEvent, StepProgress
from pcmpipe.pipelines.plan import Step
from pcmpipe.pipelines.spec import DataSpec, EvalSpec, Pipeline, RunSpec
from pcmpipe.training.rundir.files import is_complete, write_json
from pcmpipe.training.rundir.protocol import final_dir


def run_step(step: Step, p: Pipeline, emit: OnEvent) -> None:
    """Do one missing step of `p`'s plan; extraction progress and training events go to `emit`."""
    subject = step.subject
    if isinstance(subject, DataSpec):
        _extract(subject, p.cache_root, step.modalities, emit)
    elif isinstance(subject, RunSpec):
        _train(subject, emit)
    elif isinstance(subject, EvalSpec):
        run_evaluation(subject, p.runs[subject.run], p.cache_root)
    else:
        raise AssertionError(f"step {step.kind} {step.target} has nothing to run")


def _extract(spec: DataSpec, cache_root: Path, modalities: list[str], emit: OnEvent) -> None:
    from pcmpipe.extract import extract

    progress = lambda task, done, total: emit(StepProgress(task, done, total))  # noqa: E731
    extract(spec.extract_config(cache_root, modalities), progress=progress)


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
        from pcmpipe.training.rundir.record import run_config

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
        from pcmpipe.evaluation.enrichment import enrichment_tables
        from pcmpipe.evaluation.retrieval import levels_for

        # every level the run's rows allow, as its test metrics (Flickr8k's I+S cells differ between caption
        # and image level, CUB's between instance and class); "r@1" stays the run's own match level
        level = spec.train.match
        blocks = dict(ev.options.get("blocks", {}))
        levels = levels_for({m: e.columns for m, e in embs.items()}, {m: e.key for m, e in embs.items()})
        by_level = enrichment_tables(embs, blocks, levels)
        result = {
            "options": ev.options,
            "split": spec.train.split_test,
            "match": level,
            "r@1": by_level[level],
            "levels": by_level,
        }
    path = run_dir / ev.result_file
    write_json(path, result)
    return path
