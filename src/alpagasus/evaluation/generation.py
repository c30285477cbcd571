"""Answers of a fine-tuned checkpoint on a test set: greedy, batched with left padding.

Protocol (../shared/PAPER.md section 3): greedy decoding, up to ``max_new_tokens`` (1,024),
Alpaca's no-input template, or the input template for Self-Instruct items with an input
(``alpaca_prompt`` chooses from the item's ``input``), stop at eos. Prompts are sorted by
length before batching so that a batch pads little, then answers are written back in the test
set's order. Each output line carries what the judge needs (the question as it will see it)
and how the answer was produced (model, decoding parameters).

Resumable: each finished batch is appended (and fsync'd) to a hidden partial file beside the
output, keyed by what defines the answers (checkpoint, test set, template, decoding). A rerun
after a kill, a time limit or a preemption generates only the items that are missing; the
output itself appears only when every item has its answer.

``generation.engine: vllm`` has vLLM decode instead, in its own interpreter
(``alpagasus.evaluation.vllm_interpreter``, ``vllm_engine``); the prompts, the reading of an
answer (``answer_from_tokens``), the partial file and the output are this module's for both.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from alpagasus.core import identity
from alpagasus.training import memory
from alpagasus.core.io import sha256_file
from alpagasus.core.io import read_jsonl, write_jsonl
from alpagasus.data.template import alpaca_prompt
from alpagasus.core.stop_signals import ignoring_time_limit_warning

log = logging.getLogger("alpagasus.evaluation.generation")

REQUIRED_FIELDS = ("id", "instruction", "input", "question")


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str) -> str:
    """bf16 on a GPU that has it, else float32: how a checkpoint is evaluated (generation, benchmarks)."""
    import torch

    return "bfloat16" if device.startswith("cuda") and torch.cuda.is_bf16_supported() else "float32"


def load_model(checkpoint: str | Path, device: str | None = None, dtype: str | None = None):
    """(model, tokenizer) from a checkpoint directory, in eval mode, tokenizer padding left."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or default_device()
    dtype = dtype or default_dtype(device)
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    # Decoder-only models must see the prompt's last token at the last position.
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=getattr(torch, dtype))
    model.to(device).eval()
    return model, tokenizer


def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int = 16,
    progress: bool = True,
    desc: str = "generate",
    on_batch: Callable[[list[tuple[int, dict]]], None] | None = None,
) -> list[dict]:
    """Greedy continuations of ``prompts`` (same order): {"answer", "n_new_tokens", "stopped_at_eos"}.

    ``on_batch`` gets each finished batch as (index into ``prompts``, result) pairs, so that a
    caller can save answers before the whole list is done.
    """
    import torch
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id
    encoded = [tokenizer(p, add_special_tokens=True)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: (-len(encoded[i]), i))
    results: list[dict | None] = [None] * len(prompts)
    device = next(model.parameters()).device
    bar = tqdm(total=len(prompts), desc=desc, unit="item", disable=not progress, file=sys.stderr,
               mininterval=0.5 if sys.stderr.isatty() else 15.0)
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            width = max(len(encoded[i]) for i in idx)
            input_ids = torch.full((len(idx), width), pad, dtype=torch.long)
            attention_mask = torch.zeros((len(idx), width), dtype=torch.long)
            for r, i in enumerate(idx):
                ids = encoded[i]
                input_ids[r, width - len(ids):] = torch.tensor(ids)
                attention_mask[r, width - len(ids):] = 1
            out = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                eos_token_id=eos,
                pad_token_id=pad,
            )
            new = out[:, width:].tolist()
            for r, i in enumerate(idx):
                results[i] = answer_from_tokens(tokenizer, new[r])
            if on_batch is not None:
                on_batch([(i, results[i]) for i in idx])
            bar.update(len(idx))
    bar.close()
    return results  # type: ignore[return-value]


def answer_from_tokens(tokenizer, toks: list[int]) -> dict:
    """{"answer", "n_new_tokens", "stopped_at_eos"} from the new tokens of one sequence (up to
    eos, which counts as a token; padding after it dropped): one reading for both engines."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    stopped = eos in toks
    if stopped:
        toks = toks[:toks.index(eos)]
    elif pad is not None and pad != eos:
        toks = [t for t in toks if t != pad]
    text = tokenizer.decode(toks, skip_special_tokens=True)
    return {"answer": text.strip(), "n_new_tokens": len(toks) + int(stopped), "stopped_at_eos": stopped}


def validate_items(items: list[dict], source: str) -> None:
    seen: dict = {}
    for n, item in enumerate(items):
        for field in REQUIRED_FIELDS:
            if field not in item:
                raise ValueError(f"{source}: item {n} (id {item.get('id')!r}) has no field {field!r}")
        if item["id"] in seen:
            raise ValueError(f"{source}: item {n} has id {item['id']!r}, already used by item {seen[item['id']]}")
        seen[item["id"]] = n


# --- resuming ----------------------------------------------------------------------------------

def partial_path(output: str | Path) -> Path:
    """Where finished batches wait: hidden, beside the output (which Snakemake deletes on failure;
    this file it leaves alone)."""
    output = Path(output)
    return output.parent / f".{output.name}.partial"


def checkpoint_identity(checkpoint: str | Path) -> str:
    """Cheap identity of a checkpoint directory: its config and train log (unique to a training
    run), and the names, sizes and modification times of its weight files (hashing 26 GB of a
    13B model's weights would cost minutes)."""
    ck = Path(checkpoint)
    h = hashlib.sha256()
    for name in ("config.json", "train_log.json", "generation_config.json"):
        f = ck / name
        h.update(name.encode() + b"\0" + (f.read_bytes() if f.is_file() else b"-") + b"\0")
    for f in sorted(ck.glob("*.safetensors")) + sorted(ck.glob("*.bin")):
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}\0".encode())
    return h.hexdigest()


def generation_key(checkpoint, test_set, *, testset, model_name, template, max_new_tokens, dtype, engine: dict) -> str:
    """What the answers depend on (``alpagasus.core.identity``); the batch size (speed only) is left out."""
    return identity.generation_key(checkpoint=checkpoint_identity(checkpoint), test_set_sha256=sha256_file(test_set),
                                   testset=testset, model_name=model_name, template=template,
                                   max_new_tokens=max_new_tokens, dtype=dtype, engine=engine)


def load_partial(path: Path, key: str) -> dict:
    """{item id: result} saved by an earlier run with the same key; {} when there is none or it
    belongs to other settings. A torn last line (a kill mid-write) is dropped."""
    if not path.is_file():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = []
    for n, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if n == len(lines) - 1:
                break
            log.warning("%s: line %d is not JSON; starting this test set afresh", path, n + 1)
            return {}
    if not rows or rows[0].get("partial_of") != key:
        if rows:
            log.info("%s: saved answers are for another checkpoint or settings; not reused", path)
        return {}
    return {r["id"]: r["result"] for r in rows[1:]}


class PartialWriter:
    """Appends finished answers to the partial file, durably, one batch at a time."""

    def __init__(self, path: Path, key: str, done: dict):
        path.parent.mkdir(parents=True, exist_ok=True)
        # Rewrite what is kept (atomically) so that appends never follow a torn line.
        write_jsonl(path, [{"partial_of": key}] + [{"id": i, "result": r} for i, r in done.items()])
        self.fh = open(path, "a", encoding="utf-8")

    @classmethod
    def appending(cls, path: Path) -> "PartialWriter":
        """A writer that appends to a partial file another process has started (the vLLM worker's)."""
        writer = cls.__new__(cls)
        writer.fh = open(path, "a", encoding="utf-8")
        return writer

    def add(self, pairs: list[tuple[object, dict]]) -> None:
        for item_id, result in pairs:
            self.fh.write(json.dumps({"id": item_id, "result": result}, ensure_ascii=False) + "\n")
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        self.fh.close()


def generate_test_set(
    checkpoint: str | Path,
    test_set: str | Path,
    output: str | Path,
    *,
    testset: str,
    model_name: str,
    template: str | None = None,
    max_new_tokens: int = 1024,
    batch_size: int = 16,
    threads: int | None = None,
    progress: bool = True,
    mem_mb: int | None = None,
    engine: str = "transformers",
    vllm: dict | None = None,
) -> dict:
    """Write one JSONL line per test item (atomically); returns a small summary.

    ``mem_mb`` (the job's grant) is compared with the memory estimate before generating.
    ``engine`` "vllm" decodes with vLLM (``alpagasus.evaluation.vllm_interpreter``) under the settings
    ``vllm`` (config generation.vllm, filled); ``batch_size`` is then unused (vLLM schedules).
    """
    if engine not in ("transformers", "vllm"):
        raise ValueError(f"generation.engine must be transformers or vllm, not {engine!r}")
    if engine == "vllm" and vllm is None:
        raise ValueError("engine 'vllm' needs its settings (config generation.vllm)")
    if threads and engine == "transformers":
        import torch

        torch.set_num_threads(int(threads))
    # Saved batch by batch: the time-limit warning is no reason to stop early (alpagasus.core.stop_signals).
    with ignoring_time_limit_warning():
        return _generate_test_set(checkpoint, test_set, output, testset=testset, model_name=model_name,
                                  template=template, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                  progress=progress, mem_mb=mem_mb, engine=engine, vllm=vllm, threads=threads)


def check_memory(model, tokenizer, prompts: list[str], *, batch_size: int, max_new_tokens: int, what: str,
                 mem_mb: int | None) -> dict:
    """Log the job's memory estimate beside its grant (``alpagasus.training.memory``); warn when short."""
    longest = max((len(tokenizer(p)["input_ids"]) for p in prompts), default=0)
    est = memory.generation_estimate(
        config=model.config, n_parameters=sum(p.numel() for p in model.parameters()),
        dtype_bytes=next(model.parameters()).element_size(), batch_size=min(batch_size, max(1, len(prompts))),
        prompt_tokens=longest, max_new_tokens=max_new_tokens)
    return memory.check(est, what, memory.granted_mb(mem_mb))


def _generate_test_set(checkpoint, test_set, output, *, testset, model_name, template, max_new_tokens,
                       batch_size, progress, mem_mb, engine, vllm, threads) -> dict:
    items = read_jsonl(test_set)
    validate_items(items, str(test_set))
    prompts = [alpaca_prompt(it["instruction"], it["input"], template) for it in items]
    if engine == "vllm":
        from alpagasus.evaluation.vllm_interpreter import VllmInterpreter, check_prompt_lengths

        interpreter = VllmInterpreter(vllm["python"])  # fails here, in one line, where vLLM is missing
        check_prompt_lengths(checkpoint, items, prompts, vllm["max_model_len"], str(test_set))
        dtype = interpreter.dtype
        engine_id = {"engine": "vllm", "engine_version": interpreter.version, "max_model_len": vllm["max_model_len"]}
        batching = {"tensor_parallel_size": interpreter.tensor_parallel_size}
    else:
        import transformers

        model, tokenizer = load_model(checkpoint)
        dtype = str(next(model.parameters()).dtype).replace("torch.", "")
        check_memory(model, tokenizer, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens,
                     what=f"generate {model_name} {testset}", mem_mb=mem_mb)
        engine_id = {"engine": "transformers", "engine_version": transformers.__version__}
        batching = {"batch_size": batch_size, "padding_side": "left"}
    decoding = {"strategy": "greedy", "do_sample": False, "max_new_tokens": max_new_tokens,
                "template": "alpaca" if template is None else template, "dtype": dtype, **engine_id, **batching}

    partial = partial_path(output)
    key = generation_key(checkpoint, test_set, testset=testset, model_name=model_name, template=template,
                         max_new_tokens=max_new_tokens, dtype=dtype, engine=engine_id)
    done = load_partial(partial, key)
    todo = [n for n, it in enumerate(items) if it["id"] not in done]
    if done:
        log.info("%s on %s: %d of %d answers saved by an earlier run; generating the other %d",
                 model_name, testset, len(items) - len(todo), len(items), len(todo))
    writer = PartialWriter(partial, key, done)
    t0 = time.perf_counter()
    if engine == "vllm":
        writer.close()  # the worker appends to it, each answer as it finishes
        if todo:
            interpreter.answer(checkpoint, [(items[n]["id"], prompts[n]) for n in todo], partial,
                          max_new_tokens=max_new_tokens, settings=vllm, threads=threads, progress=progress)
        saved = load_partial(partial, key)
        missing = [items[n]["id"] for n in todo if items[n]["id"] not in saved]
        if missing:
            raise RuntimeError(f"{partial}: the vLLM worker exited without the answers of {len(missing)} "
                               f"items (first: {missing[0]!r})")
        new = [saved[items[n]["id"]] for n in todo]
    else:
        try:
            new = generate(model, tokenizer, [prompts[n] for n in todo], max_new_tokens, batch_size, progress,
                           desc=f"{model_name} {testset}",
                           on_batch=lambda pairs: writer.add([(items[todo[j]]["id"], r) for j, r in pairs]))
        finally:
            writer.close()
    wall = time.perf_counter() - t0
    done.update((items[n]["id"], r) for n, r in zip(todo, new))
    outs = [done[it["id"]] for it in items]
    rows = []
    for it, prompt, out in zip(items, prompts, outs):
        row = {
            "testset": testset,
            "id": it["id"],
            "question": it["question"],
            "instruction": it["instruction"],
            "input": it["input"],
            "answer": out["answer"],
            "model": model_name,
            "decoding": decoding,
            "n_new_tokens": out["n_new_tokens"],
            "stopped_at_eos": out["stopped_at_eos"],
        }
        if "reference" in it:
            row["reference"] = it["reference"]
        rows.append(row)
    write_jsonl(output, rows)
    partial.unlink(missing_ok=True)
    n_tokens = sum(o["n_new_tokens"] for o in new)
    summary = {"items": len(rows), "generated": len(todo), "resumed": len(items) - len(todo),
               "wall_s": round(wall, 3), "new_tokens": n_tokens,
               "new_tokens_per_s": n_tokens / wall if wall else None,
               "hit_max_new_tokens": sum(not o["stopped_at_eos"] for o in outs)}
    log.info("%s on %s: %s", model_name, testset, summary)
    return summary
