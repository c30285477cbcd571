"""A run's state, and setting it up: the accelerator, the data, the model, the optimizer."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import socket
from pathlib import Path
from typing import Any

from alpagasus.data import load_records
from alpagasus.core.io import sha256_file
from alpagasus.core.identity import training_fingerprint
from alpagasus.training.packing import tokenize_records
from alpagasus.training import memory_check
from alpagasus.training.distributed import gather_nodes, use_fsdp_on_cpu
from alpagasus.training.model import (FLASH_IMPLEMENTATIONS, add_lora, build_model, check_quantization, choose_attn_implementation, load_tokenizer)
from alpagasus.training.schedule import StepSampler, make_scheduler, total_steps_for, warmup_steps_for
from alpagasus.training.spec import TrainSpec

log = logging.getLogger("alpagasus.training")


@dataclasses.dataclass
class RunState:
    """Everything the loop, the saves and the export read; ``history``, ``elapsed`` and
    ``start_step`` change as it goes (and are what a saved state restores)."""

    spec: TrainSpec
    size: dict
    accelerator: Any
    model: Any
    optimizer: Any
    scheduler: Any
    tokenizer: Any
    examples: list
    lengths: list[int]
    supervised: list[int]
    data_stats: dict
    data_sha: str
    fingerprint: str
    sampler: StepSampler
    total_steps: int
    steps_per_epoch: int
    warmup_steps: int
    row_length: int
    attn: str
    layout: str
    mask_kind: str
    nodes: list[str]
    n_params: int
    n_trainable: int
    n_matmul_params: int
    memory_estimate: dict
    history: list[dict] = dataclasses.field(default_factory=list)
    start_step: int = 0
    elapsed: float = 0.0
    resumed_from: list[int] = dataclasses.field(default_factory=list)

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def work_dir(self) -> Path:
        return self.spec.resolved_work_dir()

    @property
    def lora(self) -> bool:
        return self.size["lora"] is not None


def setup(spec: TrainSpec) -> RunState:
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    size = spec.resolved_size()
    if spec.threads:
        torch.set_num_threads(int(spec.threads))
    cuda = torch.cuda.is_available()
    check_quantization(size, spec.size_name, cuda)
    accelerator = Accelerator(mixed_precision="bf16" if (size["bf16"] and cuda) else "no", cpu=not cuda)
    use_fsdp_on_cpu(accelerator)
    world = accelerator.num_processes
    if size["lora"] is not None and accelerator.distributed_type.name == "FSDP":
        raise ValueError(f"training size {spec.size_name!r}: lora with FSDP is not supported; set "
                         f"fsdp_config: null (several GPUs then run DDP, which an adapter fits)")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    set_seed(spec.seed)
    # Where each rank runs (the Slurm node name when there is one): logged, and kept in the log.
    node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
    log.info("rank %d of %d on %s (%s)", accelerator.process_index, world, node, accelerator.device)
    nodes = gather_nodes(accelerator, node)

    data_sha = sha256_file(spec.data)
    records = load_records(spec.data)
    tokenizer = load_tokenizer(size, records, spec.template)
    attn = choose_attn_implementation(size["attn_implementation"], cuda)
    model = build_model(size, tokenizer, attn)
    if size["gradient_checkpointing"]:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    n_params = sum(p.numel() for p in model.parameters())
    n_embed = model.get_input_embeddings().weight.numel()
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    if size["lora"] is not None:
        model = add_lora(model, size)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    row_length = int(size["pack_length"] or size["max_length"])
    if row_length < int(size["max_length"]):
        raise ValueError(f"training size {spec.size_name!r}: pack_length {row_length} is shorter "
                         f"than max_length {size['max_length']} (a row must hold any example)")
    examples, data_stats = tokenize_records(records, tokenizer, size["max_length"], spec.template,
                                            source=str(spec.data))
    del records
    estimate = memory_check.for_training(spec, size, model, n_params, n_trainable, row_length, attn, accelerator)

    gb = int(size["global_batch_size"])
    total_steps, steps_per_epoch = total_steps_for(len(examples), size)
    warmup_steps = warmup_steps_for(total_steps, size["warmup_ratio"])
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 else decay).append(p)  # HF: no decay on biases and norms
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": float(size["weight_decay"])},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=float(size["learning_rate"]),
        betas=tuple(size["adam_betas"]),
        eps=float(size["adam_eps"]),
        # One fused kernel per step on a single GPU (the 1B bench's optimizer step is ~10% of
        # a step otherwise); the default (foreach) elsewhere, FSDP included.
        **({"fused": True} if cuda and world == 1 else {}),
    )
    scheduler = make_scheduler(size["lr_scheduler"], optimizer, warmup_steps, total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    # Not prepared: accelerate would step a prepared scheduler once per process per step.
    accelerator.register_for_checkpointing(scheduler)

    return RunState(
        spec=spec, size=size, accelerator=accelerator, model=model, optimizer=optimizer, scheduler=scheduler,
        tokenizer=tokenizer, examples=examples, lengths=[len(e) for e in examples],
        supervised=[e.n_supervised for e in examples], data_stats=data_stats, data_sha=data_sha,
        fingerprint=fingerprint(spec, size, data_sha), sampler=StepSampler(len(examples), gb, spec.seed),
        total_steps=total_steps, steps_per_epoch=steps_per_epoch, warmup_steps=warmup_steps,
        row_length=row_length, attn=attn, layout="flat" if attn in FLASH_IMPLEMENTATIONS else "rows",
        mask_kind="additive" if attn == "eager" else "bool", nodes=nodes, n_params=n_params,
        n_trainable=n_trainable,
        # Parameters used in matmuls (for FLOPs): all but the input embedding lookup, unless it
        # is tied to the output layer.
        n_matmul_params=n_params if tied else n_params - n_embed, memory_estimate=estimate,
    )


def fingerprint(spec: TrainSpec, size: dict, data_sha: str) -> str:
    """What a saved state must match to be resumed (``alpagasus.core.identity``)."""
    return training_fingerprint(data_sha, size, spec.template, spec.seed)


def nominal_accumulation(run: RunState) -> int:
    return math.ceil(int(run.size["global_batch_size"]) / (int(run.size["per_device_batch_size"]) * run.world))
