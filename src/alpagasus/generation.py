"""Answers of a fine-tuned checkpoint on a test set: greedy, batched with left padding.

Protocol (../shared/PAPER.md section 3): greedy decoding, up to ``max_new_tokens`` (1,024),
Alpaca's no-input template, or the input template for Self-Instruct items with an input
(``alpaca_prompt`` chooses from the item's ``input``), stop at eos. Prompts are sorted by
length before batching so that a batch pads little, then answers are written back in the test
set's order. Each output line carries what the judge needs (the question as it will see it)
and how the answer was produced (model, decoding parameters).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Sequence

from .io import read_jsonl, write_jsonl
from .prompts import alpaca_prompt

log = logging.getLogger("alpagasus.generation")

REQUIRED_FIELDS = ("id", "instruction", "input", "question")


def load_model(checkpoint: str | Path, device: str | None = None, dtype: str | None = None):
    """(model, tokenizer) from a checkpoint directory, in eval mode, tokenizer padding left."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        dtype = "bfloat16" if device.startswith("cuda") and torch.cuda.is_bf16_supported() else "float32"
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
) -> list[dict]:
    """Greedy continuations of ``prompts`` (same order): {"answer", "n_new_tokens", "stopped_at_eos"}."""
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
                toks = new[r]
                stopped = eos in toks
                if stopped:
                    toks = toks[:toks.index(eos)]
                else:
                    toks = [t for t in toks if t != pad] if pad != eos else toks
                text = tokenizer.decode(toks, skip_special_tokens=True)
                results[i] = {"answer": text.strip(), "n_new_tokens": len(toks) + int(stopped),
                              "stopped_at_eos": stopped}
            bar.update(len(idx))
    bar.close()
    return results  # type: ignore[return-value]


def validate_items(items: list[dict], source: str) -> None:
    for n, item in enumerate(items):
        for field in REQUIRED_FIELDS:
            if field not in item:
                raise ValueError(f"{source}: item {n} (id {item.get('id')!r}) has no field {field!r}")


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
) -> dict:
    """Write one JSONL line per test item (atomically); returns a small summary."""
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    with _ignoring_sigusr1():
        return _generate_test_set(checkpoint, test_set, output, testset=testset, model_name=model_name,
                                  template=template, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                  progress=progress)


@contextlib.contextmanager
def _ignoring_sigusr1():
    """GPU jobs get SIGUSR1 before their time limit (for training to save its state); generation
    has nothing to save, so it keeps going until the limit instead of dying 10 minutes early."""
    try:
        old = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR1, old)


def _generate_test_set(checkpoint, test_set, output, *, testset, model_name, template, max_new_tokens,
                       batch_size, progress) -> dict:
    items = read_jsonl(test_set)
    validate_items(items, str(test_set))
    model, tokenizer = load_model(checkpoint)
    prompts = [alpaca_prompt(it["instruction"], it["input"], template) for it in items]
    t0 = time.perf_counter()
    outs = generate(model, tokenizer, prompts, max_new_tokens, batch_size, progress,
                    desc=f"{model_name} {testset}")
    wall = time.perf_counter() - t0
    decoding = {
        "strategy": "greedy",
        "do_sample": False,
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
        "padding_side": "left",
        "template": "alpaca" if template is None else template,
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
    }
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
    n_tokens = sum(o["n_new_tokens"] for o in outs)
    summary = {"items": len(rows), "wall_s": round(wall, 3), "new_tokens": n_tokens,
               "new_tokens_per_s": n_tokens / wall if wall else None,
               "hit_max_new_tokens": sum(not o["stopped_at_eos"] for o in outs)}
    log.info("%s on %s: %s", model_name, testset, summary)
    return summary
