"""Each benchmark under bench/ runs end to end in its smallest setting, and the figures it
prints are checked against what the test measures itself, another way: the rating bench's
rates against the fake server's own clock, the generation bench's speedup against the test's
own timing of the same model, the training bench's 6N FLOPs against torch's FLOP counter, the
useful-token bench's fractions against the test's own count. (How fast a machine is stays out
of the tests: the README's figures are measured by hand.)"""
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, SMOLLM2, requires_package, shared_path

from alpagasus.data.miniature import make_records

# Each test runs a benchmark script in its own process (training, generation, a server).
pytestmark = pytest.mark.slow


def _bench(tmp: Path, script: str, *args, timeout=600) -> dict:
    out = tmp / f"{script}.json"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "bench" / script), *map(str, args), "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def _bench_module(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(REPO / "bench"))  # its `from _report import report`
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO / "bench"))
    return module


def test_train_mfu_bench_counts_the_flops_torch_counts(tmp_path):
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import LlamaConfig, LlamaForCausalLM

    # 128-token rows: each token costs a 32k-vocabulary logit row, the bulk of a tiny model's step.
    r = _bench(tmp_path, "bench_train_mfu.py", "--tiny", "--examples", 64, "--max-length", 128, "--peak-tflops", 1.0)
    assert r["steps_timed"] == 3 and r["device_count"] == 1 and r["layout"] == "rows"
    assert 0 < r["useful_token_fraction"] <= 1 and r["tokens_per_s"] > 0
    # The same shape, built here with the same vocabulary (LLaMA's tokenizer plus Alpaca's
    # [PAD]): its matmul weights are every nn.Linear's (not the input embedding).
    from transformers import AutoTokenizer

    gguf = shared_path("data", "tokenizers", "llama-spm.gguf")
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if tok.pad_token is None:
        tok.add_special_tokens({"pad_token": "[PAD]"})
    vocab = len(tok)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, **_bench_module("bench_train_mfu").MODEL_TINY))
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    # (The library counts every weight but the input embedding, so the norms' 5 x 64 weights ride
    # along with the matmuls: 0.015% here, less at scale.)
    assert r["n_parameters"] == sum(p.numel() for p in model.parameters())
    assert r["matmul_parameters"] == pytest.approx(linear, rel=1e-3)
    # torch's count of one forward + backward over T tokens: the matmuls are 6 x linear x T; the
    # bench's 6N figure divided by its token rate must be that many FLOPs per token.
    T = 64
    ids = torch.randint(0, vocab, (1, T))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids, labels=ids).loss.backward()
    by_op = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    matmul = sum(n for op, n in by_op.items() if op.split(".")[1] in ("mm", "addmm", "bmm", "matmul"))
    assert r["achieved_tflops_6n"] * 1e12 / r["tokens_per_s"] == pytest.approx(matmul / T, rel=1e-3)
    assert r["mfu_6n"] == pytest.approx(r["achieved_tflops_6n"] / 1.0)  # against the given peak
    assert r["achieved_tflops_with_attention"] > r["achieved_tflops_6n"]


def test_generation_bench_speedup_agrees_with_the_tests_own_timing(tmp_path):
    import torch

    from alpagasus.data.miniature import MINIATURE_TEMPLATE, make_test_items
    from alpagasus.data.template import alpaca_prompt
    from alpagasus.evaluation.generation import generate, load_model

    items, batch, new = 24, 8, 4
    ckpt = _bench_module("bench_generation").build_random_tiny(tmp_path / "tiny")
    r = _bench(tmp_path, "bench_generation.py", "--checkpoint", ckpt, "--items", items, "--batch-size", batch,
               "--max-new-tokens", new, "--threads", 1)
    assert r["items"] == items and r["identical_answers"] is True

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, tok = load_model(ckpt, device="cpu")
        prompts = [alpaca_prompt(it["instruction"], it["input"], MINIATURE_TEMPLATE)
                   for it in make_test_items(items, seed=1)]
        generate(model, tok, prompts[:8], new, 8, progress=False)  # warm-up, as the bench does
        seconds, answers = {}, {}
        for bs in (batch, 1):
            t0 = time.perf_counter()
            answers[bs] = generate(model, tok, prompts, new, bs, progress=False)
            seconds[bs] = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    assert r["new_tokens"] == sum(a["n_new_tokens"] for a in answers[1])  # the same answers, counted here
    mine = seconds[1] / seconds[batch]
    print(f"generation speedup: bench {r['speedup']:.2f}x, measured here {mine:.2f}x")
    assert mine > 1.3, seconds  # batching pays on this model
    # (Loose: the other xdist worker may load the machine during one measurement and not the other.)
    assert 1 / 3 < r["speedup"] / mine < 3, (r, seconds)


def test_useful_token_bench_counts_every_token_once_and_alpacas_collator_as_measured_here(tmp_path):
    import numpy as np
    import torch
    from transformers import AutoTokenizer

    from alpagasus.data.template import alpaca_prompt

    gguf = shared_path("data", "tokenizers", "llama-spm.gguf")
    alpaca = json.loads(shared_path("data", "alpaca", "alpaca_data.json").read_text())[:1500]
    data = tmp_path / "small.json"
    data.write_text(json.dumps(alpaca))
    r = _bench(tmp_path, "bench_useful_tokens.py", "--shared", REPO.parent / "shared", "--data", data)

    # Each example's length, tokenised here: prompt + output in one piece, eos appended, cut at 512.
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    texts = [alpaca_prompt(x["instruction"], x["input"], None) + x["output"] for x in alpaca]
    lengths = [min(len(ids) + 1, 512) for ids in tok(texts, add_special_tokens=True)["input_ids"]]
    # Every layout computes over the same real tokens, once an epoch: useful x slots = their sum.
    for key, d in r["detail"].items():
        assert d["useful_token_fraction"] * d["token_slots_per_epoch"] == pytest.approx(sum(lengths), abs=0.5), key
    assert r["detail"]["packed_world4"]["useful_token_fraction"] > r["detail"]["padded_world4"]["useful_token_fraction"]
    # Alpaca's collator (random batches of 4 padded to the longest, as its pad_sequence does),
    # run here over 20 orders of our own: the bench's one order is within 3% of their mean.
    rng = np.random.default_rng(7)
    fractions = []
    for _ in range(20):
        order = rng.permutation(len(lengths))
        useful = slots = 0
        for s in range(0, len(order), 4):
            batch = [torch.ones(lengths[i]) for i in order[s:s + 4]]
            padded = torch.nn.utils.rnn.pad_sequence(batch, batch_first=True)
            useful, slots = useful + int(padded.sum()), slots + padded.numel()
        fractions.append(useful / slots)
    assert r["alpaca_collator_useful_fraction"] == pytest.approx(np.mean(fractions), rel=0.03)
    assert r["ratio_ours_over_alpaca"] == pytest.approx(r["ours_useful_fraction"] / np.mean(fractions), rel=0.03)


def test_rating_bench_rates_agree_with_the_servers_own_clock(tmp_path):
    data = tmp_path / "records.json"
    data.write_text(json.dumps(make_records(300, 0.2, seed=4)))
    log = tmp_path / "server.jsonl"
    latency_ms, seq = 20, 40
    r = _bench(tmp_path, "bench_rating.py", "--records", data, "--latency-ms", latency_ms, "--rpm", 6000,
               "--sequential-sample", seq, "--server-log", log)
    assert r["records"] == 300 and r["requests_sent_incl_retries"] >= 300
    entries = [json.loads(line) for line in log.read_text().splitlines()]

    def server_rate(model):
        """Replies a second from the first arrival to the last reply, by the server's clock."""
        mine = [e for e in entries if e["model"] == model and e["status"] == "ok"]
        return len(mine), len(mine) / (max(e["t_done"] for e in mine) - min(e["t"] for e in mine))

    n_seq, seq_rate = server_rate("bench-seq")
    n_pipe, pipe_rate = server_rate("bench")
    assert n_seq == seq and n_pipe == 300  # each record paid once
    # One request at a time cannot beat 1/latency. The bench's clock also runs while the client
    # starts and before the first request arrives, so it reads at most what the server saw,
    # and not far below it.
    assert seq_rate < 1000 / latency_ms
    assert 0.4 * seq_rate < r["sequential_req_per_s"] <= 1.02 * seq_rate
    assert 0.4 * pipe_rate < r["pipeline_req_per_s"] <= 1.02 * pipe_rate
    assert r["ratio_vs_sequential"] == pytest.approx(pipe_rate / seq_rate, rel=0.5)
    assert r["ratio_vs_sequential"] > 2  # concurrency pays at 20 ms latency


def test_scale_bench_rerun_sends_nothing_and_its_store_figures_hold(tmp_path):
    """The scale bench at 600 records and 3,000 judgements: the cached rerun sends nothing by the
    server's own log, the selection keeps exactly the records whose reply was 4.5, and the
    store comparison counted and priced every judgement it appended, in both stores."""
    from alpagasus.core.io import read_jsonl
    from alpagasus.data import load_records
    from alpagasus.judging.cache import JudgementCache

    work = tmp_path / "work"
    r = _bench(tmp_path, "bench_scale.py", "--records", 600, "--store-n", 3000, "--lookups", 1000,
               "--work", work)
    stages = r["stages"]
    assert r["records"] == 600 and set(stages) == {"data", "fill_store", "rate_cached_rerun", "select"}
    assert all(st["s"] > 0 and st["peak_rss_mb"] > 10 for st in stages.values())
    assert stages["rate_cached_rerun"]["requests_sent"] == 0 == stages["rate_cached_rerun"]["ledger_requests_sent"]
    assert not (work / "rate_cached_rerun.server.jsonl").read_text()  # the server saw nothing
    with JudgementCache.in_dir(work / "cache") as cache:
        assert len(cache) == 600
    scores = read_jsonl(work / "rate_cached_rerun.scores.jsonl")
    assert [row["score"] for row in scores] == [4.5 if i % 3 == 0 else 3.0 for i in range(600)]
    records = load_records(work / "alpaca_52k.json")
    kept = load_records(work / "filtered.json")
    assert stages["select"]["kept"] == len(kept) == 200 and kept == records[::3]
    store = r["store"]
    for kind in ("jsonl", "sqlite"):
        assert store[kind]["lookup"]["spent_usd"] == pytest.approx(3000 * 0.000203, abs=1e-4)
        assert store[kind]["append"]["appends_per_s"] > 0 and store[kind]["lookup"]["lookups_per_s"] > 0
    assert store["migrate_jsonl_to_sqlite"]["judgements"] == 3000
    ratio = store["ratio_sqlite_to_jsonl"]
    assert ratio["appends_per_s"] == pytest.approx(
        store["sqlite"]["append"]["appends_per_s"] / store["jsonl"]["append"]["appends_per_s"], rel=0.01)


@pytest.mark.slow
def test_local_judge_bench_on_smollm2(tmp_path, smollm2_converted):
    requires_package(*SMOLLM2)
    data = shared_path("data", "alpaca", "alpaca_data.json")
    t0 = time.perf_counter()
    r = _bench(tmp_path, "bench_local_judge.py", "--data", data, "--records", 4, "--batch-size", 2,
               "--max-new-tokens", 2, "--threads", 1, "--padding-records", 40, timeout=1200)
    wall = time.perf_counter() - t0
    # Both modes' seconds were spent inside this process's lifetime, measured here.
    assert r["logprobs"]["seconds"] + r["text"]["seconds"] < wall
    assert 0 < r["text"]["completion_tokens"] <= 4 * 2  # 4 records, at most 2 new tokens each
    assert 0 <= r["padding"]["fraction_length_sorted"] <= r["padding"]["fraction_in_data_order"] < 1
