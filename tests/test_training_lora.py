"""LoRA (peft) on the tiny model, on CPU, from the miniature's LoRA overlay: the loss falls, the
adapter is small, the merged checkpoint is a standard directory that loads and generates, and a
stopped run resumes from a state that holds the adapter alone."""
import json
import signal
from pathlib import Path

import pytest
import torch
from conftest import REPO
from test_training import _run_cli, _wait_for

from alpagasus.data.miniature import make_records
from alpagasus.training import TrainSpec, spec_from_config, train

CONFIGS = [str(REPO / "config" / f) for f in ("config.yaml", "smoke.yaml", "smoke_lora.yaml")]


def lora_spec(tmp: Path, data: Path, name: str, **size) -> TrainSpec:
    spec, _ = spec_from_config(CONFIGS, "tiny", name, str(data), str(tmp / "checkpoints" / name), threads=1)
    spec.size = {**spec.size, "max_steps": 90, "save_every_steps": 30, **size}
    spec.progress = False
    return spec


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lora-data") / "records.json"
    path.write_text(json.dumps(make_records(400, 0.0, seed=3)))
    return path


@pytest.mark.slow
def test_lora_trains_saves_a_small_adapter_and_a_merged_model_and_resumes(tmp_path, data):
    spec = lora_spec(tmp_path, data, "lora-tiny")
    work = spec.resolved_work_dir()
    proc = _run_cli(spec, tmp_path)
    _wait_for("step-00000030", work, proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, out[-2000:]
    (saved,) = work.glob("step-*")
    stopped_at = json.loads((saved / "trainer_state.json").read_text())["step"]
    # The saved state holds the adapter, not the frozen base weights.
    from safetensors.torch import load_file

    state_keys = list(load_file(saved / "model.safetensors"))
    assert state_keys and all("lora_" in k for k in state_keys), state_keys[:5]

    log = train(spec)
    assert log["resumed_from_steps"] == [stopped_at] and len(log["steps"]) == 90
    straight = train(lora_spec(tmp_path / "straight", data, "lora-tiny"))
    assert [s["loss"] for s in log["steps"]] == pytest.approx([s["loss"] for s in straight["steps"]], rel=1e-3, abs=1e-4)

    losses = [s["loss"] for s in log["steps"]]
    assert sum(losses[-20:]) / 20 < 0.8 * sum(losses[:5]) / 5, (losses[:5], losses[-20:])
    assert 0 < log["n_trainable_parameters"] < 0.2 * log["n_parameters"]
    assert log["hyperparameters"]["lora"]["r"] == 8

    out_dir = Path(spec.output)
    adapter = out_dir / "adapter"
    assert (adapter / "adapter_config.json").is_file()
    assert (adapter / "adapter_model.safetensors").stat().st_size < 0.25 * (out_dir / "model.safetensors").stat().st_size
    merged_keys = list(load_file(out_dir / "model.safetensors"))
    assert not any("lora" in k or "base_model" in k for k in merged_keys), merged_keys[:5]

    # The merged directory is what generation reads: a plain transformers model, no peft.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alpagasus.data.miniature import MINIATURE_TEMPLATE
    from alpagasus.training.packing import collate, token_losses, tokenize_records

    model = AutoModelForCausalLM.from_pretrained(out_dir).eval()
    tok = AutoTokenizer.from_pretrained(out_dir)
    examples, _ = tokenize_records(make_records(400, 0.0, seed=3)[:32], tok, 64, MINIATURE_TEMPLATE, source="x")
    batch = collate([[e] for e in examples], tok.pad_token_id, "rows", mask="bool", mask_dtype=torch.float32)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                       attention_mask=batch["attention_mask"]).logits
    # The training loss, computed from the merged weights: it carries the adapter's learning.
    mean = float(token_losses(logits, batch["targets"]).sum()) / sum(e.n_supervised for e in examples)
    assert mean == pytest.approx(sum(losses[-20:]) / 20, rel=0.15), (mean, losses[-20:])
    ids = tok(MINIATURE_TEMPLATE.format(instruction="Give the first letter of the word.", input="kite"),
              return_tensors="pt")
    assert model.generate(**ids, max_new_tokens=4, do_sample=False).shape[1] > ids["input_ids"].shape[1]


def test_4bit_quantization_without_a_gpu_and_bitsandbytes_is_a_clear_error(tmp_path, data):
    spec = lora_spec(tmp_path, data, "q-tiny", quantization="4bit", base_model="some/llama")
    with pytest.raises(RuntimeError, match=r"training size 'tiny': quantization: 4bit \(QLoRA\) cannot run here: "
                                           r"no CUDA GPU is visible; the bitsandbytes package is not installed"):
        train(spec)
    assert not Path(spec.output).exists()


@pytest.mark.parametrize("size, message", [
    ({"lora": {"r": 8, "alpha": 16}}, r"lora needs exactly \['r', 'alpha', 'dropout', 'target_modules'\] "
                                      r"\(missing \['dropout', 'target_modules'\]"),
    ({"lora": None, "quantization": "4bit"}, "quantization: 4bit trains an adapter on frozen 4-bit weights; set lora"),
    ({"quantization": "8bit"}, "quantization '8bit' is not one of"),
])
def test_bad_lora_settings_are_named(tmp_path, data, size, message):
    with pytest.raises(ValueError, match=message):
        train(lora_spec(tmp_path, data, "bad-tiny", **size))


def test_the_lora_overlay_passes_the_schema_and_a_bad_lora_is_named_there():
    import copy

    from alpagasus.core.config import ConfigError, load, validate

    cfg = load(*CONFIGS)
    assert cfg["training"]["sizes"]["tiny"]["lora"]["r"] == 8
    bad = copy.deepcopy(cfg)
    del bad["training"]["sizes"]["tiny"]["lora"]["r"]
    with pytest.raises(ConfigError, match=r"training.sizes.tiny.lora: 'r' is a required property"):
        validate(bad)
    bad["training"]["sizes"]["tiny"].update(lora=None, quantization="8bit")
    with pytest.raises(ConfigError, match=r"training.sizes.tiny.quantization: '8bit' is not one of"):
        validate(bad)
