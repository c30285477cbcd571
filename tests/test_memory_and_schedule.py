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
    assert _lrs("cosine", warmup=3, total=10)[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert _lrs("linear", warmup=0, total=4) == pytest.approx([1.0, 0.75, 0.5, 0.25])  # no warmup: HF's own


@pytest.mark.parametrize("name", ["cosine", "linear"])
@pytest.mark.parametrize("warmup, total", [(1, 10), (3, 10), (3, 100), (30, 1000), (0, 50)])
def test_every_step_trains_the_warmup_rises_to_the_full_rate_then_decays(name, warmup, total):
    used = _lrs(name, warmup, total, lr=2e-5)
    assert len(used) == total and min(used) > 0  # no step is spent at lr 0
    peak = max(1, warmup) - 1  # the step (0-based) that first trains at the full rate
    assert used[peak] == pytest.approx(2e-5) and max(used) == pytest.approx(2e-5)
    rise, decay = used[:peak + 1], used[peak:]
    assert all(b > a for a, b in zip(rise, rise[1:]))  # strictly rising through the warmup
    assert all(b < a for a, b in zip(decay, decay[1:]))  # strictly falling after it
    if warmup:
        assert used[0] == pytest.approx(2e-5 / warmup)  # the warmup's first step, not its zero
    # Half-way through the decay the rate is about half the peak (cosine and linear alike).
    mid = peak + (total - peak) // 2
    assert used[mid] == pytest.approx(1e-5, rel=0.1)


# A model whose per-token terms dwarf the weights: 4 layers of width 256 over rows of 512
# tokens (the character tokenizer keeps the logits small). Micro-batches of 1 and 8 rows, and 8
# rows with activation checkpointing, each trained for real in a process of its own: two steps,
# so that the second holds the optimizer's state and the activations at once, as estimated.
MEASURED = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 4, "num_attention_heads": 4,
            "tie_word_embeddings": True}
RUNS = {"1 row": {"per_device_batch_size": 1}, "8 rows": {"per_device_batch_size": 8},
        "8 rows, checkpointed": {"per_device_batch_size": 8, "gradient_checkpointing": True}}


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """(estimate, peak RSS) of real training jobs: `python -m alpagasus.training --spec`."""
    import dataclasses
    import os
    import subprocess
    import sys

    from conftest import REPO
    from test_training import TINY

    from alpagasus.data.miniature import MINIATURE_TEMPLATE, make_records
    from alpagasus.training import TrainSpec

    tmp = tmp_path_factory.mktemp("memory")
    data = tmp / "records.json"
    data.write_text(json.dumps(make_records(400, 0.0, seed=3)))
    size = {**TINY, "model_config": MEASURED, "max_steps": 2, "global_batch_size": 80, "pack_length": 512}
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    procs = {}
    for name, extra in RUNS.items():  # side by side: each peak is its own process's
        out = tmp / name.replace(" ", "_").replace(",", "")
        spec = TrainSpec(data=str(data), output=str(out), size={**size, **extra}, size_name="m", variant="m",
                         template=MINIATURE_TEMPLATE, seed=0, threads=1, progress=False)
        (tmp / f"{out.name}.json").write_text(json.dumps(dataclasses.asdict(spec)))
        procs[name] = (out, subprocess.Popen([sys.executable, "-m", "alpagasus.training", "--spec",
                                              str(tmp / f"{out.name}.json")], env=env, text=True,
                                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    runs = {}
    for name, (out, proc) in procs.items():
        text, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, text[-3000:]
        log = json.loads((out / "train_log.json").read_text())
        assert log["useful_token_fraction"] > 0.85  # the rows are full: the estimate's T is real
        runs[name] = (log["memory_estimate"], log["peak_memory_mb"]["rss_mb"])
    return runs


@pytest.mark.slow
@pytest.mark.xdist_group("heavy")  # three training processes at once (conftest.py)
def test_the_memory_estimate_is_near_the_measured_peak(measured):
    for name, (est, peak) in measured.items():
        print(f"{name}: estimate {est['total_mb']:.0f} MB, measured peak RSS {peak:.0f} MB")
        # Near, and not below by more than the allocator's slack: a job sized by it is not killed.
        assert 0.8 * peak < est["total_mb"] < 1.3 * peak, (name, est, peak)


@pytest.mark.slow
@pytest.mark.xdist_group("heavy")
def test_what_a_bigger_micro_batch_and_checkpointing_change_is_what_was_measured(measured):
    """Eight rows instead of one add activations (and logits); checkpointing takes most of them
    back. The estimate's differences follow the measured peaks' (weights and overhead cancel)."""
    (e1, p1), (e8, p8), (ec, pc) = (measured[n] for n in RUNS)
    grown, saved = e8["total_mb"] - e1["total_mb"], e8["total_mb"] - ec["total_mb"]
    print(f"8 rows - 1 row: estimate +{grown:.0f} MB, measured +{p8 - p1:.0f} MB; "
          f"checkpointing: estimate -{saved:.0f} MB, measured -{p8 - pc:.0f} MB")
    assert p8 - p1 > 150  # big enough to tell a right term from a wrong one
    assert 0.75 < grown / (p8 - p1) < 1.33
    assert 0.5 < saved / (p8 - pc) < 2.5


def test_sharding_divides_the_weights_state_and_nothing_else():
    from transformers import LlamaConfig

    cfg = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                      num_key_value_heads=3, vocab_size=49152)
    kw = dict(config=cfg, n_parameters=134_515_008, n_trainable=134_515_008, weights="fp32", compute_bytes=4,
              rows=4, row_length=512, gradient_checkpointing=False, attn_implementation="sdpa")
    one, four = memory.training_estimate(**kw), memory.training_estimate(**kw, shards=4)
    for part in ("weights_mb", "gradients_mb", "optimizer_mb"):
        assert four[part] == pytest.approx(one[part] / 4, abs=0.1), part
    for part in ("activations_mb", "logits_mb", "overhead_mb"):
        assert four[part] == one[part], part
    frozen = memory.training_estimate(**{**kw, "n_trainable": 34_816})  # a LoRA adapter
    assert frozen["weights_mb"] == one["weights_mb"] and frozen["optimizer_mb"] < one["optimizer_mb"] / 1000


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
