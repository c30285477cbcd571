"""Token and dollar estimates before a run, and the ledger of what it actually spent."""

from __future__ import annotations

import math

from alpagasus.core.config import defaults


def estimate_tokens(text: str) -> int:
    """About 4 characters a token for English with OpenAI's tokenizers; no tokenizer download."""
    return math.ceil(len(text) / 4)


def message_tokens(messages: list[dict]) -> int:
    # Each chat message carries a few tokens of framing.
    return sum(estimate_tokens(m.get("content") or "") + 4 for m in messages) + 3


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


def online_and_batch(judge_cfg: dict, pending_messages: list[list[dict]], expected_output_tokens: int) -> dict:
    """The same requests priced online and through the Batch API, for a judge of either backend."""
    online = {**judge_cfg, "backend": "openai"}
    batch = {**judge_cfg, "backend": BATCH_BACKEND}
    out = {}
    for name, cfg in (("online", online), ("batch", batch)):
        e = estimate(cfg, pending_messages, expected_output_tokens)
        out[name] = {"usd_expected": e["usd_expected"], "usd_at_most": e["usd_at_most"]}
    out["batch"]["discount"] = price_factor(batch)
    return out


def estimate(judge_cfg: dict, pending_messages: list[list[dict]], expected_output_tokens: int) -> dict:
    """What the pending requests will cost: expected, and at most (every reply at max_tokens)."""
    n = len(pending_messages)
    tin = sum(message_tokens(m) for m in pending_messages)
    tout = n * expected_output_tokens
    tmax = n * judge_cfg.get("max_tokens", expected_output_tokens)
    return {
        "requests": n,
        "input_tokens": tin,
        "output_tokens_expected": tout,
        "usd_expected": round(usd(judge_cfg, tin, tout), 4),
        "usd_at_most": round(usd(judge_cfg, tin, tmax), 4),
    }
