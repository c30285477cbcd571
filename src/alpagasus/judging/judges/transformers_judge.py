"""An open model on the cluster's own GPUs (or a CPU) as a judge: `backend: transformers`.

Same prompts, parser, cache, scores.jsonl and ledger as an API judge; tokens are counted and
cost $0. The engine hands requests over one at a time; this backend collects the ones in
flight (``concurrency`` = ``batch_size`` x ``SORT_WINDOW_BATCHES``), sorts them by length and
runs them in batches, so a batch holds prompts of similar length and little padding.

- ``score_mode: text``: batched greedy generation with the model's chat template, left padding,
  ``max_new_tokens``; the reply is parsed like any judge's.
- ``score_mode: logprobs``: no generation. One forward pass over the prompt gives the
  next-token distribution where the reply starts; the most probable score digit is taken (the
  reply is constrained onto a score, as a judge that obeys "first output a single line
  containing the score" would write), and one incremental step over that digit and "." gives
  the distributions of what follows it and of the decimal. They are returned in the OpenAI
  ``logprobs.content`` shape, with every digit and "." listed beside the top 20, so
  expected_score.py reads them exactly as for an API judge; the mass the model put on anything
  but a score (it wanted to write "Hello") is its ``outside_mass``.

The cache key holds the model id, its revision, a sha256 of its weight files, the dtype, the
mode and max_new_tokens: another quantisation or fine-tune of the same name is another judge.
"""

from __future__ import annotations

import asyncio
import inspect
import logging

from alpagasus.core.config import filled
# Where a model is and what it is (its weights' sha256) are shared with the signals; the names
# stay importable from here.
from alpagasus.core.model_files import (ModelFileError, converted_gguf, installed_smollm2,  # noqa: F401
                                        resolve_model_dir, weights_sha256)
from alpagasus.judging.judges.base import JudgeFatalError, JudgeReply, JudgeRequest, await_startup

log = logging.getLogger(__name__)

SORT_WINDOW_BATCHES = 8  # requests held and sorted by length: this many batches' worth
TOP_LOGPROBS = 20


def local_judge_identity(cfg: dict, what: str) -> tuple:
    """(the model's directory, the params of its judgements' cache key) of a local judge
    (transformers or vLLM; ``cfg`` filled): revision, GGUF file, a sha256 of its weight files,
    dtype, score mode, and max_new_tokens in text mode (logprobs mode generates nothing)."""
    try:
        model_dir = resolve_model_dir(cfg["model"], cfg["revision"], cfg["gguf_file"])
        sha256 = weights_sha256(model_dir, cfg["gguf_file"])
    except ModelFileError as exc:
        raise JudgeFatalError(f"{what}: {exc}") from None
    params = {"revision": cfg["revision"], "gguf_file": cfg["gguf_file"], "weights_sha256": sha256,
              "dtype": cfg["dtype"], "score_mode": cfg["score_mode"]}
    if cfg["score_mode"] == "text":
        params["max_new_tokens"] = cfg["max_new_tokens"]
    return model_dir, params


def pairwise_needs_text(name: str, cfg: dict, request: JudgeRequest) -> None:
    """A local judge in logprobs mode reads one 0-5 rating: a pair of answers is a config error."""
    if cfg["score_mode"] == "logprobs" and "answer_1" in request.context:
        raise JudgeFatalError(f"judge {name!r}: score_mode logprobs reads one 0-5 rating; pairwise "
                              f"judging needs a judge with score_mode: text")


class TransformersJudge:
    cacheable = True  # slow: a judgement is worth keeping

    def __init__(self, name: str, cfg: dict):
        self.name = name
        self.cfg = filled("transformers_judge", cfg)  # the defaults of config/schema.yaml
        if self.cfg["score_mode"] not in ("text", "logprobs"):
            raise JudgeFatalError(f"config judges.{name}.score_mode: {self.cfg['score_mode']!r} is not text or logprobs")
        self.model = self.cfg["model"]
        self.model_dir, self.params = local_judge_identity(self.cfg, "transformers judge")
        self.batch_size = self.cfg["batch_size"]
        self.concurrency = self.batch_size * SORT_WINDOW_BATCHES
        self.attempts = 0
        self.failures: dict[str, int] = {}
        self.padding = {"real_tokens": 0, "padded_tokens": 0}  # of the batched prompts
        self._tok = self._lm = None
        self._pending: list[tuple[list[int], JudgeRequest, asyncio.Future]] = []
        self._runner: asyncio.Task | None = None
        self._loading: asyncio.Future | None = None

    def usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return 0.0

    async def aclose(self) -> None:
        if self._runner is not None:
            await asyncio.gather(self._runner, return_exceptions=True)

    # -- loading ---------------------------------------------------------------------------------

    def load(self) -> None:
        if self._lm is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if self.cfg["threads"]:
            torch.set_num_threads(self.cfg["threads"])
        dtype = self.cfg["dtype"] if self.cfg["dtype"] == "auto" else getattr(torch, self.cfg["dtype"])
        source, kw = self.model_dir, {}
        if self.cfg["gguf_file"]:
            source = converted_gguf(self.model_dir, self.cfg["gguf_file"], self.params["weights_sha256"])
        tok = AutoTokenizer.from_pretrained(source, **kw)
        lm = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, device_map=self.cfg["device_map"], **kw)
        lm.eval()
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        if not getattr(tok, "chat_template", None):
            raise JudgeFatalError(f"judge {self.name!r}: {self.model} has no chat template (an instruct model is needed)")
        self._tok, self._lm = tok, lm
        # transformers 5 renamed forward's past_key_values to cache.
        self._cache_kwarg = "cache" if "cache" in inspect.signature(lm.forward).parameters else "past_key_values"
        self._score_ids = self._single_char_ids("0123456789.")

    def _single_char_ids(self, chars: str) -> dict[str, int]:
        """Token id of each character where the tokenizer has it as one token of its own."""
        ids = {}
        for ch in chars:
            enc = self._tok.encode(ch, add_special_tokens=False)
            if len(enc) == 1 and self._tok.decode(enc) == ch:
                ids[ch] = enc[0]
        if not all(str(d) in ids for d in range(6)):
            raise JudgeFatalError(f"judge {self.name!r}: the tokenizer of {self.model} has no single-token digits "
                                  f"0-5; score_mode: logprobs cannot read a score from it")
        return ids

    def prompt_ids(self, request: JudgeRequest) -> list[int]:
        text = self._tok.apply_chat_template(request.messages, add_generation_prompt=True, tokenize=False)
        return self._tok.encode(text, add_special_tokens=False)

    # -- batching --------------------------------------------------------------------------------

    async def complete(self, request: JudgeRequest) -> JudgeReply:
        pairwise_needs_text(self.name, self.cfg, request)
        if self._lm is None:
            if self._loading is None:
                self._loading = asyncio.ensure_future(asyncio.to_thread(self.load))
            await await_startup(self.name, self._loading, f"cannot load {self.model}")
        self.attempts += 1
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((self.prompt_ids(request), request, fut))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        while self._pending:
            seen = -1
            while seen != len(self._pending):  # let every free worker hand its request over
                seen = len(self._pending)
                await asyncio.sleep(0)
            self._pending.sort(key=lambda item: len(item[0]))
            batch, self._pending = self._pending[:self.batch_size], self._pending[self.batch_size:]
            try:
                replies = await asyncio.to_thread(self.run_batch, [ids for ids, _, _ in batch])
            except Exception as exc:  # noqa: BLE001 - a model error stops the run, with its cause
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_exception(JudgeFatalError(f"judge {self.name!r}: {type(exc).__name__}: {exc}"))
                continue
            for (_, _, fut), reply in zip(batch, replies):
                if not fut.done():
                    fut.set_result(reply)

    def _left_pad(self, batch: list[list[int]]):
        import torch

        width = max(len(ids) for ids in batch)
        pad = self._tok.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in batch])
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch])
        self.padding["real_tokens"] += sum(len(ids) for ids in batch)
        self.padding["padded_tokens"] += width * len(batch)
        device = self._lm.device
        return input_ids.to(device), mask.to(device)

    def run_batch(self, batch: list[list[int]]) -> list[JudgeReply]:
        import torch

        with torch.inference_mode():
            if self.cfg["score_mode"] == "logprobs":
                return self._read_scores(batch)
            return self._generate(batch)

    def _generate(self, batch: list[list[int]]) -> list[JudgeReply]:
        input_ids, mask = self._left_pad(batch)
        out = self._lm.generate(input_ids=input_ids, attention_mask=mask, do_sample=False,
                                max_new_tokens=self.cfg["max_new_tokens"], pad_token_id=self._tok.pad_token_id,
                                temperature=None, top_p=None, top_k=None)
        replies = []
        eos = self._lm.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos]) | {self._tok.eos_token_id}
        for row, ids in zip(out[:, input_ids.shape[1]:].tolist(), batch):
            n = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
            text = self._tok.decode(row[:n], skip_special_tokens=True)
            replies.append(JudgeReply(text=text, prompt_tokens=len(ids), completion_tokens=n, model=self.model))
        return replies

    def _position(self, logprobs, chosen: int) -> dict:
        """One position in the OpenAI logprobs shape: the chosen token, the top 20, and every
        digit and "." (so no score token is ever missing from the list)."""
        top = logprobs.topk(TOP_LOGPROBS).indices.tolist()
        listed = dict.fromkeys([chosen, *top, *self._score_ids.values()])
        return {"token": self._tok.decode([chosen]), "logprob": float(logprobs[chosen]),
                "top_logprobs": [{"token": self._tok.decode([t]), "logprob": float(logprobs[t])} for t in listed]}

    def _read_scores(self, batch: list[list[int]]) -> list[JudgeReply]:
        import torch

        input_ids, mask = self._left_pad(batch)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self._lm(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                       logits_to_keep=1)
        first = out.logits[:, -1].float().log_softmax(-1)
        digits = torch.tensor([self._score_ids[str(d)] for d in range(6)], device=first.device)
        chosen = digits[first[:, digits].argmax(-1)]  # the most probable score digit
        dot = self._score_ids.get(".")
        replies = []
        if dot is None:  # a tokenizer without a "." token: integer scores only
            for b, ids in enumerate(batch):
                content = [self._position(first[b], int(chosen[b]))]
                replies.append(JudgeReply(text=content[0]["token"], prompt_tokens=len(ids), completion_tokens=1,
                                          model=self.model, logprobs=content))
            return replies
        step = torch.stack([chosen, torch.full_like(chosen, dot)], dim=1)
        last = positions[:, -1:]
        out2 = self._lm(input_ids=step, attention_mask=torch.cat([mask, torch.ones_like(step)], dim=1),
                        position_ids=torch.cat([last + 1, last + 2], dim=1), use_cache=False,
                        **{self._cache_kwarg: getattr(out, "cache", None) or out.past_key_values})
        after = out2.logits.float().log_softmax(-1)  # [:, 0]: after the digit; [:, 1]: after "."
        digit_ids = {self._score_ids[c]: c for c in "0123456789" if c in self._score_ids}
        for b, ids in enumerate(batch):
            d = int(chosen[b])
            content = [self._position(first[b], d)]
            nxt = int(after[b, 0].argmax())
            content.append(self._position(after[b, 0], nxt))
            text = self._tok.decode([d])
            if nxt == dot:
                dec = int(after[b, 1].argmax())
                content.append(self._position(after[b, 1], dec))
                if dec in digit_ids:
                    text += "." + digit_ids[dec]
            replies.append(JudgeReply(text=text, prompt_tokens=len(ids), completion_tokens=len(content),
                                      model=self.model, logprobs=content))
        return replies
