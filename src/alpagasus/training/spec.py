"""What one training run is: a data file, an output directory and a size's settings."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

# Values a size may leave out (config/schema.yaml lists every key).
SIZE_DEFAULTS: dict[str, Any] = {
    "base_model": None,
    "tokenizer": None,
    "model_config": None,
    "max_steps": None,
    "epochs": 3,
    "learning_rate": 2e-5,
    "global_batch_size": 128,
    "per_device_batch_size": 4,
    "max_length": 512,
    "pack_length": None,
    "warmup_ratio": 0.03,
    "weight_decay": 0.0,
    "lr_scheduler": "cosine",
    "adam_betas": [0.9, 0.999],
    "adam_eps": 1e-8,
    "max_grad_norm": 1.0,
    "bf16": False,
    "gradient_checkpointing": False,
    "packing": True,
    "attn_implementation": None,
    "save_every_steps": 100,
    "fsdp_config": None,
    # LoRA through peft: {r, alpha, dropout, target_modules}; null trains every weight.
    "lora": None,
    # "4bit": the frozen base weights in 4-bit NF4 (QLoRA; needs lora, a GPU and bitsandbytes).
    "quantization": None,
}
LORA_KEYS = ("r", "alpha", "dropout", "target_modules")


@dataclasses.dataclass
class TrainSpec:
    data: str
    output: str
    size: dict
    size_name: str = "tiny"
    variant: str = ""
    template: str | None = None
    seed: int = 42
    work_dir: str | None = None
    threads: int | None = None
    progress: bool = True
    save_model: bool = True  # False: benchmarks that only want the log
    mem_mb: int | None = None  # the memory the job was granted (compared with the estimate)

    def resolved_size(self) -> dict:
        unknown = sorted(set(self.size) - set(SIZE_DEFAULTS) - {"resources", "generate_resources"})
        if unknown:
            raise ValueError(f"training size {self.size_name!r}: unknown keys {unknown}")
        size = {**SIZE_DEFAULTS, **self.size}
        if size["base_model"] is None and not size["model_config"]:
            raise ValueError(f"training size {self.size_name!r}: set base_model or model_config")
        if size["lora"] is not None:
            missing = [k for k in LORA_KEYS if k not in size["lora"]]
            extra = sorted(set(size["lora"]) - set(LORA_KEYS))
            if missing or extra:
                raise ValueError(f"training size {self.size_name!r}: lora needs exactly {list(LORA_KEYS)} "
                                 f"(missing {missing}, unknown {extra})")
        if size["quantization"] not in (None, "4bit"):
            raise ValueError(f"training size {self.size_name!r}: quantization {size['quantization']!r} "
                             f"is not one of null, '4bit'")
        if size["quantization"] and size["lora"] is None:
            raise ValueError(f"training size {self.size_name!r}: quantization: 4bit trains an adapter "
                             f"on frozen 4-bit weights; set lora too")
        return size

    def resolved_work_dir(self) -> Path:
        if self.work_dir:
            return Path(self.work_dir)
        out = Path(self.output)
        return out.parent / f".{out.name}.resume"

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "TrainSpec":
        with open(path, encoding="utf-8") as fh:
            return cls(**json.load(fh))


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def spec_from_config(config_files: list[str], size_name: str, variant: str, data: str, output: str,
                     threads: int | None = None) -> tuple[TrainSpec, dict]:
    """A run from config files (later ones override), as the workflow would start it; and the
    size's resources."""
    import yaml

    cfg: dict = {}
    for f in config_files:
        with open(f, encoding="utf-8") as fh:
            cfg = _deep_merge(cfg, yaml.safe_load(fh) or {})
    training = cfg.get("training", {})
    sizes = training.get("sizes", {})
    if size_name not in sizes:
        raise ValueError(f"size {size_name!r} is not in training.sizes of {config_files} ({sorted(sizes)})")
    size = sizes[size_name]
    resources = size.get("resources", {})
    spec = TrainSpec(data=data, output=output, size=size, size_name=size_name, variant=variant,
                     template=training.get("template"), seed=int(training.get("seed", 42)), threads=threads,
                     mem_mb=resources.get("mem_mb"))
    return spec, resources
