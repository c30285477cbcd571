"""Generation throughput on the tiny model (CPU): batched with left padding vs one prompt at a time.

    python bench/bench_generation.py [--checkpoint results/smoke/checkpoints/alpagasus-tiny]
                                     [--items 200] [--batch-size 64] [--max-new-tokens 8] [--threads 2]

Without --checkpoint a tiny LLaMA is built from config/smoke.yaml's `tiny` model_config (random
weights, the same compute as the trained one). Both modes must give the same greedy answers;
the script checks that and prints the speedup (target >= 5x on CPU).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from alpagasus.evaluation.generation import generate, load_model  # noqa: E402
from alpagasus.data.miniature import MINIATURE_TEMPLATE, make_records, make_test_items  # noqa: E402
from alpagasus.data.template import alpaca_prompt  # noqa: E402
from _report import report  # noqa: E402  (bench/_report.py)


def build_random_tiny(out: Path) -> Path:
    import torch
    import yaml
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from alpagasus.training.tokenizer import char_tokenizer_for_records

    smoke = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    tiny = smoke["training"]["sizes"]["tiny"]
    tok = char_tokenizer_for_records(make_records(200, 0.0), MINIATURE_TEMPLATE)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, max_position_embeddings=256, **tiny["model_config"])
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                     pad_token_id=tok.pad_token_id, do_sample=False).save_pretrained(out)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint")
    p.add_argument("--items", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out")
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(args.checkpoint) if args.checkpoint else build_random_tiny(Path(tmp) / "tiny")
        model, tok = load_model(ckpt, device="cpu")
        items = make_test_items(args.items, seed=1)
        prompts = [alpaca_prompt(it["instruction"], it["input"], MINIATURE_TEMPLATE) for it in items]
        generate(model, tok, prompts[:8], args.max_new_tokens, 8, progress=False)  # warm-up
        timings, answers = {}, {}
        for name, bs in (("batched", args.batch_size), ("one_at_a_time", 1)):
            t0 = time.perf_counter()
            out = generate(model, tok, prompts, args.max_new_tokens, bs, progress=False)
            timings[name] = time.perf_counter() - t0
            answers[name] = out
    same = [a["answer"] for a in answers["batched"]] == [a["answer"] for a in answers["one_at_a_time"]]
    new_tokens = sum(a["n_new_tokens"] for a in answers["batched"])
    result = {
        "checkpoint": str(args.checkpoint or "random tiny (config/smoke.yaml model_config)"),
        "items": len(prompts),
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "threads": args.threads,
        "new_tokens": new_tokens,
        "batched_s": round(timings["batched"], 3),
        "one_at_a_time_s": round(timings["one_at_a_time"], 3),
        "batched_tokens_per_s": new_tokens / timings["batched"],
        "one_at_a_time_tokens_per_s": new_tokens / timings["one_at_a_time"],
        "speedup": timings["one_at_a_time"] / timings["batched"],
        "identical_answers": same,
    }
    report(result, args.out)
    print(f"generation: batched x{result['speedup']:.1f} faster than one at a time "
          f"({result['batched_tokens_per_s']:.0f} vs {result['one_at_a_time_tokens_per_s']:.0f} new tokens/s)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
