"""IFD and perplexity of each record's response under a causal LM (kinds ``ifd``, ``perplexity``).

Cherry (Li et al. 2023, github tianyi-lab/Cherry_LLM, cherry_seletion/data_analysis.py and
data_by_IFD.py) and Superfiltering (tianyi-lab/Superfiltering, code_ifd/) score a record by how
much its instruction helps a model predict its response:

    IFD = s(A | Q) / s(A)

where each s is the mean cross-entropy over the response tokens only:

- s(A | Q), the *conditioned* loss: the response after the training prompt, the whole text
  ``prompt + output`` tokenised in one piece and the first ``len(tokenize(prompt))`` tokens not
  scored, exactly as training masks them (Stanford Alpaca's train.py, training/packing.py). The
  prompt is the training template: Stanford Alpaca's (alpagasus.data.template), or the config's
  ``training.template``.
- s(A), the *direct* loss: the response after the template's response marker alone (the last
  line of the prompt, ``### Response:``), as Cherry's data_analysis.py writes it
  (``'### Response:' + output``), truncated to the conditioned sequence's response tokens, so
  both means run over the same response tokens and every one of them is predicted from some
  context. (Superfiltering scores the bare response instead, its first token unpredicted.)

IFD >= 1 means the instruction did not help at all: both papers drop those records before
ranking (data_by_IFD.py: ``if mean_rate > 1: continue``); here they are kept in the file with the
flag ``ifd_ge_1``, and a selector says whether to keep them (``below: 1``). Cherry keeps the
highest IFD below 1. ``perplexity`` is exp(s(A | Q)), the conditioned perplexity of the
response (Superfiltering's ``ppl_A_condition``).

A record whose response is empty, or whose prompt alone fills ``max_length``, gets value null
and a ``reason``. Batches hold sequences of similar length (sorted), left-padded, and the LM
computes logits only for the last positions, where every row's response is; the losses are
cached per record by the model's weights sha256 (cache.py).
"""

from __future__ import annotations

import inspect
import logging
import math

from alpagasus.core.config import filled
from alpagasus.core.identity import signal_cache_key, signal_identity
from alpagasus.core.model_files import model_directory, tokenizer_sha256, weights_sha256
from alpagasus.data import content_hash
from alpagasus.data.template import alpaca_prompt
from alpagasus.selection.signals import SignalError, pick_device, row, torch_dtype
from alpagasus.selection.signals.cache import ValueCache

log = logging.getLogger(__name__)

FLAG_IFD_GE_1 = "ifd_ge_1"
# Records tokenised, scored and cached together: a killed job loses at most this many batches.
CHUNK_BATCHES = 16


def response_marker(template: str | None = None) -> str:
    """What precedes the response in the template, alone: its last line ("### Response:")."""
    return alpaca_prompt("", "", template).rsplit("\n", 1)[-1]


def encode(tok, record: dict, template: str | None, max_length: int) -> dict:
    """The two scored sequences of one record: ``conditioned`` (prompt + response) and
    ``direct`` (response marker + response), each with the number of response tokens at its
    end; or a ``reason`` why there is nothing to score."""
    output = record["output"]
    if not output.strip():
        return {"reason": "empty response"}
    prompt = alpaca_prompt(record["instruction"], record["input"], template)
    marker = response_marker(template)
    full = tok(prompt + output)["input_ids"]
    n_prompt = len(tok(prompt)["input_ids"])
    if n_prompt >= max_length:
        return {"reason": f"the prompt alone is {n_prompt} tokens, max_length {max_length}"}
    cond = full[:max_length]
    n_resp = len(cond) - n_prompt
    if n_resp <= 0:
        return {"reason": "no response token after the prompt"}
    n_marker = len(tok(marker)["input_ids"])
    direct = tok(marker + output)["input_ids"][:n_marker + n_resp]
    return {"conditioned": (cond, n_resp), "direct": (direct, len(direct) - n_marker),
            "truncated": len(full) > max_length, "tokens_prompt": n_prompt}


class CausalLM:
    """A causal LM and its tokenizer, scoring the mean loss of the last tokens of sequences."""

    def __init__(self, model_dir, tokenizer_dir, dtype: str = "float32", device_map: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(tokenizer_dir)
        device = pick_device(device_map)
        if device in ("auto", "balanced", "sequential"):  # spread over devices by accelerate
            self.lm = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype(dtype), device_map=device)
        else:
            self.lm = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype(dtype)).to(device)
        self.lm.eval()
        self.pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else (self.tok.eos_token_id or 0)
        self.keeps_logits = "logits_to_keep" in inspect.signature(self.lm.forward).parameters
        self.torch = torch
        self.padding = {"real_tokens": 0, "padded_tokens": 0}

    def mean_losses(self, batch: list[tuple[list[int], int]]) -> list[float]:
        """For each (ids, n): the mean cross-entropy of the last n tokens of ids, given the rest.
        Left padding puts every row's scored tokens at the end, so only the last max(n) + 1
        positions' logits are computed (``logits_to_keep``) and read."""
        torch = self.torch
        width = max(len(ids) for ids, _ in batch)
        keep = max(n for _, n in batch) + 1
        input_ids = torch.tensor([[self.pad] * (width - len(ids)) + ids for ids, _ in batch])
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids, _ in batch])
        self.padding["real_tokens"] += sum(len(ids) for ids, _ in batch)
        self.padding["padded_tokens"] += width * len(batch)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        device = self.lm.device
        kw = {"logits_to_keep": keep} if self.keeps_logits else {}
        with torch.inference_mode():
            out = self.lm(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                          position_ids=positions.to(device), use_cache=False, **kw)
            logits = out.logits[:, -keep:-1].float()  # position j predicts token j + 1
            targets = input_ids[:, width - keep + 1:].to(logits.device)
            # -log softmax at the target, without a second (batch, positions, vocabulary) tensor
            nll = logits.logsumexp(-1) - logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            counts = torch.tensor([n for _, n in batch], device=logits.device)
            scored = torch.arange(keep - 1, device=logits.device).unsqueeze(0) >= (keep - 1 - counts).unsqueeze(1)
            # where, not a product: a padded position's logits may be NaN, and NaN * 0 is NaN.
            total = torch.where(scored, nll, torch.zeros_like(nll)).sum(-1)
            return (total / counts).tolist()


def batched_losses(model: CausalLM, seqs: list[tuple[list[int], int]], batch_size: int) -> list[float]:
    """mean_losses over ``seqs`` in batches of similar length; results in the order given."""
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))
    out: list[float] = [math.nan] * len(seqs)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        for i, loss in zip(idx, model.mean_losses([seqs[i] for i in idx])):
            out[i] = loss
    return out


def both_losses(model: CausalLM, encoded: list[dict], batch_size: int) -> tuple[list[float], list[float]]:
    """The conditioned and direct losses of encoded records: the 2n sequences sorted by length
    together, so a batch holds sequences of about one length, whichever pass they are of."""
    losses = batched_losses(model, [e["conditioned"] for e in encoded] + [e["direct"] for e in encoded], batch_size)
    return losses[:len(encoded)], losses[len(encoded):]


def losses_entry(sha: str, enc: dict, cond: float | None = None, direct: float | None = None) -> dict:
    if "reason" in enc:
        return {"record_sha256": sha, "reason": enc["reason"]}
    if not (math.isfinite(cond) and math.isfinite(direct)):  # an overflow in float16, say
        return {"record_sha256": sha, "reason": f"a loss is not finite (conditioned {cond}, response {direct})"}
    return {"record_sha256": sha, "loss_conditioned": cond, "loss_response": direct,
            "tokens_response": enc["conditioned"][1], "tokens_prompt": enc["tokens_prompt"],
            "truncated": enc["truncated"]}


def value_row(kind: str, index: int, record: dict, entry: dict) -> dict:
    """One line of the ifd or perplexity file from a record's cached losses."""
    if "reason" in entry:
        return row(index, record, None, reason=entry["reason"])
    cond, direct = entry["loss_conditioned"], entry["loss_response"]
    fields = {"loss_conditioned": cond, "loss_response": direct, "tokens_response": entry["tokens_response"],
              "truncated": entry["truncated"]}
    if kind == "perplexity":
        return row(index, record, math.exp(cond) if cond < 700 else None, **fields)
    if not direct > 0:
        return row(index, record, None, reason=f"the response alone has loss {direct}", **fields)
    ifd = cond / direct
    return row(index, record, ifd, **fields, flags=[FLAG_IFD_GE_1] if ifd >= 1 else [])


def lm_signal_rows(name: str, signal_cfg: dict, records: list[dict], *, cache_dir, template: str | None = None,
                   converted: dict | None = None, progress: bool = True) -> tuple[list[dict], dict]:
    """The lines of signal ``name`` (kind ifd or perplexity) for ``records``, and what was
    computed now vs read from the cache. ``converted``: GGUF spec -> its converted directory
    (rule convert_gguf); a GGUF file not listed is converted once at run time."""
    cfg = filled("signals.*", signal_cfg)
    converted = converted or {}
    try:
        model_dir = model_directory(cfg["model"], cfg["revision"], cfg["gguf_file"], converted.get(cfg["model"]))
        tok_dir = (model_directory(cfg["tokenizer"], converted=converted.get(cfg["tokenizer"]))
                   if cfg["tokenizer"] else model_dir)
        sha = weights_sha256(model_dir)
    except ValueError as exc:
        raise SignalError(f"signal {name!r}: {exc}") from None
    key = signal_cache_key(signal_identity(cfg), sha, tokenizer_sha256=tokenizer_sha256(tok_dir),
                           template=template)
    hashes = [content_hash(r) for r in records]
    about = {"signal": name, "kind": cfg["kind"], "model": cfg["model"], "weights_sha256": sha,
             "max_length": cfg["max_length"], "template": template}
    with ValueCache(cache_dir, key, about) as cache:
        todo = {h: r for h, r in zip(hashes, records) if h not in cache}  # identical records once
        log.info("signal %s: %d records, %d cached, %d to compute with %s", name, len(records),
                 len(records) - sum(h in todo for h in hashes), len(todo), cfg["model"])
        if todo:
            compute_losses(todo, cfg, model_dir, tok_dir, template, cache, progress, desc=f"signal {name}")
        rows = [value_row(cfg["kind"], i, rec, cache.get(h)) for i, (rec, h) in enumerate(zip(records, hashes))]
    return rows, {"records": len(records), "computed": len(todo), "weights_sha256": sha}


def compute_losses(todo: dict[str, dict], cfg: dict, model_dir, tok_dir, template, cache: ValueCache,
                   progress: bool, desc: str) -> CausalLM:
    from tqdm.auto import tqdm

    try:
        model = CausalLM(model_dir, tok_dir, cfg["dtype"], cfg["device_map"])
    except (OSError, ValueError) as exc:
        raise SignalError(f"{desc}: cannot load {cfg['model']} ({type(exc).__name__}: {exc})") from None
    encoded = {h: encode(model.tok, rec, template, cfg["max_length"]) for h, rec in todo.items()}
    cache.put_many([losses_entry(h, e) for h, e in encoded.items() if "reason" in e])
    scorable = sorted((h for h, e in encoded.items() if "reason" not in e),
                      key=lambda h: len(encoded[h]["conditioned"][0]))
    chunk = cfg["batch_size"] * CHUNK_BATCHES
    with tqdm(total=len(todo), desc=desc, unit="rec", disable=not progress, mininterval=5) as bar:
        bar.update(len(todo) - len(scorable))
        for start in range(0, len(scorable), chunk):
            part = scorable[start:start + chunk]
            cond, direct = both_losses(model, [encoded[h] for h in part], cfg["batch_size"])
            cache.put_many([losses_entry(h, encoded[h], c, d) for h, c, d in zip(part, cond, direct)])
            bar.update(len(part))
    return model
