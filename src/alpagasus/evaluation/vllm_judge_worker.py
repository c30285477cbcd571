"""A judge's vLLM engine (``backend: vllm``; the job's side is judging/judges/vllm_judge.py):
``python -m alpagasus.evaluation.vllm_engine --judge`` in the vLLM interpreter, one process for
the whole rating job, talking JSON lines over its stdin and stdout.

Protocol: the first line out is what ``vllm_engine.probe`` finds (vLLM's version, the GPUs, or
what is missing); the first line in is the engine's settings (as for ``--answer``: checkpoint,
dtype, settings, threads; tensor parallel over the GPUs it sees) and the judge's (score_mode,
max_new_tokens); then a line out ``{"ready": ...}`` or ``{"fatal": why}``. Then each line in is one request,
``{"id", "messages"}``, and each line out its reply, ``{"id", "text", "prompt_tokens",
"completion_tokens", "logprobs"}`` or ``{"id", "error"}``, in the order they finish: every
request in flight is in vLLM's queue at once (continuous batching). End of input (the job
closed it, or died: kill -9) ends the process; so does the job's death itself (PR_SET_PDEATHSIG).
SIGTERM is ignored: the job, which gets it too (scancel), awaits the replies in flight and then
closes the input.

What it computes is the transformers judge's (judges/transformers_judge.py), through vLLM:

- ``text``: greedy, up to max_new_tokens, stopping at the eos of the tokenizer and of the
  model's generation_config.json, the prompt through the model's chat template;
- ``logprobs``: no free generation. The most probable score digit 0-5 where the reply starts
  (vLLM's ``allowed_token_ids``; its log-probabilities are the model's raw ones, before that
  mask), then what follows that digit, and what follows "digit." (prefix-cached requests
  over the prompt and the digit). Each position lists the chosen token, the top 20 and every
  digit and "." (``logprob_token_ids``), in the OpenAI ``logprobs.content`` shape.

Only the standard library is imported before vLLM.
"""

from __future__ import annotations

import json
import math
import os
import queue
import signal
import sys
import threading
import time

TOP_LOGPROBS = 20
SCORE_CHARS = "0123456789."


def _die_with_parent() -> None:
    """SIGKILL this process when the job that started it dies (Linux), whatever kills the job."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _protocol_stdout():
    """The replies' channel: this process's stdout as it was; everything else printed to fd 1
    from here on (vLLM's logger, C libraries) goes to stderr, the job's log."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


class _Scorer:
    def __init__(self, setup: dict):
        from alpagasus.evaluation.vllm_engine import engine_args, engine_environment

        engine_environment(setup)
        from transformers import AutoTokenizer, GenerationConfig
        from vllm import LLM, SamplingParams
        from vllm.inputs import TokensPrompt

        self.SamplingParams, self.TokensPrompt = SamplingParams, TokensPrompt
        self.mode, self.max_new_tokens = setup["score_mode"], setup["max_new_tokens"]
        checkpoint = setup["checkpoint"]
        self.tok = AutoTokenizer.from_pretrained(checkpoint)
        if not getattr(self.tok, "chat_template", None):
            raise ValueError(f"{checkpoint} has no chat template (an instruct model is needed)")
        eos = {self.tok.eos_token_id}
        try:
            gen_eos = GenerationConfig.from_pretrained(checkpoint).eos_token_id
        except OSError:  # no generation_config.json
            gen_eos = None
        eos |= set(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        self.eos = sorted(t for t in eos if t is not None)
        self.ids = self._single_char_ids()
        # Prefix caching: the requests after the digit re-read the prompt from the cache.
        self.llm = LLM(**engine_args(setup), enable_prefix_caching=True)
        self.engine = self.llm.llm_engine
        self.state: dict[str, dict] = {}  # record id -> what its requests have brought

    def _single_char_ids(self) -> dict[str, int]:
        ids = {}
        for ch in SCORE_CHARS:
            enc = self.tok.encode(ch, add_special_tokens=False)
            if len(enc) == 1 and self.tok.decode(enc) == ch:
                ids[ch] = enc[0]
        if self.mode == "logprobs" and not all(str(d) in ids for d in range(6)):
            raise ValueError("the tokenizer has no single-token digits 0-5; score_mode: logprobs cannot read a "
                             "score from it")
        return ids

    # -- requests --------------------------------------------------------------------------------

    def _add(self, rid: str, tokens: list[int], **params) -> None:
        self.engine.add_request(rid, self.TokensPrompt(prompt_token_ids=tokens),
                                self.SamplingParams(temperature=0.0, **params))

    def start(self, msg: dict) -> None:
        text = self.tok.apply_chat_template(msg["messages"], add_generation_prompt=True, tokenize=False)
        tokens = self.tok.encode(text, add_special_tokens=False)
        self.state[msg["id"]] = {"tokens": tokens, "got": {}}
        if self.mode == "text":
            self._add(f"{msg['id']}|text", tokens, max_tokens=self.max_new_tokens, stop_token_ids=self.eos)
        else:  # the most probable score digit, and the top 20 where it is read
            self._add(f"{msg['id']}|1", tokens, max_tokens=1, logprobs=TOP_LOGPROBS,
                      allowed_token_ids=[self.ids[str(d)] for d in range(6)])

    def finished(self, output) -> dict | None:
        """A finished vLLM request; the record's reply when it was the record's last."""
        record, part = output.request_id.rsplit("|", 1)
        st = self.state[record]
        gen = output.outputs[0]
        st["got"][part] = gen
        tokens = st["tokens"]
        if part == "text":
            return self._reply(record, self.tok.decode(gen.token_ids, skip_special_tokens=True), len(gen.token_ids))
        if part == "1":
            digit = gen.token_ids[0]
            st["digit"] = digit
            every = list(self.ids.values())
            self._add(f"{record}|1d", tokens, max_tokens=1, logprob_token_ids=every,
                      allowed_token_ids=[self.ids[str(d)] for d in range(6)])
            if "." in self.ids:
                after, dot = tokens + [digit], tokens + [digit, self.ids["."]]
                self._add(f"{record}|2", after, max_tokens=1, logprobs=TOP_LOGPROBS)
                self._add(f"{record}|2d", after, max_tokens=1, logprob_token_ids=every)
                self._add(f"{record}|3", dot, max_tokens=1, logprobs=TOP_LOGPROBS)
                self._add(f"{record}|3d", dot, max_tokens=1, logprob_token_ids=every)
            return None
        if not all(p in st["got"] for p in (("1", "1d", "2", "2d", "3", "3d") if "." in self.ids else ("1", "1d"))):
            return None
        got = st["got"]
        content = [self._position(got["1"], got["1d"])]
        text = self.tok.decode([st["digit"]])
        if "." in self.ids:
            content.append(self._position(got["2"], got["2d"]))
            if got["2"].token_ids[0] == self.ids["."]:
                content.append(self._position(got["3"], got["3d"]))
                dec = got["3"].token_ids[0]
                if dec in {self.ids[c] for c in "0123456789" if c in self.ids}:
                    text += "." + self.tok.decode([dec])
        return self._reply(record, text, len(content), content)

    def _position(self, top, listed) -> dict:
        """One position as the transformers judge writes it: the chosen token, the top 20 by
        rank, then every digit and "."."""
        chosen = top.token_ids[0]
        lp = {**listed.logprobs[0], **top.logprobs[0]}
        ranked = sorted((t for t in top.logprobs[0] if t != chosen), key=lambda t: top.logprobs[0][t].rank)
        order = dict.fromkeys([chosen, *ranked[:TOP_LOGPROBS], *self.ids.values()])
        # vLLM lists a token it masks (eos here) at -inf: probability 0, and no JSON number.
        return {"token": self.tok.decode([chosen]), "logprob": float(lp[chosen].logprob),
                "top_logprobs": [{"token": self.tok.decode([t]), "logprob": float(lp[t].logprob)} for t in order
                                 if t == chosen or math.isfinite(lp[t].logprob)]}

    def _reply(self, record: str, text: str, completion_tokens: int, logprobs=None) -> dict:
        st = self.state.pop(record)
        return {"id": record, "text": text, "prompt_tokens": len(st["tokens"]),
                "completion_tokens": completion_tokens, "logprobs": logprobs}


def serve() -> int:
    _die_with_parent()
    out = _protocol_stdout()
    inbox: queue.Queue = queue.Queue()

    def read() -> None:
        for line in sys.stdin:
            if line.strip():
                inbox.put(json.loads(line))
        inbox.put(None)  # end of input: the job closed it, or is gone

    t0 = time.perf_counter()
    from alpagasus.evaluation.vllm_engine import probe

    facts = probe()  # the job's probe, here: one interpreter start, not two
    out.write(json.dumps(facts) + "\n")
    if facts.get("missing"):
        return 1
    setup = json.loads(sys.stdin.readline())
    setup["tensor_parallel_size"] = max(1, int(facts["gpus"]))
    try:
        scorer = _Scorer(setup)
    except Exception as exc:  # noqa: BLE001 - the job reports why, in one line
        out.write(json.dumps({"fatal": f"{type(exc).__name__}: {exc}"}) + "\n")
        return 1
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=read, daemon=True).start()
    out.write(json.dumps({"ready": True, "startup_s": round(time.perf_counter() - t0, 2)}) + "\n")
    engine = scorer.engine
    while True:
        block = not engine.has_unfinished_requests()
        while True:
            try:
                msg = inbox.get(block=block)
            except queue.Empty:
                break
            if msg is None:
                return 0
            block = False
            try:
                scorer.start(msg)
            except Exception as exc:  # noqa: BLE001 - this request's fault (e.g. too long): it alone fails
                scorer.state.pop(msg["id"], None)
                out.write(json.dumps({"id": msg["id"], "error": f"{type(exc).__name__}: {exc}"}) + "\n")
        for output in engine.step():
            if output.finished:
                reply = scorer.finished(output)
                if reply is not None:
                    out.write(json.dumps(reply) + "\n")
