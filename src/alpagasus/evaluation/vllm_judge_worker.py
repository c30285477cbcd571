"""A judge's vLLM engine (``backend: vllm``; the job's side is judging/judges/vllm_judge.py):
``python -m alpagasus.evaluation.vllm_judge_worker`` in the vLLM interpreter, one process for
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
- ``logprobs``: one request of at most 3 tokens. The first is the most probable score digit 0-5
  (a logits processor, score_reader, masks every other token at that position only; the
  log-probabilities vLLM returns are the model's raw ones, from before any processor), then
  greedy: what follows the digit, and after a "." the decimal. Each position lists the chosen
  token, the top 20 and every digit and "." (which score_reader notes from the logits), in the
  OpenAI ``logprobs.content`` shape. Not vLLM's ``logprob_token_ids`` for the digits: in vLLM
  0.32 a batch holding such a request returns those ids for every request in it (tried: the
  top-20 lists came back with eos at -inf).

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


# SamplingParams.extra_args of a logprobs-mode request: its record id, and the score tokens.
READ_SCORE = "alpagasus_read_score"
# record id -> position -> {token id: log-probability} of every digit and ".", as the logits
# processor saw them (the engine runs in this process: VLLM_ENABLE_V1_MULTIPROCESSING=0).
SEEN: dict[str, dict[int, dict[int, float]]] = {}


def score_reader():
    """vLLM logits processor for the requests whose extra_args hold READ_SCORE: their first
    token is chosen among the score digits 0-5 only (later tokens are free), and at each of
    their positions it notes the log-probability of every digit and "." (SEEN), which vLLM's
    top 20 may leave out. It sees the model's own logits: greedy requests with no bias or
    penalty have no processor before it. The log-probabilities vLLM returns are computed before
    any processor, so the mask changes none of them."""
    import torch
    from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

    class ScoreReader(AdapterLogitsProcessor):
        def is_argmax_invariant(self) -> bool:
            return False

        def new_req_logits_processor(self, params):
            spec = (params.extra_args or {}).get(READ_SCORE)
            if not spec:
                return None
            record, digits, listed = spec["record"], spec["digits"], torch.tensor(spec["listed"])

            def read(output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
                at = len(output_ids)
                lp = logits.float().log_softmax(-1)[listed.to(logits.device)].tolist()
                SEEN.setdefault(record, {})[at] = dict(zip(spec["listed"], lp))
                if at:
                    return logits
                masked = torch.full_like(logits, float("-inf"))
                masked[digits] = logits[digits]
                return masked

            return read

    return ScoreReader


class _Scorer:
    def __init__(self, setup: dict):
        from alpagasus.evaluation.vllm_engine import engine_args, engine_environment

        engine_environment(setup)
        # The engine in this process on a GPU too: score_reader hands what it notes over in
        # memory (SEEN), which an engine process of its own would keep to itself.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        if setup["score_mode"] == "logprobs" and setup["tensor_parallel_size"] > 1:
            raise ValueError(f"score_mode: logprobs runs on one GPU, and this job sees "
                             f"{setup['tensor_parallel_size']} (its tensor-parallel workers would run "
                             f"score_reader in processes of their own); give the judge resources.gpus: 1")
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
        self.llm = LLM(**engine_args(setup), logits_processors=[score_reader()])
        self.engine = self.llm.llm_engine
        self.state: dict[str, list[int]] = {}  # record id -> its prompt's tokens

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
        self.state[msg["id"]] = tokens
        if self.mode == "text":
            self._add(msg["id"], tokens, max_tokens=self.max_new_tokens, stop_token_ids=self.eos)
        else:  # the most probable score digit, what follows it, and the decimal after a "."
            spec = {"record": msg["id"], "digits": [self.ids[str(d)] for d in range(6)],
                    "listed": list(self.ids.values())}
            self._add(msg["id"], tokens, max_tokens=3 if "." in self.ids else 1, logprobs=TOP_LOGPROBS,
                      extra_args={READ_SCORE: spec})

    def finished(self, output) -> dict:
        """A finished request's reply."""
        gen = output.outputs[0]
        if self.mode == "text":
            return self._reply(output.request_id, self.tok.decode(gen.token_ids, skip_special_tokens=True),
                               len(gen.token_ids))
        ids = list(gen.token_ids)
        # The positions the transformers judge reads: the digit, what follows it, and the one
        # after that only where it followed a "." (the decimal).
        keep = 3 if len(ids) >= 3 and ids[1] == self.ids.get(".") else min(2, len(ids))
        seen = SEEN.pop(output.request_id, None)
        if seen is None:  # never silently fewer digits than the transformers judge lists
            raise RuntimeError("score_reader noted nothing for this request (did vLLM run it in another process?)")
        content = [self._position(ids[i], gen.logprobs[i], seen.get(i, {})) for i in range(keep)]
        text = self.tok.decode([ids[0]])
        if keep == 3 and ids[2] in {self.ids[c] for c in "0123456789" if c in self.ids}:
            text += "." + self.tok.decode([ids[2]])
        return self._reply(output.request_id, text, len(content), content)

    def _position(self, chosen: int, logprobs: dict, seen: dict[int, float]) -> dict:
        """One position as the transformers judge writes it, in the OpenAI shape: the chosen
        token, the top 20 by rank, then every digit and "." (noted by score_reader). A token
        vLLM lists at -inf (probability 0) is left out: it is no JSON number."""
        values = {**seen, **{t: lp.logprob for t, lp in logprobs.items()}}
        ranked = sorted((t for t in logprobs if t != chosen), key=lambda t: logprobs[t].rank)[:TOP_LOGPROBS]
        order = dict.fromkeys([chosen, *ranked, *self.ids.values()])
        return {"token": self.tok.decode([chosen]), "logprob": float(values[chosen]),
                "top_logprobs": [{"token": self.tok.decode([t]), "logprob": float(values[t])} for t in order
                                 if t in values and (t == chosen or math.isfinite(values[t]))]}

    def _reply(self, record: str, text: str, completion_tokens: int, logprobs=None) -> dict:
        return {"id": record, "text": text, "prompt_tokens": len(self.state.pop(record)),
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
                try:
                    reply = scorer.finished(output)
                except RuntimeError as exc:
                    out.write(json.dumps({"fatal": str(exc)}) + "\n")
                    return 1
                out.write(json.dumps(reply) + "\n")


if __name__ == "__main__":  # a spawned vLLM process re-imports this module as not __main__
    sys.exit(serve())
