"""What one training run is: a data file, an output directory and a size's settings."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from alpagasus.core.config import defaults

# Values a size may leave out: the schema's (config/schema.yaml, training.sizes.<name>), less the
# job's resources, which are no part of a run.
SIZE_DEFAULTS: dict[str, Any] = {k: v for k, v in defaults("training.sizes.*").items()
                                 if k not in ("resources", "generate_resources")}
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
    tracking: dict | None = None  # alpagasus.training.tracking.settings(): where steps are reported

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


def spec_from_config(config_files: list[str], size_name: str, variant: str, data: str, output: str,
                     threads: int | None = None) -> tuple[TrainSpec, dict]:
    """A run from config files (the base, then overlays), loaded as the workflow loads them
    (merged, validated, defaults filled); and the size's resources."""
    from alpagasus.core.config import load

    training = load(*config_files)["training"]
    sizes = training["sizes"]
    if size_name not in sizes:
        raise ValueError(f"size {size_name!r} is not in training.sizes of {config_files} ({sorted(sizes)})")
    size = sizes[size_name]
    resources = size["resources"]
    spec = TrainSpec(data=data, output=output, size=size, size_name=size_name, variant=variant,
                     template=training["template"], seed=int(training["seed"]), threads=threads,
                     mem_mb=resources["mem_mb"])
    return spec, resources
