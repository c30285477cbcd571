"""The training job's memory estimate (``alpagasus.training.memory``) against the ``mem_mb`` it was granted."""

from __future__ import annotations

import os

from alpagasus.training import memory
from alpagasus.training.model import base_config


def for_training(spec, size: dict, model, n_params: int, n_trainable: int, row_length: int, attn: str,
                 accelerator) -> dict:
    """Estimate, log and (on the first process of a node) warn; the record goes into train_log."""
    cuda = accelerator.device.type == "cuda"
    shards = accelerator.num_processes if accelerator.distributed_type.name == "FSDP" else 1
    # Weights are loaded in fp32 (bf16 is autocast), the frozen base of a LoRA run too, unless 4-bit.
    weights = "4bit" if size["quantization"] == "4bit" else "fp32"
    per_process = memory.training_estimate(
        config=base_config(model), n_parameters=n_params, n_trainable=n_trainable, weights=weights,
        compute_bytes=2 if (size["bf16"] and cuda) else 4, rows=int(size["per_device_batch_size"]),
        row_length=row_length, gradient_checkpointing=bool(size["gradient_checkpointing"]),
        attn_implementation=attn, shards=shards)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    what = f"train {spec.variant}-{spec.size_name}".replace(" -", " ")
    granted = memory.granted_mb(spec.mem_mb)
    if not accelerator.is_local_main_process:
        return per_process
    if not cuda:
        return memory.check(per_process, what, granted, processes=local)
    # On GPUs the grant is host RAM: the first rank loads the fp32 weights there (the others
    # wait for them with cpu_ram_efficient_loading), and every process has its overhead.
    host = {"weights_mb": round(n_params * 4 / memory.MB, 1), "overhead_mb": memory.OVERHEAD_MB * local}
    host["total_mb"] = round(sum(host.values()), 1)
    record = memory.check(host, what, granted, processes=1)
    total = accelerator.device.index is not None and _gpu_total_mb(accelerator.device)
    device = memory.check(per_process, f"{what} (per GPU)", total or None, where="GPU memory")
    return {**record, "per_gpu": device}


def _gpu_total_mb(device) -> int:
    import torch

    return int(torch.cuda.get_device_properties(device).total_memory / memory.MB)
