"""Speech extraction: padding fraction and length-sorted vs unsorted batching (HuBERT), same run.

Utterances of 1-10 s (uniform, 16 kHz noise: the model's cost depends on the length, not the content) go
through `HubertBackbone.preprocess` + `encode` in batches of at most `--batch` utterances and at most 80 s of
padded audio (`MAX_AUDIO_SAMPLES`) each:
* ours: `pcmpipe.backbones.speech.speech_batches`, the rule `pcmpipe extract` applies by default: sorted by
  duration, and at most `SPEECH_MAX_PADDING` (5 %) of each batch is padding (`--max-padding`);
* baseline: the same two caps filled greedily in the utterances' given (unsorted) order, with no padding
  bound: what one writes without sorting (in unsorted order a padding bound would only cut batches to one or
  two utterances, so nobody would use it).
Padding fraction = padded samples / samples processed (`PaddingMeter`). The per-utterance features of the two
paths must agree (HuBERT's padding is masked, so batching must not change them): max abs difference is
reported and must stay below 1e-3 (float32 over 12 layers).

The default is `hubert-tiny` (HuBERT's architecture at 1/100 of the compute) because HuBERT-Base on 2 CPU
cores takes minutes per pass; `--backbone hubert-base` measures the real size (fewer utterances advised).
`--smoke` uses 12 utterances of 1-3 s, batches of 4 and a 10 s cap, with the same padding bound.

    python benchmarks/speech_extract.py
    python benchmarks/speech_extract.py --backbone hubert-base --utterances 48
    python benchmarks/speech_extract.py --smoke --no-write
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _timing  # noqa: E402

RATE = 16_000


def utterances(n: int, seed: int = 0, low_s: float = 1.0, high_s: float = 10.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = (rng.uniform(low_s, high_s, n) * RATE).astype(int)
    return [(0.1 * rng.standard_normal(k)).astype(np.float32) for k in lengths]


def unsorted_batches(lengths: list[int], batch_size: int, max_padded: int) -> list[list[int]]:
    """Greedy batches in the given order under the two caps (items, padded samples); no padding bound."""
    batches: list[list[int]] = []
    current: list[int] = []
    for i, n in enumerate(lengths):
        longest = max([n] + [lengths[j] for j in current])
        if current and (len(current) >= batch_size or (len(current) + 1) * longest > max_padded):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def main() -> None:
    def extra(p):
        p.add_argument("--backbone", default="hubert-tiny", choices=["hubert-tiny", "hubert-base"])
        p.add_argument("--utterances", type=int, default=256)
        p.add_argument("--batch", type=int, default=64, help="most utterances per batch (extract's default)")
        p.add_argument("--repeats", type=int, default=1)

    args = _timing.parse_args(__doc__.splitlines()[0], extra)
    from pcmpipe.backbones import create_backbone
    from pcmpipe.backbones.batching import length_batches
    from pcmpipe.backbones.speech import MAX_AUDIO_SAMPLES, SPEECH_MAX_PADDING, speech_batches
    from pcmpipe.extract.batching import PaddingMeter

    if args.smoke:
        args.backbone, args.utterances, args.batch = "hubert-tiny", 12, 4
    bb = create_backbone(args.backbone, weights="random:0", device=args.device)
    waves = utterances(args.utterances, high_s=3.0 if args.smoke else 10.0)
    lengths = [len(w) for w in waves]
    budget = MAX_AUDIO_SAMPLES // 8 if args.smoke else MAX_AUDIO_SAMPLES
    ours = (
        length_batches(lengths, args.batch, budget, SPEECH_MAX_PADDING)
        if args.smoke
        else speech_batches(lengths, args.batch)
    )  # extract's default rule
    plans = {"sorted": ours, "unsorted": unsorted_batches(lengths, args.batch, budget)}
    feats = {k: torch.empty(len(waves), *bb.feature_shape) for k in plans}
    meters = {k: PaddingMeter() for k in plans}

    def runner(kind: str):
        @torch.inference_mode()
        def run():
            meters[kind] = PaddingMeter()
            for b in plans[kind]:
                meters[kind].add([lengths[i] for i in b])
                feats[kind][b] = bb.encode(bb.preprocess([waves[i] for i in b])).float().cpu()

        return run

    with torch.inference_mode():  # warm-up: one short batch
        bb.encode(bb.preprocess(waves[: min(2, len(waves))]))
    res = _timing.compare(runner("sorted"), runner("unsorted"), repeats=args.repeats, warmup=0, device=args.device)
    diff = float((feats["sorted"] - feats["unsorted"]).abs().max())
    if diff > 1e-3:
        raise SystemExit(f"sorted and unsorted batching give features {diff:.2e} apart")
    pad_ours, pad_base = meters["sorted"].fraction, meters["unsorted"].fraction
    audio_s = sum(lengths) / RATE
    print(
        f"{audio_s:.0f} s of audio; padding sorted {pad_ours:.2%} unsorted {pad_base:.2%}; "
        f"sorted {res['ours_all']} s, unsorted {res['baseline_all']} s; max |diff| {diff:.1e}; "
        f"batches sorted {len(plans['sorted'])} unsorted {len(plans['unsorted'])}"
    )
    what = (
        f"speech extraction, length-sorted (<= {SPEECH_MAX_PADDING:.0%} padding per batch) vs unsorted batches "
        f"({args.backbone}, {len(waves)} utterances of {'1-3' if args.smoke else '1-10'} s, <= {args.batch} per "
        f"batch and <= {budget // RATE} s padded, {args.device})"
    )
    ok = pad_ours <= 0.05 and res["speedup"] >= 1.5
    _timing.report(
        args,
        what,
        "padding <= 5 %; >= 1.5 x unsorted",
        f"padding {pad_ours:.1%} (unsorted {pad_base:.1%}); {len(plans['sorted'])} batches "
        f"(unsorted {len(plans['unsorted'])}); {audio_s / res['ours_s']:.1f} audio s/s "
        f"(unsorted {audio_s / res['baseline_s']:.1f}); max abs diff {diff:.1e}",
        f"{res['speedup']:.2f} x unsorted",
        ok,
    )


if __name__ == "__main__":
    main()
