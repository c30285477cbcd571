"""GGUF base models: their conversion into a standard Hugging Face directory (where one lives is
alpagasus.core.model_files).

transformers loads a GGUF file (``from_pretrained(dir, gguf_file=...)``, dequantised to float)
but refuses to ``save_pretrained`` the model it loaded, so a GGUF model cannot be fine-tuned and
saved as a checkpoint directly. It is converted once: the config rebuilt without its
``quantization_config``, the dequantised state dict loaded into a plain model, model and
tokenizer saved as a standard directory that everything else loads like any checkpoint.

"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from alpagasus.core.model_files import GGUFError

log = logging.getLogger(__name__)


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
