"""The config's cross-references and the files a training size names are checked when the
workflow is parsed, with an error naming the key (before any job is queued)."""
import copy

import pytest

from alpagasus.config import REPO, ConfigError, load


@pytest.fixture(scope="module")
def paper():
    return load(REPO / "config" / "config.yaml")


def test_shipped_configs_pass():
    load(REPO / "config" / "config.yaml")
    load(REPO / "config" / "config.yaml", REPO / "config" / "smoke.yaml")


def _with_size(cfg, **changes):
    from alpagasus.config import validate

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
