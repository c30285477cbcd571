"""Labels, Alpaca's templates, and packing that computes exactly what examples compute alone."""
import random

import pytest
import torch

from alpagasus.training.packing import (IGNORE_INDEX, Example, collate, ffd_pack, per_example_losses, plan_step, reference_useful_fraction, step_token_counts, tokenize_records, validate_records)
from alpagasus.data.template import ALPACA_PROMPT_INPUT, ALPACA_PROMPT_NO_INPUT
from alpagasus.training.tokenizer import build_char_tokenizer, char_tokenizer_for_records

RECORDS = [
    {"instruction": "Give three tips for staying healthy.", "input": "", "output": "Eat well."},
    {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
]


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer_for_records(RECORDS)


def test_prompt_tokens_are_ignored_and_response_plus_eos_are_learned(tok):
    examples, stats = tokenize_records(RECORDS, tok, max_length=512)
    assert stats["n_examples"] == 2 and stats["n_truncated"] == 0
    for rec, ex in zip(RECORDS, examples):
        template = ALPACA_PROMPT_INPUT if rec["input"] else ALPACA_PROMPT_NO_INPUT
        prompt = template.format(**rec)
        n_prompt = len(tok(prompt)["input_ids"])  # bos + one token per character
        assert n_prompt == 1 + len(prompt)
        assert all(x == IGNORE_INDEX for x in ex.labels[:n_prompt])
        assert list(ex.labels[n_prompt:]) == list(ex.input_ids[n_prompt:])
        assert ex.input_ids[-1] == tok.eos_token_id and ex.labels[-1] == tok.eos_token_id
        # Alpaca's templates to the character, the output right after "### Response:".
        assert tok.decode(ex.input_ids, skip_special_tokens=True) == prompt + rec["output"]
        assert ex.n_supervised == len(rec["output"]) + 1


def test_truncation_at_max_length_and_prompt_only_examples_dropped(tok):
    long = {"instruction": "Say it.", "input": "", "output": "x" * 300}
    # Prompts: "Say it." 147 tokens with bos; RECORDS[1] (input template) 237 > 200.
    examples, stats = tokenize_records([long, RECORDS[1]], tok, max_length=200)
    assert stats["n_truncated"] == 2 and stats["n_dropped_no_target"] == 1
    assert len(examples) == 1 and len(examples[0]) == 200 and examples[0].n_supervised == 200 - 147
    assert examples[0].input_ids[-1] != tok.eos_token_id  # cut before eos, as Alpaca does


def test_records_errors_name_record_and_field():
    with pytest.raises(ValueError, match=r"data.json: record 1: field 'output': missing"):
        validate_records([RECORDS[0], {"instruction": "x", "input": ""}], "data.json")
    with pytest.raises(ValueError, match=r"record 0: field 'input': expected a string, got int"):
        validate_records([{"instruction": "x", "input": 3, "output": ""}], "d")


def test_char_tokenizer_roundtrip_and_reload(tmp_path):
    from transformers import AutoTokenizer

    tok = build_char_tokenizer(["héllo"])
    text = "Sort it.\nIn: cab\nOut:  abc é"
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id and len(ids) == len(text) + 1
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(text)["input_ids"] == ids
    assert again.decode(ids + [again.eos_token_id], skip_special_tokens=True) == text


def test_ffd_pack_places_every_item_once_within_capacity():
    rng = random.Random(0)
    lengths = [rng.randint(1, 100) for _ in range(300)]
    rows = ffd_pack(lengths, 128)
    assert sorted(i for r in rows for i in r) == list(range(300))
    assert all(sum(lengths[i] for i in r) <= 128 for r in rows)
    assert len(rows) <= sum(lengths) / 128 * 1.25 + 1


@pytest.mark.parametrize("world", [1, 2, 4])
@pytest.mark.parametrize("packing", [True, False])
def test_plan_uses_each_example_once_and_the_same_micro_count_on_every_rank(world, packing):
    rng = random.Random(world)
    lengths = [rng.randint(20, 512) for _ in range(1000)]
    ids = rng.sample(range(1000), 128)
    plan = plan_step(ids, lengths, world_size=world, packing=packing, row_length=512, rows_per_micro=4)
    assert len(plan) == world
    assert len({len(rank) for rank in plan}) == 1  # FSDP needs equal collectives per rank
    placed = [i for rank in plan for micro in rank for row in micro for i in row]
    assert sorted(placed) == sorted(ids)
    for rank in plan:
        for micro in rank:
            assert len(micro) <= 4
            assert all(sum(lengths[i] for i in row) <= 512 for row in micro)
    if not packing:  # Alpaca's reference: one example per row, 128 / (4 x world) micro-batches
        assert len(plan[0]) == 128 // (4 * world)


def test_packing_beats_the_reference_collator_on_useful_tokens():
    rng = random.Random(1)
    # Long-tailed lengths like Alpaca's (many short, a few up to 512).
    lengths = [min(512, int(rng.lognormvariate(5.0, 0.6))) for _ in range(4096)]
    ref = reference_useful_fraction(lengths, batch_size=4)
    tokens = slots = 0
    order = list(range(len(lengths)))
    rng.shuffle(order)
    for s in range(0, len(order), 128):
        plan = plan_step(order[s:s + 128], lengths, world_size=4, packing=True, row_length=512, rows_per_micro=4)
        c = step_token_counts(plan, lengths)
        tokens += c["tokens"]
        slots += c["slots"]
    assert tokens / slots >= 0.95 > ref


def _tiny_model(attn="sdpa", vocab=40):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, max_position_embeddings=256, pad_token_id=0)
    cfg._attn_implementation = attn
    return LlamaForCausalLM(cfg).eval()


def _random_examples(n, seed=0, vocab=40):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.randint(4, 30)
        ids = [1] + [rng.randrange(3, vocab) for _ in range(length - 1)]
        n_prompt = rng.randint(1, length - 1)
        out.append(Example(tuple(ids), tuple([IGNORE_INDEX] * n_prompt + ids[n_prompt:])))
    return out


@pytest.mark.parametrize("attn, layout, mask", [("sdpa", "rows", "bool"), ("eager", "rows", "additive"),
                                                ("sdpa", "flat", None)])
def test_packed_batch_gives_each_example_its_own_loss(attn, layout, mask):
    """No attention crosses examples: packed losses equal the examples run one by one."""
    model = _tiny_model(attn)
    examples = _random_examples(12)
    lengths = [len(e) for e in examples]
    rows = [[examples[i] for i in row] for row in ffd_pack(lengths, 64)]
    assert any(len(r) > 1 for r in rows)
    batch = collate(rows, pad_id=0, layout=layout, mask=mask)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                       attention_mask=batch.get("attention_mask"), use_cache=False).logits
        packed = per_example_losses(logits, batch["targets"], batch["segment_ids"])
        alone = []
        for ex in [e for row in rows for e in row]:
            one = collate([[ex]], pad_id=0, layout="rows", mask=None)
            lg = model(input_ids=one["input_ids"], use_cache=False).logits
            alone.append(per_example_losses(lg, one["targets"], one["segment_ids"])[0])
    assert packed == pytest.approx(alone, rel=1e-4, abs=1e-5)


def test_cross_example_attention_would_change_the_losses():
    """The check above has teeth: without the block mask, packed losses differ."""
    model = _tiny_model()
    examples = _random_examples(6, seed=3)
    rows = [examples[:3], examples[3:]]
    batch = collate(rows, pad_id=0, layout="rows", mask="bool")
    with torch.no_grad():
        masked = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                       attention_mask=batch["attention_mask"], use_cache=False).logits
        plain = model(input_ids=batch["input_ids"], use_cache=False).logits
    a = per_example_losses(masked, batch["targets"], batch["segment_ids"])
    b = per_example_losses(plain, batch["targets"], batch["segment_ids"])
    assert a[0] == pytest.approx(b[0])  # the first example of a row sees nothing before it
    assert max(abs(x - y) for x, y in zip(a[1:], b[1:])) > 1e-3


def test_targets_never_cross_an_example_boundary():
    examples = _random_examples(5, seed=4)
    batch = collate([examples], pad_id=0, layout="rows", mask="bool")
    seg, tgt = batch["segment_ids"][0], batch["targets"][0]
    for j in range(len(seg) - 1):
        if seg[j] != seg[j + 1]:
            assert tgt[j] == IGNORE_INDEX  # an example's last position predicts nothing
    assert int((tgt != IGNORE_INDEX).sum()) == sum(e.n_supervised for e in examples)
