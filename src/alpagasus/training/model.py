"""The model a run trains: tokenizer, weights (from a base model or a config), attention kernel,
and optionally a LoRA adapter (peft) on frozen, possibly 4-bit, base weights."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("alpagasus.training")

FLASH_IMPLEMENTATIONS = ("flash_attention_2", "flash_attention_3")


def load_tokenizer(size: dict, records: list[dict], template: str | None):
    from transformers import AutoTokenizer

    from alpagasus.training.tokenizer import char_tokenizer_for_records

    name = size["tokenizer"] or size["base_model"]
    if name == "char":
        return char_tokenizer_for_records(records, template)
    if name is None:
        raise ValueError("a size without base_model needs tokenizer: char (or a tokenizer path)")
    if str(name).endswith(".gguf"):
        # LLaMA's tokenizer shipped as a GGUF file (../shared/data/tokenizers): no download.
        path = Path(name)
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return AutoTokenizer.from_pretrained(name)


def add_pad_token(tokenizer, model) -> bool:
    """Stanford Alpaca's ``smart_tokenizer_and_embedding_resize``: add [PAD], new rows = mean.

    LLaMA's tokenizer has no pad token; Alpaca added one and initialised its embedding (input
    and output) to the mean of the existing ones.
    """
    import torch

    if tokenizer.pad_token is not None:
        return False
    n_added = tokenizer.add_special_tokens({"pad_token": "[PAD]"})
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    if n_added:
        with torch.no_grad():
            for emb in (model.get_input_embeddings(), model.get_output_embeddings()):
                if emb is None:
                    continue
                w = emb.weight
                w[-n_added:] = w[:-n_added].mean(dim=0, keepdim=True)
    return True


def choose_attn_implementation(requested: str | None, cuda: bool) -> str:
    if requested:
        return requested
    if cuda:
        try:
            import flash_attn  # noqa: F401

            return "flash_attention_2"
        except ImportError:
            pass
    return "sdpa"


def check_quantization(size: dict, size_name: str, cuda: bool) -> None:
    """4-bit base weights need bitsandbytes' CUDA kernels: say so before anything is loaded."""
    if size["quantization"] != "4bit":
        return
    problems = []
    if not cuda:
        problems.append("no CUDA GPU is visible")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        problems.append("the bitsandbytes package is not installed (pip install bitsandbytes)")
    if not size["base_model"]:
        problems.append("there is no base_model to quantize (a model built from model_config starts random)")
    if problems:
        raise RuntimeError(f"training size {size_name!r}: quantization: 4bit (QLoRA) cannot run here: "
                           f"{'; '.join(problems)}. Use a GPU node with bitsandbytes, or set quantization: "
                           f"null to train the LoRA adapter on unquantized weights.")


def build_model(size: dict, tokenizer, attn_implementation: str):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    if size["base_model"]:
        kwargs = {}
        if size["quantization"] == "4bit":
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16 if size["bf16"] else torch.float32)
        model = AutoModelForCausalLM.from_pretrained(
            size["base_model"], dtype=torch.float32, attn_implementation=attn_implementation, **kwargs
        )
        add_pad_token(tokenizer, model)
    else:
        mc = dict(size["model_config"])
        mc.setdefault("max_position_embeddings", max(size["max_length"], size["pack_length"] or 0))
        cfg = LlamaConfig(
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **mc,
        )
        cfg._attn_implementation = attn_implementation
        model = LlamaForCausalLM(cfg)
        if tokenizer.pad_token is None:
            add_pad_token(tokenizer, model)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.use_cache = False
    return model


def add_lora(model, size: dict):
    """Freeze the model and add a LoRA adapter (``size["lora"]``) on the named modules."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    lora = size["lora"]
    if size["quantization"] == "4bit":
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=bool(size["gradient_checkpointing"]),
            gradient_checkpointing_kwargs={"use_reentrant": False})
    config = LoraConfig(r=int(lora["r"]), lora_alpha=float(lora["alpha"]), lora_dropout=float(lora["dropout"]),
                        target_modules=list(lora["target_modules"]), bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def is_lora(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def base_config(model):
    """The transformers config of the model (under a LoRA wrapper too)."""
    return model.get_base_model().config if is_lora(model) else model.config
