"""The end of a run: its log, and the output directory generation reads.

The output is always a standard Hugging Face directory (full weights, tokenizer, generation
config), written elsewhere and renamed when complete. With LoRA it holds the merged model, and
the adapter alone (peft's format) in ``adapter/``.
"""

from __future__ import annotations

import logging
import resource
import shutil

from alpagasus.core.io import atomic_path, write_json
from alpagasus.training.distributed import max_over_ranks
from alpagasus.training.model import is_lora
from alpagasus.training.run import RunState, nominal_accumulation

log = logging.getLogger("alpagasus.training")

ADAPTER_DIR = "adapter"
LOGGED_HYPERPARAMETERS = (
    "epochs", "max_steps", "learning_rate", "global_batch_size", "per_device_batch_size", "max_length",
    "pack_length", "warmup_ratio", "weight_decay", "lr_scheduler", "adam_betas", "adam_eps", "max_grad_norm",
    "bf16", "gradient_checkpointing", "packing", "lora", "quantization",
)


def peak_memory_mb(device_type: str) -> dict:
    out = {"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    if device_type == "cuda":
        import torch

        out["gpu_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["gpu_reserved_mb"] = torch.cuda.max_memory_reserved() / 2**20
    return out


def versions() -> dict:
    import accelerate
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "accelerate": accelerate.__version__}


def summarize(run: RunState) -> dict:
    """The train log: every step, totals, the setup, and where and with what it ran."""
    import torch

    size, spec, acc, history = run.size, run.spec, run.accelerator, run.history
    device_type = acc.device.type
    tokens = sum(h["tokens"] for h in history)
    slots = sum(h["slots"] for h in history)
    sup = sum(h["supervised_tokens"] for h in history)
    mem = peak_memory_mb(device_type)
    if device_type == "cuda":
        mem["gpu_allocated_mb"], mem["gpu_reserved_mb"] = max_over_ranks(
            acc, [mem["gpu_allocated_mb"], mem["gpu_reserved_mb"]])
    return {
        "variant": spec.variant,
        "size": spec.size_name,
        "data": str(spec.data),
        "data_sha256": run.data_sha,
        **run.data_stats,
        "n_parameters": run.n_params,
        "n_trainable_parameters": run.n_trainable,
        "n_matmul_parameters": run.n_matmul_params,
        "mean_squared_length": sum(n * n for n in run.lengths) / len(run.lengths),
        "base_model": size["base_model"],
        "template": spec.template,
        "seed": spec.seed,
        "hyperparameters": {k: size[k] for k in LOGGED_HYPERPARAMETERS},
        "total_steps": run.total_steps,
        "steps_per_epoch": run.steps_per_epoch,
        "warmup_steps": run.warmup_steps,
        "nominal_gradient_accumulation": nominal_accumulation(run),
        "micro_batches_per_step_mean": sum(h["micro_batches"] for h in history) / max(1, len(history)),
        "attn_implementation": run.attn,
        "layout": run.layout,
        "row_length": run.row_length,
        "device_type": device_type,
        "device_count": run.world,
        "nodes": run.nodes,
        "world_size": run.world,
        "distributed_type": acc.distributed_type.name,
        "mixed_precision": acc.mixed_precision,
        "threads": torch.get_num_threads(),
        "tokens_seen": tokens,
        "supervised_tokens_seen": sup,
        "token_slots_computed": slots,
        "useful_token_fraction": tokens / max(1, slots),
        "supervised_token_fraction": sup / max(1, slots),
        "wall_time_s": round(run.elapsed, 3),
        "tokens_per_s": tokens / run.elapsed if run.elapsed else None,
        "peak_memory_mb": mem,
        "memory_estimate": run.memory_estimate,
        "resumed_from_steps": run.resumed_from,
        "final_loss": history[-1]["loss"] if history else None,
        "versions": versions(),
        "steps": history,
    }


def export(run: RunState, train_log: dict) -> None:
    """Write the output directory (on the main process), then remove the saved states."""
    import torch
    from transformers import GenerationConfig

    acc, size, spec, tokenizer = run.accelerator, run.size, run.spec, run.tokenizer
    acc.wait_for_everyone()
    if not spec.save_model:
        if run.main:
            shutil.rmtree(run.work_dir, ignore_errors=True)
        return
    # Every rank takes part: under FSDP this gathers the shards.
    state_dict = acc.get_state_dict(run.model)
    if run.main:
        model = acc.unwrap_model(run.model)
        with atomic_path(spec.output) as tmp:
            if is_lora(model):
                model.save_pretrained(tmp / ADAPTER_DIR, safe_serialization=True)
                # The merged model is what generation reads: a standard directory, no peft needed.
                model = model.merge_and_unload()
                state_dict = model.state_dict()
            if size["bf16"]:
                # bf16 halves the checkpoint; generation runs in bf16 anyway.
                state_dict = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in state_dict.items()}
                model.config.dtype = torch.bfloat16
            model.config.use_cache = True
            model.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id, do_sample=False).save_pretrained(tmp)
            write_json(tmp / "train_log.json", train_log)
            try:
                from alpagasus.reporting.plots import plot_loss_curve

                plot_loss_curve(train_log, tmp / "loss_curve.png")
            except Exception as exc:  # a plot must never lose a finished model
                log.warning("loss-curve plot failed: %s", exc)
        shutil.rmtree(run.work_dir, ignore_errors=True)
        log.info("%s: %d steps, final loss %.4f, %.0f tokens/s, useful-token fraction %.3f",
                 spec.output, run.total_steps, train_log["final_loss"] or float("nan"),
                 train_log["tokens_per_s"] or 0.0, train_log["useful_token_fraction"])
    acc.wait_for_everyone()
