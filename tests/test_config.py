"""The config's cross-references and the files a training size names are checked when the
workflow is parsed, with an error naming the key (before any job is queued)."""
import copy

import pytest

from alpagasus.core.config import REPO, ConfigError, load


@pytest.fixture(scope="module")
def paper():
    return load(REPO / "config" / "config.yaml")


def test_shipped_configs_pass():
    load(REPO / "config" / "config.yaml")
    load(REPO / "config" / "config.yaml", REPO / "config" / "smoke.yaml")


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
