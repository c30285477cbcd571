"""What a first run shows: the memory estimate beside the grant, the learning rate each step
used (step 1 trains), the progress bar's loss; and the identity lists both sides read."""
import json
import logging
import math
from pathlib import Path

import pytest
import torch

from alpagasus.core import identity
from alpagasus.training import memory
from alpagasus.training.schedule import make_scheduler


def _lrs(name: str, warmup: int, total: int, lr: float = 1.0) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = make_scheduler(name, opt, warmup, total)
    used = []
    for _ in range(total):
        used.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    return used


def test_a_short_runs_first_step_trains_and_the_warmup_reaches_the_full_rate():
    used = _lrs("cosine", warmup=1, total=10)
    assert used[0] == pytest.approx(1.0)  # one warmup step: HF would have spent it at lr 0
    assert all(b < a for a, b in zip(used, used[1:])) and used[-1] > 0
    used = _lrs("cosine", warmup=3, total=10)
    assert used[:3] == pytest.approx([1 / 3, 2 / 3, 1.0]) and min(used) > 0
    assert _lrs("linear", warmup=0, total=4) == pytest.approx([1.0, 0.75, 0.5, 0.25])  # no warmup: HF's own


def test_training_estimate_follows_the_documented_formula():
    from transformers import LlamaConfig

    # SmolLM2-135M's shape: the model measured at 4.3-6.1 GB RSS in training on CPU (fp32).
    cfg = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                      num_key_value_heads=3, vocab_size=49152)
    n = 134_515_008
    est = memory.training_estimate(config=cfg, n_parameters=n, n_trainable=n, weights="fp32", compute_bytes=4,
                                   rows=4, row_length=512, gradient_checkpointing=False, attn_implementation="sdpa")
    mb = 2**20
    assert est["weights_mb"] == pytest.approx(n * 4 / mb, abs=0.1)
    assert est["optimizer_mb"] == pytest.approx(n * 8 / mb, abs=0.1)
    assert est["activations_mb"] == pytest.approx(30 * 34 * 576 * 2048 * 2 / mb, abs=0.1)
    assert est["logits_mb"] == pytest.approx(3 * 2048 * 49152 * 4 / mb, abs=0.1)
    assert 4300 < est["total_mb"] < 7000  # above the 4 GB that was guessed, near what was measured
    ckpt = memory.training_estimate(config=cfg, n_parameters=n, n_trainable=n, weights="fp32", compute_bytes=4,
                                    rows=4, row_length=512, gradient_checkpointing=True, attn_implementation="sdpa")
    assert ckpt["activations_mb"] < est["activations_mb"] / 5
    sharded = memory.training_estimate(config=cfg, n_parameters=n, n_trainable=n, weights="fp32", compute_bytes=4,
                                       rows=4, row_length=512, gradient_checkpointing=False,
                                       attn_implementation="sdpa", shards=4)
    assert sharded["optimizer_mb"] == pytest.approx(est["optimizer_mb"] / 4, abs=0.1)


def test_a_grant_below_the_estimate_is_a_warning_and_one_above_is_not(caplog):
    est = {"weights_mb": 900.0, "overhead_mb": 500.0, "total_mb": 1400.0}
    with caplog.at_level(logging.INFO, logger="alpagasus.training.memory"):
        rec = memory.check(est, "train x-tiny", 4000, processes=4)
    assert rec["needed_mb"] == 5600 and rec["granted_mb"] == 4000
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "granted mem_mb 4000 is below the estimate of 5600 MB" in warning.getMessage()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="alpagasus.training.memory"):
        memory.check(est, "train x-tiny", 8000)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "memory estimate 1400 MB" in caplog.text and "against mem_mb 8000" in caplog.text


def test_a_training_run_logs_its_estimate_the_rate_each_step_used_and_its_current_loss(tmp_path, caplog, capsys):
    from test_training import make_spec

    from alpagasus.data.miniature import make_records
    from alpagasus.training import train

    data = tmp_path / "records.json"
    data.write_text(json.dumps(make_records(200, 0.0, seed=3)))
    spec = make_spec(tmp_path, "short-tiny", data, max_steps=10, warmup_ratio=0.1)
    spec.mem_mb, spec.progress = 1, True
    with caplog.at_level(logging.INFO):
        log = train(spec)
    assert "granted mem_mb 1 is below the estimate" in caplog.text
    assert log["memory_estimate"]["granted_mb"] == 1 and log["memory_estimate"]["needed_mb"] > 1
    lrs = [s["lr"] for s in log["steps"]]
    assert log["warmup_steps"] == 1 and lrs[0] == pytest.approx(3e-3)  # step 1 trains at the full rate
    assert lrs == pytest.approx(_lrs("cosine", 1, 10, lr=3e-3))
    bar = capsys.readouterr().err
    assert f"loss={log['steps'][-1]['loss']:.4f}" in bar, bar[-500:]


def test_generation_logs_its_estimate_against_its_grant(tmp_path, caplog):
    from alpagasus.evaluation.generation import check_memory, load_model

    ck = Path(tmp_path / "ck")
    _make_checkpoint(ck)
    model, tok = load_model(ck)
    with caplog.at_level(logging.INFO, logger="alpagasus.training.memory"):
        rec = check_memory(model, tok, ["a prompt", "another prompt"], batch_size=16, max_new_tokens=1024,
                           what="generate x mini", mem_mb=100)
    assert rec["batch_size"] == 2 and rec["kv_cache_mb"] > 0
    assert "granted mem_mb 100 is below" in caplog.text


def _make_checkpoint(out: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    from alpagasus.data.miniature import MINIATURE_TEMPLATE, make_records
    from alpagasus.training.tokenizer import char_tokenizer_for_records

    tok = char_tokenizer_for_records(make_records(20, 0.0), MINIATURE_TEMPLATE)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=4, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)


def test_identity_lists_are_the_ones_the_library_uses():
    from alpagasus.judging.judges.openai_judge import OpenAIJudge

    judge = OpenAIJudge("j", {"model": "m", "temperature": 0.5, "concurrency": 3})
    assert judge.params == {"temperature": 0.5, "top_p": 1.0, "max_tokens": 256}
    assert set(identity.JUDGE_SAMPLING_KEYS) < set(identity.JUDGE_KEYS)
    size = {"learning_rate": 1e-3, "resources": {"gpus": 4}, "per_device_batch_size": 2, "lora": {"r": 8}}
    assert identity.training_identity(size) == {"learning_rate": 1e-3, "lora": {"r": 8}}
    assert identity.generation_identity({"batch_size": 64}) == {"max_new_tokens": 1024}
    assert math.isclose(identity.selection_identity({"method": "top_k", "k": 3, "random_seed": 1})["k"], 3)
    mini = {"source": "miniature", "max_field_chars": 9, "miniature": {"n_records": 10, "n_test": 5, "seed": 0}}
    assert identity.data_identity(mini) == {"source": "miniature", "miniature": {
        "n_records": 10, "corrupt_fraction": None, "seed": 0, "families": None}}
