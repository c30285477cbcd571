"""Token and dollar estimates before a run, and the ledger of what it actually spent."""

from __future__ import annotations

import math


def estimate_tokens(text: str) -> int:
    """About 4 characters a token for English with OpenAI's tokenizers; no tokenizer download."""
    return math.ceil(len(text) / 4)


def message_tokens(messages: list[dict]) -> int:
    # Each chat message carries a few tokens of framing.
    return sum(estimate_tokens(m.get("content") or "") + 4 for m in messages) + 3


def usd(judge_cfg: dict, prompt_tokens: float, completion_tokens: float) -> float:
    return (prompt_tokens * judge_cfg.get("usd_per_1m_input_tokens", 0.0)
            + completion_tokens * judge_cfg.get("usd_per_1m_output_tokens", 0.0)) / 1e6


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
