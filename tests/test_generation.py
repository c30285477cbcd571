"""Generation: greedy, batched with left padding, the paper's template per item, one line per item.
(The miniature through the real DAG is tests/test_miniature.py.)"""
from pathlib import Path

import pytest
import torch

from alpagasus.evaluation.generation import generate, generate_test_set, load_model
from alpagasus.core.io import read_jsonl, write_jsonl
from alpagasus.data.miniature import MINIATURE_TEMPLATE, make_records, make_test_items
from alpagasus.data.template import alpaca_prompt
from alpagasus.training.tokenizer import char_tokenizer_for_records


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A random tiny LLaMA with peaked logits (so that argmax ties cannot flip between runs)."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    tok = char_tokenizer_for_records(make_records(50, 0.0), MINIATURE_TEMPLATE)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, initializer_range=0.5, max_position_embeddings=2048,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                     pad_token_id=tok.pad_token_id, do_sample=False).save_pretrained(out)
    return out


def _items(n=24):
    return [{**it, "question": f"{it['instruction']} Input: {it['input']}"}
            for it in make_test_items(n, seed=5)]


def test_batched_left_padded_greedy_equals_one_at_a_time(checkpoint):
    model, tok = load_model(checkpoint)
    assert tok.padding_side == "left"
    prompts = [alpaca_prompt(it["instruction"], it["input"], MINIATURE_TEMPLATE) for it in _items(24)]
    batched = generate(model, tok, prompts, max_new_tokens=12, batch_size=8, progress=False)
    single = generate(model, tok, prompts, max_new_tokens=12, batch_size=1, progress=False)
    again = generate(model, tok, prompts, max_new_tokens=12, batch_size=8, progress=False)
    assert [b["answer"] for b in batched] == [s["answer"] for s in single] == [a["answer"] for a in again]
    assert all(0 < b["n_new_tokens"] <= 12 for b in batched)
    assert any(b["answer"] for b in batched)


def test_generation_stops_at_eos(checkpoint):
    model, tok = load_model(checkpoint)
    # Force eos as the most likely next token everywhere: every answer must be empty.
    bias = torch.zeros(len(tok))
    bias[tok.eos_token_id] = 100.0
    handle = model.lm_head.register_forward_hook(lambda m, i, o: o + bias)
    try:
        out = generate(model, tok, ["abc", "a longer prompt"], max_new_tokens=50, batch_size=2, progress=False)
    finally:
        handle.remove()
    assert [o["answer"] for o in out] == ["", ""]
    assert all(o["stopped_at_eos"] and o["n_new_tokens"] == 1 for o in out)


def test_test_set_file_gets_one_line_per_item_in_order(checkpoint, tmp_path, monkeypatch):
    items = _items(10) + [{"id": "plain", "instruction": "Tell a joke.", "input": "", "question": "Tell a joke."}]
    test_file = tmp_path / "mini.jsonl"
    write_jsonl(test_file, items)
    seen = {}
    import alpagasus.evaluation.generation as gen

    real = gen.generate

    def spy(model, tok, prompts, *a, **k):
        seen["prompts"] = list(prompts)
        return real(model, tok, prompts, *a, **k)

    monkeypatch.setattr(gen, "generate", spy)
    out = tmp_path / "gen" / "tiny-x" / "mini.jsonl"
    summary = generate_test_set(checkpoint, test_file, out, testset="mini", model_name="tiny-x",
                                template=None, max_new_tokens=5, batch_size=4, progress=False)
    rows = read_jsonl(out)
    assert summary["items"] == len(rows) == len(items)
    assert [r["id"] for r in rows] == [it["id"] for it in items]
    for r, it in zip(rows, items):
        assert r["testset"] == "mini" and r["model"] == "tiny-x" and r["question"] == it["question"]
        assert r["decoding"]["strategy"] == "greedy" and r["decoding"]["max_new_tokens"] == 5
        assert isinstance(r["answer"], str) and r.get("reference") == it.get("reference")
    # Alpaca's templates, chosen per item: the input template when there is an input.
    assert seen["prompts"][0] == alpaca_prompt(items[0]["instruction"], items[0]["input"])
    assert "### Input:" in seen["prompts"][0]
    assert seen["prompts"][-1].endswith("### Instruction:\nTell a joke.\n\n### Response:")
    assert "### Input:" not in seen["prompts"][-1]


def test_a_test_item_without_a_field_is_named(checkpoint, tmp_path):
    test_file = tmp_path / "t.jsonl"
    write_jsonl(test_file, [{"id": "a", "instruction": "x", "input": ""}])
    with pytest.raises(ValueError, match=r"t.jsonl: item 0 \(id 'a'\) has no field 'question'"):
        generate_test_set(checkpoint, test_file, tmp_path / "o.jsonl", testset="t", model_name="m")
    assert not (tmp_path / "o.jsonl").exists()


KILL_AFTER_TWO_BATCHES = """
import os, signal, sys
import alpagasus.evaluation.generation as gen
real_add, calls = gen.PartialWriter.add, []
def add(self, pairs):
    real_add(self, pairs)
    calls.append(1)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # as a time limit or an OOM killer would
gen.PartialWriter.add = add
gen.generate_test_set(sys.argv[1], sys.argv[2], sys.argv[3], testset="mini", model_name="tiny-x",
                      template=None, max_new_tokens=8, batch_size=3, progress=False)
"""


@pytest.mark.slow
def test_a_killed_generation_resumes_with_only_the_missing_items(checkpoint, tmp_path):
    import os
    import subprocess
    import sys

    from alpagasus.evaluation.generation import partial_path

    items = _items(14)
    test_file = tmp_path / "mini.jsonl"
    write_jsonl(test_file, items)
    out = tmp_path / "gen" / "mini.jsonl"
    proc = subprocess.run([sys.executable, "-c", KILL_AFTER_TWO_BATCHES, str(checkpoint), str(test_file), str(out)],
                          capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")})
    assert proc.returncode == -9, proc.stderr
    assert not out.exists()
    saved = partial_path(out)
    assert len(saved.read_text().splitlines()) == 1 + 6  # header + two batches of 3
    with open(saved, "a") as fh:
        fh.write('{"id": "torn", "resu')  # the kill landed mid-write

    summary = generate_test_set(checkpoint, test_file, out, testset="mini", model_name="tiny-x",
                                template=None, max_new_tokens=8, batch_size=3, progress=False)
    assert (summary["resumed"], summary["generated"]) == (6, 8)
    assert not saved.exists()
    fresh = tmp_path / "fresh.jsonl"
    again = generate_test_set(checkpoint, test_file, fresh, testset="mini", model_name="tiny-x",
                              template=None, max_new_tokens=8, batch_size=5, progress=False)
    assert (again["resumed"], again["generated"]) == (0, 14)
    assert read_jsonl(out) == [{**r, "decoding": {**r["decoding"], "batch_size": 3}} for r in read_jsonl(fresh)]


def test_saved_answers_for_other_settings_are_not_reused(checkpoint, tmp_path):
    from alpagasus.evaluation.generation import PartialWriter, generation_key, partial_path

    items = _items(5)
    test_file = tmp_path / "mini.jsonl"
    write_jsonl(test_file, items)
    out = tmp_path / "mini_out.jsonl"
    bogus = {"answer": "SAVED EARLIER", "n_new_tokens": 1, "stopped_at_eos": True}
    import transformers

    key = generation_key(checkpoint, test_file, testset="mini", model_name="tiny-x", template=None,
                         max_new_tokens=6, dtype="float32",
                         engine={"engine": "transformers", "engine_version": transformers.__version__})
    PartialWriter(partial_path(out), key, {it["id"]: bogus for it in items[:3]}).close()
    # Another max_new_tokens: the saved answers are for other settings.
    s = generate_test_set(checkpoint, test_file, out, testset="mini", model_name="tiny-x",
                          template=None, max_new_tokens=7, progress=False)
    assert s["resumed"] == 0 and all(r["answer"] != "SAVED EARLIER" for r in read_jsonl(out))
    # The same settings: they are.
    PartialWriter(partial_path(out), key, {it["id"]: bogus for it in items[:3]}).close()
    s = generate_test_set(checkpoint, test_file, out, testset="mini", model_name="tiny-x",
                          template=None, max_new_tokens=6, progress=False)
    assert s["resumed"] == 3
    assert [r["answer"] == "SAVED EARLIER" for r in read_jsonl(out)] == [True, True, True, False, False]


def test_duplicate_item_ids_are_named(checkpoint, tmp_path):
    test_file = tmp_path / "t.jsonl"
    item = {"id": "a", "instruction": "x", "input": "", "question": "x"}
    write_jsonl(test_file, [item, {**item, "id": "b"}, item])
    with pytest.raises(ValueError, match=r"t.jsonl: item 2 has id 'a', already used by item 0"):
        generate_test_set(checkpoint, test_file, tmp_path / "o.jsonl", testset="t", model_name="m")
