"""Training throughput and MFU of the real training loop on a ~1B LLaMA built from a config.

Random init (nothing downloaded), a 9,229-example Alpaca sample (the AlpaGasus set's size),
LLaMA's tokenizer, bf16, packing, global batch 128, max length 512: the 7B recipe at 1B scale on
one GPU. Prints tokens/s and model FLOPs utilisation (MFU) against the GPU's dense bf16 peak.

    python bench/bench_train_mfu.py                    # on a GPU (target >= 40% MFU on one H100)
    python bench/bench_train_mfu.py --tiny             # a few-step CPU smoke run of the same code

MFU counts 6 x (parameters doing matmuls) per token (forward + backward), plus attention
(12 x layers x hidden x example length per token, each example attending only to itself, as
packed). Steps before --skip are warm-up and not timed.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from alpagasus.training import TrainSpec, train  # noqa: E402
from _report import report  # noqa: E402  (bench/_report.py)

# Dense bf16 peak (no sparsity), by substring of torch.cuda.get_device_name().
PEAK_TFLOPS = {"H200": 989.4, "H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 PCIe": 756.0,
               "H100 NVL": 835.0, "H100": 989.4, "A100": 312.0, "L40S": 362.0, "A10G": 70.0}

# ~1.0B parameters, LLaMA-1 shape (MHA, SwiGLU), 32k vocab.
MODEL_1B = {"hidden_size": 2048, "intermediate_size": 5504, "num_hidden_layers": 18,
            "num_attention_heads": 16, "num_key_value_heads": 16, "tie_word_embeddings": False}
MODEL_TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "tie_word_embeddings": False}


def peak_tflops(explicit: float | None) -> tuple[float | None, str]:
    import torch

    if explicit:
        return explicit, "given"
    if not torch.cuda.is_available():
        return None, "cpu"
    name = torch.cuda.get_device_name()
    for key, value in PEAK_TFLOPS.items():
        if key in name:
            return value, name
    return None, name


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shared", default=str(REPO.parent / "shared"))
    p.add_argument("--tiny", action="store_true", help="CPU smoke run: tiny model, 4 steps of 16 examples")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--skip", type=int, default=5, help="warm-up steps left out of the timing")
    p.add_argument("--per-device", type=int, default=8, help="rows of --max-length per micro-batch")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--examples", type=int, default=9229)
    p.add_argument("--attn", default=None, help="sdpa | flash_attention_2 | eager (default: flash if installed)")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--peak-tflops", type=float)
    p.add_argument("--out")
    args = p.parse_args()

    shared = Path(args.shared)
    alpaca = shared / "data" / "alpaca" / "alpaca_data.json"
    gguf = shared / "data" / "tokenizers" / "llama-spm.gguf"
    rng = random.Random(0)
    if alpaca.is_file():
        records = json.loads(alpaca.read_text())
        records = rng.sample(records, min(args.examples, len(records)))
    else:  # a checkout without ../shared: the miniature's records, so the script still runs
        from alpagasus.data.miniature import make_records

        records = make_records(args.examples, 0.3, seed=0)
    tokenizer = str(gguf) if gguf.is_file() else "char"

    steps = 4 if args.tiny else args.steps
    skip = 1 if args.tiny else args.skip
    size = {
        "base_model": None,
        "tokenizer": tokenizer,
        "model_config": MODEL_TINY if args.tiny else MODEL_1B,
        "max_steps": steps,
        "learning_rate": 2e-5,
        "global_batch_size": 16 if args.tiny else 128,
        "per_device_batch_size": 2 if args.tiny else args.per_device,
        "max_length": args.max_length,
        "warmup_ratio": 0.03,
        "weight_decay": 0.0,
        "lr_scheduler": "cosine",
        "bf16": not args.tiny,
        "gradient_checkpointing": args.gradient_checkpointing,
        "packing": True,
        "attn_implementation": args.attn,
        "save_every_steps": 10**9,
    }
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "sample.json"
        data.write_text(json.dumps(records))
        spec = TrainSpec(data=str(data), output=str(Path(tmp) / "out"), size=size, size_name="bench",
                         variant="mfu", template=None, seed=0, save_model=False)
        log = train(spec)

    timed = log["steps"][skip:]
    seconds = sum(s["time_s"] for s in timed)
    tokens = sum(s["tokens"] for s in timed)
    mc = size["model_config"]
    matmul_params = log["n_matmul_parameters"]
    flops_6n = 6 * matmul_params * tokens
    # Attention: 12 x layers x hidden x length^2 per example (each attends only to itself when
    # packed), from the data's mean squared length.
    n_examples = sum(s["examples"] for s in timed)
    flops_attn = 12 * mc["num_hidden_layers"] * mc["hidden_size"] * log["mean_squared_length"] * n_examples
    peak, device = peak_tflops(args.peak_tflops)
    result = {
        "device": device,
        "device_count": log["device_count"],
        "attn_implementation": log["attn_implementation"],
        "layout": log["layout"],
        "mixed_precision": log["mixed_precision"],
        "n_parameters": log["n_parameters"],
        "matmul_parameters": matmul_params,
        "steps_timed": len(timed),
        "global_batch": size["global_batch_size"],
        "tokens_per_s": tokens / seconds,
        "useful_token_fraction": log["useful_token_fraction"],
        "peak_memory_mb": log["peak_memory_mb"],
        "peak_tflops": peak,
        "achieved_tflops_6n": flops_6n / seconds / 1e12,
        "achieved_tflops_with_attention": (flops_6n + flops_attn) / seconds / 1e12,
        "mfu_6n": (flops_6n / seconds / 1e12 / peak) if peak else None,
        "mfu_with_attention": ((flops_6n + flops_attn) / seconds / 1e12 / peak) if peak else None,
        "loss_first_last": [log["steps"][0]["loss"], log["final_loss"]],
    }
    report(result, args.out)
    if peak:
        print(f"train: {result['tokens_per_s']:.0f} tokens/s, MFU {100 * result['mfu_6n']:.1f}% "
              f"(6N) / {100 * result['mfu_with_attention']:.1f}% (with attention) on {device}")
    else:
        print(f"train: {result['tokens_per_s']:.0f} tokens/s on {device} (no peak known: MFU not computed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
