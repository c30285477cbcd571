"""How much memory a training or generation job needs, estimated before it starts.

Each job logs its estimate next to the ``mem_mb`` it was granted and warns when the grant is
below it (a job killed for memory an hour in costs more than the line it takes to say so). The
formula (docs/training.md, "Memory"), per process, in bytes:

* weights: P x (4 for fp32 master weights | 0.5 for a 4-bit base); trainable parameters
  P_t (all of them, or the adapter's with LoRA) add 4 for the gradient and 8 for AdamW's two
  moments; with FSDP full_shard all of it is divided by the number of processes;
* activations of one micro-batch of T = rows x row_length tokens, kept for the backward pass,
  per layer: 34 x h x T x (bytes of the compute dtype / 2) (Korthikanti et al. 2022), plus
  5 x heads x rows x row_length^2 x bytes for attention scores when they are materialised
  (eager attention); with activation checkpointing only each layer's input (2 x h x T x bytes)
  and one layer's full set;
* logits: T x vocab x 4 bytes, three times (the logits in fp32, their log-softmax, its gradient);
* a fixed overhead for the interpreter, torch and the libraries (``OVERHEAD_MB``).

Generation holds the weights in its dtype, the KV cache (2 x layers x kv_heads x head_dim x
batch x (prompt + new tokens) x bytes) and one step's logits. Estimates, not measurements: the
allocator's slack and fragmentation come on top.
"""

from __future__ import annotations

import logging
import os

MB = 2**20
# The interpreter with torch, transformers and accelerate imported, on CPU (measured ~450 MB RSS
# for the tiny model's job).
OVERHEAD_MB = 500.0
WEIGHT_BYTES = {"fp32": 4.0, "4bit": 0.5}

log = logging.getLogger("alpagasus.training.memory")


def _model_dims(config) -> dict:
    h = int(config.hidden_size)
    heads = int(config.num_attention_heads)
    return {
        "hidden": h,
        "layers": int(config.num_hidden_layers),
        "heads": heads,
        "kv_heads": int(getattr(config, "num_key_value_heads", None) or heads),
        "head_dim": int(getattr(config, "head_dim", None) or h // heads),
        "vocab": int(config.vocab_size),
    }


def training_estimate(*, config, n_parameters: int, n_trainable: int, weights: str, compute_bytes: int,
                      rows: int, row_length: int, gradient_checkpointing: bool, attn_implementation: str,
                      shards: int = 1) -> dict:
    """Per-process estimate in MB, by part (see the module's docstring for the formula)."""
    d = _model_dims(config)
    tokens = rows * row_length
    per_layer = 34 * d["hidden"] * tokens * compute_bytes / 2
    scores = 5 * d["heads"] * rows * row_length**2 * compute_bytes if attn_implementation == "eager" else 0
    if gradient_checkpointing:
        activations = d["layers"] * 2 * d["hidden"] * tokens * compute_bytes + per_layer + scores
    else:
        activations = d["layers"] * (per_layer + scores)
    parts = {
        "weights_mb": n_parameters * WEIGHT_BYTES[weights] / shards / MB,
        "gradients_mb": n_trainable * 4 / shards / MB,
        "optimizer_mb": n_trainable * 8 / shards / MB,
        "activations_mb": activations / MB,
        "logits_mb": 3 * tokens * d["vocab"] * 4 / MB,
        "overhead_mb": OVERHEAD_MB,
    }
    return {"parameters": n_parameters, "trainable_parameters": n_trainable, "weights": weights,
            "tokens_per_micro_batch": tokens, "shards": shards,
            **{k: round(v, 1) for k, v in parts.items()}, "total_mb": round(sum(parts.values()), 1)}


def generation_estimate(*, config, n_parameters: int, dtype_bytes: int, batch_size: int, prompt_tokens: int,
                        max_new_tokens: int) -> dict:
    d = _model_dims(config)
    length = prompt_tokens + max_new_tokens
    parts = {
        "weights_mb": n_parameters * dtype_bytes / MB,
        "kv_cache_mb": 2 * d["layers"] * d["kv_heads"] * d["head_dim"] * batch_size * length * dtype_bytes / MB,
        "logits_mb": batch_size * prompt_tokens * d["vocab"] * 4 / MB,
        "overhead_mb": OVERHEAD_MB,
    }
    return {"parameters": n_parameters, "batch_size": batch_size, "tokens_per_sequence": length,
            **{k: round(v, 1) for k, v in parts.items()}, "total_mb": round(sum(parts.values()), 1)}


def granted_mb(explicit: int | None = None) -> int | None:
    """The memory this job was granted: the rule's ``mem_mb``, else Slurm's allocation, else None."""
    if explicit:
        return int(explicit)
    per_node = os.environ.get("SLURM_MEM_PER_NODE")
    if per_node and per_node.isdigit():
        return int(per_node)
    return None


def check(estimate: dict, what: str, granted: int | None, processes: int = 1, where: str = "host RAM") -> dict:
    """Log the estimate beside the grant; warn when the grant is below it. Returns the record
    kept in the job's log file (``needed_mb`` is for all ``processes`` of this node)."""
    needed = estimate["total_mb"] * processes
    record = {**estimate, "processes": processes, "needed_mb": round(needed, 1), "granted_mb": granted,
              "compared_with": where}
    detail = ", ".join(f"{k[:-3]} {v:.0f}" for k, v in estimate.items() if k.endswith("_mb") and k != "total_mb")
    log.info("%s: memory estimate %.0f MB (%s MB%s) against mem_mb %s", what, needed, detail,
             f", x {processes} processes" if processes > 1 else "", granted if granted else "(not set)")
    if granted and granted < needed:
        log.warning("%s: granted mem_mb %d is below the estimate of %.0f MB: the job may be killed for "
                    "memory; raise resources.mem_mb (docs/training.md, Memory)", what, granted, needed)
    return record
