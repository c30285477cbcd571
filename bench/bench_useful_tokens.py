"""Useful-token fraction on the real Alpaca 52k with LLaMA's tokenizer: Alpaca's collator vs ours.

"Useful" = real (non-padding) tokens / token positions the model computes. Stanford Alpaca's
collator takes 4 examples per device in random order and pads them to the longest; ours packs
each optimizer step's 128 examples into rows of 512 (first-fit decreasing, exact per-example
attention) and pads a micro-batch of 4 rows only to its longest row. The flash-attention layout
concatenates rows without padding (fraction 1 by construction) and is printed for completeness.

    python bench/bench_useful_tokens.py [--shared ../shared] [--world 4] [--out result.json]

Needs ../shared/data/alpaca/alpaca_data.json, ../shared/data/tokenizers/llama-spm.gguf and the
`gguf` package (pip install gguf; it is in the project's `train` extra).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from alpagasus.training.packing import (plan_step, reference_useful_fraction, step_token_counts, tokenize_records)  # noqa: E402
from alpagasus.training import StepSampler  # noqa: E402
from _report import report  # noqa: E402  (bench/_report.py)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shared", default=str(REPO.parent / "shared"))
    p.add_argument("--data", help="an Alpaca-format JSON (default: the real 52k under --shared)")
    p.add_argument("--world", type=int, default=4, help="GPUs the global batch is split over")
    p.add_argument("--global-batch", type=int, default=128)
    p.add_argument("--per-device", type=int, default=4)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out")
    args = p.parse_args()

    from transformers import AutoTokenizer

    shared = Path(args.shared)
    data = Path(args.data) if args.data else shared / "data" / "alpaca" / "alpaca_data.json"
    gguf = shared / "data" / "tokenizers" / "llama-spm.gguf"
    for f in (data, gguf):
        if not f.is_file():
            print(f"missing {f}", file=sys.stderr)
            return 2
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    records = json.loads(data.read_text())
    examples, stats = tokenize_records(records, tok, args.max_length, None, source=str(data))
    t_tok = time.perf_counter() - t0
    lengths = [len(e) for e in examples]
    supervised = [e.n_supervised for e in examples]

    # Alpaca's reference: a random order (HF Trainer's sampler), per-device batches padded to the longest.
    ref = reference_useful_fraction(lengths, batch_size=args.per_device, seed=args.seed)

    sampler = StepSampler(len(examples), args.global_batch, args.seed)
    results = {}
    for world in sorted({1, args.world}):
        for packing in (True, False):
            tokens = slots = sup = micro = 0
            for step in range(sampler.per_epoch):
                plan = plan_step(sampler(step), lengths, world_size=world, packing=packing,
                                 row_length=args.max_length, rows_per_micro=args.per_device)
                c = step_token_counts(plan, lengths, supervised)
                tokens, slots, sup = tokens + c["tokens"], slots + c["slots"], sup + c["supervised"]
                micro += len(plan[0])
            key = f"{'packed' if packing else 'padded'}_world{world}"
            results[key] = {"useful_token_fraction": tokens / slots, "supervised_token_fraction": sup / slots,
                            "token_slots_per_epoch": slots, "micro_batches_per_step": micro / sampler.per_epoch}
    ours = results[f"packed_world{args.world}"]["useful_token_fraction"]
    out = {
        "data": str(data),
        "tokenizer": str(gguf),
        **stats,
        "mean_length": sum(lengths) / len(lengths),
        "max_length": args.max_length,
        "tokenize_s": round(t_tok, 1),
        "alpaca_collator_useful_fraction": ref,
        "ours_useful_fraction": ours,
        "flash_varlen_useful_fraction": 1.0,
        "ratio_ours_over_alpaca": ours / ref,
        "detail": results,
    }
    report(out, args.out)
    print(f"useful-token fraction: Alpaca collator {ref:.3f} -> packed {ours:.3f} "
          f"(x{ours / ref:.2f} fewer computed positions per useful token)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
