"""Fine-tuning with Stanford Alpaca's recipe: one script for a laptop CPU and a 4xA100 FSDP job.

What is kept from the recipe (../shared/PAPER.md section 2): Alpaca's templates, loss on the
response + eos only, each example truncated at ``max_length``, AdamW, warmup ratio, cosine
schedule, weight decay, gradient clipping at 1.0 (the HF Trainer default Alpaca ran with), and
a global batch of ``global_batch_size`` *examples* per optimizer step whatever the device count.

What differs, and why:

* Examples are packed (``alpagasus.packing``) with exact per-example attention blocks and
  position ids, instead of padded to the longest of 4: the same computation on ~1/3 fewer
  token slots. Rows per micro-batch is ``per_device_batch_size`` (rows of ``pack_length``,
  default ``max_length``), so peak memory is that of Alpaca's worst-case micro-batch, and the
  number of micro-batches per step (the accumulation count) is computed from the data.
* The loss of a step is the sum of token losses over the whole global batch divided by its
  number of supervised tokens (the current HF Trainer's ``num_items_in_batch`` behaviour), so
  it does not depend on how examples were split over micro-batches or devices. The 2023 Trainer
  averaged per-micro-batch means, which weighted tokens unevenly.

Resume: every ``save_every_steps`` optimizer steps the full training state (model, optimizer,
scheduler, RNG, step counter, log so far) is saved under a work directory beside the output;
SIGTERM/SIGUSR1 (Slurm's time-limit warning, preemption) save it too and exit non-zero. The
data order is a pure function of (seed, step), so a rerun continues exactly where it stopped.
The output directory appears only when complete (written elsewhere, then renamed).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .data import load_records, sha256_file
from .io import atomic_path, write_json
from .packing import collate, plan_step, step_token_counts, token_losses, tokenize_records

log = logging.getLogger("alpagasus.training")

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
}
STATE_FILE = "trainer_state.json"
FLASH_IMPLEMENTATIONS = ("flash_attention_2", "flash_attention_3")


class TrainingInterrupted(SystemExit):
    """A signal stopped training after its state was saved; the exit code is 128 + signal."""

    def __init__(self, signum: int, step: int):
        super().__init__(128 + signum)
        self.signum = signum
        self.step = step


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

    def resolved_size(self) -> dict:
        unknown = sorted(set(self.size) - set(SIZE_DEFAULTS) - {"resources", "generate_resources"})
        if unknown:
            raise ValueError(f"training size {self.size_name!r}: unknown keys {unknown}")
        size = {**SIZE_DEFAULTS, **self.size}
        if size["base_model"] is None and not size["model_config"]:
            raise ValueError(f"training size {self.size_name!r}: set base_model or model_config")
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


# --- helpers -----------------------------------------------------------------------------------



def total_steps_for(n_examples: int, size: dict) -> tuple[int, int]:
    """(optimizer steps, steps per epoch); ``max_steps`` wins over ``epochs``."""
    per_epoch = math.ceil(n_examples / size["global_batch_size"])
    if size["max_steps"]:
        return int(size["max_steps"]), per_epoch
    return max(1, math.ceil(per_epoch * size["epochs"])), per_epoch


class StepSampler:
    """Examples of optimizer step ``s``: epoch ``s // steps_per_epoch`` of a seeded shuffle.

    A pure function of (seed, step), so resuming needs no data-loader state. As with the HF
    Trainer (drop_last=False), an epoch's last batch may be smaller.
    """

    def __init__(self, n: int, global_batch: int, seed: int):
        self.n, self.gb, self.seed = n, global_batch, seed
        self.per_epoch = math.ceil(n / global_batch)
        self._epoch, self._perm = -1, None

    def __call__(self, step: int) -> list[int]:
        import numpy as np

        epoch, k = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n).tolist()
            self._epoch = epoch
        return self._perm[k * self.gb:(k + 1) * self.gb]


def load_tokenizer(size: dict, records: list[dict], template: str | None):
    from transformers import AutoTokenizer

    from .tokenizer import char_tokenizer_for_records

    name = size["tokenizer"] or size["base_model"]
    if name == "char":
        return char_tokenizer_for_records(records, template)
    if name is None:
        raise ValueError("a size without base_model needs tokenizer: char (or a tokenizer path)")
    if str(name).endswith(".gguf"):
        # LLaMA's tokenizer shipped as a GGUF file (../shared/data/tokenizers): no download.
        path = Path(name)
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    else:
        tok = AutoTokenizer.from_pretrained(name)
    return tok


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


def build_model(size: dict, tokenizer, attn_implementation: str):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    if size["base_model"]:
        model = AutoModelForCausalLM.from_pretrained(
            size["base_model"], dtype=torch.float32, attn_implementation=attn_implementation
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


def peak_memory_mb(device_type: str) -> dict:
    out = {"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    if device_type == "cuda":
        import torch

        out["gpu_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["gpu_reserved_mb"] = torch.cuda.max_memory_reserved() / 2**20
    return out


# Keys that change how a run executes but not what it computes (the loss is over the global
# batch, and packing is exact): a rerun with another time limit, GPU count, attention kernel,
# micro-batch size or packing still resumes the saved state.
NOT_FINGERPRINTED = ("resources", "generate_resources", "save_every_steps", "fsdp_config",
                     "attn_implementation", "per_device_batch_size", "pack_length", "packing")


def fingerprint(spec: TrainSpec, size: dict, data_sha: str) -> str:
    """What a saved state must match to be resumed: data, hyperparameters, template, seed."""
    keep = {k: v for k, v in size.items() if k not in NOT_FINGERPRINTED}
    blob = json.dumps([data_sha, keep, spec.template, spec.seed], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def latest_checkpoint(work_dir: Path) -> Path | None:
    done = sorted(p for p in work_dir.glob("step-*") if (p / STATE_FILE).is_file())
    return done[-1] if done else None


class _SignalFlag:
    """Remembers the first SIGTERM/SIGUSR1; the loop saves and exits at the next step boundary."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self):
        self.signum = 0
        self._old = {}

    def __enter__(self):
        for s in self.SIGNALS:
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread (e.g. inside some test runners)
                pass
        return self

    def _handle(self, signum, frame):
        if not self.signum:
            self.signum = signum
            print(f"alpagasus.training: got signal {signum}; saving at the end of this step",
                  file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old)


# --- the training loop -------------------------------------------------------------------------

def train(spec: TrainSpec) -> dict:
    """Train one (variant, size); returns the train log written into the output directory.

    Raises ``TrainingInterrupted`` (a ``SystemExit`` with code 128 + signal) after saving the
    state when SIGTERM or SIGUSR1 arrives; before the first step there is nothing to save.
    """
    # Handlers first: a signal during a long setup (loading 13B) must not kill without a trace.
    with _SignalFlag() as flag:
        return _train(spec, flag)


def _train(spec: TrainSpec, flag: "_SignalFlag") -> dict:
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm
    from transformers import GenerationConfig, get_scheduler

    size = spec.resolved_size()
    if spec.threads:
        torch.set_num_threads(int(spec.threads))
    cuda = torch.cuda.is_available()
    accelerator = Accelerator(
        mixed_precision="bf16" if (size["bf16"] and cuda) else "no",
        cpu=not cuda,
    )
    main = accelerator.is_main_process
    world = accelerator.num_processes
    device_type = accelerator.device.type
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    set_seed(spec.seed)
    # Where each rank runs (the Slurm node name when there is one): logged, and kept in the log.
    node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
    log.info("rank %d of %d on %s (%s)", accelerator.process_index, world, node, accelerator.device)
    if world > 1:
        from accelerate.utils import gather_object

        nodes = sorted(set(gather_object([node])))
    else:
        nodes = [node]

    work_dir = spec.resolved_work_dir()
    data_sha = sha256_file(spec.data)
    fp = fingerprint(spec, size, data_sha)

    records = load_records(spec.data)
    tokenizer = load_tokenizer(size, records, spec.template)
    attn = choose_attn_implementation(size["attn_implementation"], cuda)
    layout = "flat" if attn in FLASH_IMPLEMENTATIONS else "rows"
    mask_kind = "additive" if attn == "eager" else "bool"
    model = build_model(size, tokenizer, attn)
    if size["gradient_checkpointing"]:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    n_params = sum(p.numel() for p in model.parameters())
    n_embed = model.get_input_embeddings().weight.numel()
    tied = bool(getattr(model.config, "tie_word_embeddings", False))

    row_length = int(size["pack_length"] or size["max_length"])
    if row_length < int(size["max_length"]):
        raise ValueError(f"training size {spec.size_name!r}: pack_length {row_length} is shorter "
                         f"than max_length {size['max_length']} (a row must hold any example)")
    examples, data_stats = tokenize_records(
        records, tokenizer, size["max_length"], spec.template, source=str(spec.data)
    )
    del records
    lengths = [len(e) for e in examples]
    supervised = [e.n_supervised for e in examples]
    gb = int(size["global_batch_size"])
    rows_per_micro = int(size["per_device_batch_size"])
    nominal_accum = math.ceil(gb / (rows_per_micro * world))
    total_steps, steps_per_epoch = total_steps_for(len(examples), size)
    warmup_steps = math.ceil(total_steps * float(size["warmup_ratio"]))
    sampler = StepSampler(len(examples), gb, spec.seed)

    decay, no_decay = [], []
    for name, p in model.named_parameters():
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
    scheduler = get_scheduler(
        size["lr_scheduler"], optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    # Not prepared: accelerate would step a prepared scheduler once per process per step.
    accelerator.register_for_checkpointing(scheduler)

    history: list[dict] = []
    start_step, elapsed, resumed_from = 0, 0.0, []
    ckpt = latest_checkpoint(work_dir) if work_dir.is_dir() else None
    if ckpt is not None:
        state = json.loads((ckpt / STATE_FILE).read_text())
        if state.get("fingerprint") != fp:
            if main:
                log.warning("%s: saved state is for other data or settings; starting from step 0", ckpt)
                shutil.rmtree(work_dir, ignore_errors=True)
            accelerator.wait_for_everyone()
        else:
            try:
                accelerator.load_state(str(ckpt))
            except Exception as exc:
                saved_world = state.get("world_size")
                hint = (f" It was saved by {saved_world} process(es) ({state.get('distributed_type')}); this run "
                        f"has {world} ({accelerator.distributed_type.name}): rerun with {saved_world} GPU(s) to "
                        f"resume, or delete {work_dir} to start again from step 0."
                        if saved_world not in (None, world) else f" Delete {work_dir} to start again from step 0.")
                first_line = (str(exc).strip().splitlines() or [""])[0][:300]
                raise RuntimeError(f"{ckpt}: cannot load the saved training state ({type(exc).__name__}: "
                                   f"{first_line}).{hint}") from exc
            start_step = int(state["step"])
            history = state["history"]
            elapsed = float(state["elapsed_s"])
            resumed_from = state.get("resumed_from", []) + [start_step]
            if main:
                log.info("resuming %s from step %d (%s)", spec.output, start_step, ckpt)

    def save_state(step: int) -> None:
        final = work_dir / f"step-{step:08d}"
        tmp = work_dir / f".step-{step:08d}.tmp"
        if main:
            work_dir.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
        accelerator.wait_for_everyone()
        # Tied embeddings (the tiny model) make accelerate warn at every save that it dropped
        # lm_head.weight; the tie is rebuilt on load (the resume test checks the losses).
        logging.getLogger("accelerate.utils.other").setLevel(logging.ERROR)
        accelerator.save_state(str(tmp), safe_serialization=True)
        accelerator.wait_for_everyone()
        if main:
            state = {"step": step, "fingerprint": fp, "history": history, "elapsed_s": elapsed,
                     "resumed_from": resumed_from, "total_steps": total_steps, "world_size": world,
                     "distributed_type": accelerator.distributed_type.name}
            write_json(tmp / STATE_FILE, state, indent=None)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            for old in work_dir.glob("step-*"):
                if old != final:
                    shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()

    pad_id = tokenizer.pad_token_id
    model.train()
    stream = sys.stderr
    bar = tqdm(
        total=total_steps, initial=start_step, disable=not (main and spec.progress),
        desc=f"train {spec.variant}-{spec.size_name}".strip("-"), unit="step",
        mininterval=0.5 if stream.isatty() else 15.0, file=stream, dynamic_ncols=True,
    )
    if flag.signum and world == 1:  # stopped during setup: nothing new to save
        raise TrainingInterrupted(flag.signum, start_step)
    for step in range(start_step, total_steps):
        t0 = time.perf_counter()
        ids = sampler(step)
        plan = plan_step(ids, lengths, world_size=world, packing=bool(size["packing"]),
                         row_length=row_length, rows_per_micro=rows_per_micro)
        counts = step_token_counts(plan, lengths, supervised, layout)
        n_sup = counts["supervised"]
        loss_sum = torch.zeros((), device=accelerator.device)
        my_plan = plan[accelerator.process_index]
        for m, rows in enumerate(my_plan):
            batch = collate([[examples[i] for i in row] for row in rows], pad_id, layout,
                            mask=mask_kind, mask_dtype=torch.float32)
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            last = m == len(my_plan) - 1
            # DDP: reduce gradients once per step. FSDP must reduce-scatter every
            # micro-batch (no_sync there would hold unsharded gradients: 13B would not fit).
            sync_ctx = (accelerator.no_sync(model)
                        if world > 1 and not last and accelerator.distributed_type.name == "MULTI_GPU"
                        else contextlib.nullcontext())
            with sync_ctx:
                out = model(
                    input_ids=batch["input_ids"],
                    position_ids=batch["position_ids"],
                    attention_mask=batch.get("attention_mask"),
                    use_cache=False,
                )
                tok_loss = token_losses(out.logits, batch["targets"]).sum()
                # Sum over the global batch / its supervised tokens; x world because
                # DDP/FSDP average gradients over processes.
                accelerator.backward(tok_loss * (world / n_sup))
            loss_sum += tok_loss.detach()
        max_norm = size["max_grad_norm"]
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), float(max_norm) if max_norm else math.inf)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if world > 1:
            loss_sum = accelerator.reduce(loss_sum, reduction="sum")
        step_loss = float(loss_sum) / n_sup
        dt = time.perf_counter() - t0
        elapsed += dt
        history.append({
            "step": step + 1,
            "loss": round(step_loss, 6),
            "lr": scheduler.get_last_lr()[0],
            "grad_norm": round(float(grad_norm), 6),
            "examples": len(ids),
            "tokens": counts["tokens"],
            "supervised_tokens": n_sup,
            "slots": counts["slots"],
            "micro_batches": len(my_plan),
            "time_s": round(dt, 5),
        })
        bar.update(1)
        if main and (step % 10 == 0 or step + 1 == total_steps):
            bar.set_postfix(loss=f"{step_loss:.4f}", refresh=False)
        if not math.isfinite(step_loss):
            raise FloatingPointError(f"{spec.output}: loss is {step_loss} at step {step + 1}")

        stop = flag.signum
        if world > 1:  # all ranks must stop at the same step, or the others would hang
            t = torch.tensor([stop], device=accelerator.device)
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
            stop = int(t.item())
        done = step + 1
        if stop:
            save_state(done)
            bar.close()
            if main:
                log.warning("stopped by signal %d after step %d; state saved in %s", stop, done, work_dir)
            raise TrainingInterrupted(int(stop), done)
        if done % int(size["save_every_steps"]) == 0 and done < total_steps:
            save_state(done)
    bar.close()

    steps_tokens = sum(h["tokens"] for h in history)
    steps_slots = sum(h["slots"] for h in history)
    steps_sup = sum(h["supervised_tokens"] for h in history)
    mem = peak_memory_mb(device_type)
    if world > 1 and device_type == "cuda":
        t = torch.tensor([mem["gpu_allocated_mb"], mem["gpu_reserved_mb"]], device=accelerator.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        mem["gpu_allocated_mb"], mem["gpu_reserved_mb"] = (float(x) for x in t.tolist())
    train_log = {
        "variant": spec.variant,
        "size": spec.size_name,
        "data": str(spec.data),
        "data_sha256": data_sha,
        **data_stats,
        "n_parameters": n_params,
        # Parameters used in matmuls (for FLOPs): all but the input embedding lookup, unless
        # it is tied to the output layer.
        "n_matmul_parameters": n_params if tied else n_params - n_embed,
        "mean_squared_length": sum(n * n for n in lengths) / len(lengths),
        "base_model": size["base_model"],
        "template": spec.template,
        "seed": spec.seed,
        "hyperparameters": {k: size[k] for k in (
            "epochs", "max_steps", "learning_rate", "global_batch_size", "per_device_batch_size",
            "max_length", "pack_length", "warmup_ratio", "weight_decay", "lr_scheduler",
            "adam_betas", "adam_eps", "max_grad_norm", "bf16", "gradient_checkpointing", "packing")},
        "total_steps": total_steps,
        "steps_per_epoch": steps_per_epoch,
        "warmup_steps": warmup_steps,
        "nominal_gradient_accumulation": nominal_accum,
        "micro_batches_per_step_mean": sum(h["micro_batches"] for h in history) / max(1, len(history)),
        "attn_implementation": attn,
        "layout": layout,
        "row_length": row_length,
        "device_type": device_type,
        "device_count": world,
        "nodes": nodes,
        "world_size": world,
        "mixed_precision": accelerator.mixed_precision,
        "threads": torch.get_num_threads(),
        "tokens_seen": steps_tokens,
        "supervised_tokens_seen": steps_sup,
        "token_slots_computed": steps_slots,
        "useful_token_fraction": steps_tokens / max(1, steps_slots),
        "supervised_token_fraction": steps_sup / max(1, steps_slots),
        "wall_time_s": round(elapsed, 3),
        "tokens_per_s": steps_tokens / elapsed if elapsed else None,
        "peak_memory_mb": mem,
        "resumed_from_steps": resumed_from,
        "final_loss": history[-1]["loss"] if history else None,
        "versions": _versions(),
        "steps": history,
    }

    accelerator.wait_for_everyone()
    if not spec.save_model:
        if main:
            shutil.rmtree(work_dir, ignore_errors=True)
        return train_log
    state_dict = accelerator.get_state_dict(model)
    if main:
        unwrapped = accelerator.unwrap_model(model)
        if size["bf16"]:
            # bf16 halves the checkpoint; generation runs in bf16 anyway.
            state_dict = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in state_dict.items()}
            unwrapped.config.dtype = torch.bfloat16
        unwrapped.config.use_cache = True
        gen_cfg = GenerationConfig(
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, do_sample=False,
        )
        with atomic_path(spec.output) as tmp:
            unwrapped.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            gen_cfg.save_pretrained(tmp)
            write_json(tmp / "train_log.json", train_log)
            try:
                from .plots_training import plot_loss_curve

                plot_loss_curve(train_log, tmp / "loss_curve.png")
            except Exception as exc:  # a plot must never lose a finished model
                log.warning("loss-curve plot failed: %s", exc)
        shutil.rmtree(work_dir, ignore_errors=True)
        log.info("%s: %d steps, final loss %.4f, %.0f tokens/s, useful-token fraction %.3f",
                 spec.output, total_steps, train_log["final_loss"] or float("nan"),
                 train_log["tokens_per_s"] or 0.0, train_log["useful_token_fraction"])
    accelerator.wait_for_everyone()
    return train_log


def _versions() -> dict:
    import accelerate
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "accelerate": accelerate.__version__}


# --- launching: in-process on CPU / 1 GPU, `accelerate launch` with FSDP on several -------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def num_processes(requested_gpus: int) -> int:
    """GPUs to use: those asked for, capped by those visible (0 on a CPU-only machine)."""
    try:
        import torch

        visible = torch.cuda.device_count()
    except Exception:
        visible = 0
    return min(int(requested_gpus or 0), visible)


def _job_nodes() -> list[str]:
    nodelist = os.environ.get("SLURM_JOB_NODELIST")
    if not nodelist:
        info = subprocess.run(["scontrol", "show", "job", os.environ["SLURM_JOB_ID"]],
                              capture_output=True, text=True, check=True).stdout
        nodelist = info.split(" NodeList=")[1].split()[0]
    return subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                          check=True).stdout.split()


def _node_address(node: str) -> str:
    """The address Slurm itself reaches ``node`` at (its NodeAddr), so the other nodes can reach
    the rendezvous there too; the node name where scontrol does not say."""
    try:
        info = subprocess.run(["scontrol", "show", "node", node], capture_output=True, text=True,
                              check=True, timeout=30).stdout
        addr = info.split("NodeAddr=", 1)[1].split()[0]
        return addr or node
    except (OSError, subprocess.SubprocessError, IndexError):
        return node


def srun_environment(env: dict) -> dict:
    """``env`` for an ``srun`` that must see the whole job: without the enclosing step's SLURM_*
    variables (inside the plugin's ``srun -n1`` step SLURM_NNODES=1, SLURM_NODELIST=<one node>
    and SLURM_NTASKS=1 would make srun refuse a second node), keeping the job id and config,
    from which srun asks the controller for the job's allocation."""
    keep = ("SLURM_JOB_ID", "SLURM_CONF")
    return {k: v for k, v in env.items() if not k.startswith("SLURM_") or k in keep}


def launch_command(spec_path: Path, n_per_node: int, accelerate_config: str | None, nodes: int = 1) -> list[str]:
    """``accelerate launch`` for one node, or wrapped in ``srun`` (one launcher per node) for several.

    The multi-node form is for a Slurm job (docs/cluster.md): the Slurm plugin runs the rule
    under ``srun -n1``, so the inner ``srun`` needs ``--overlap`` and explicit node counts.
    """
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if accelerate_config:
        cmd += ["--config_file", str(accelerate_config)]
    if nodes <= 1:
        return cmd + ["--num_processes", str(n_per_node), "--num_machines", "1",
                      "--main_process_port", str(_free_port()),
                      "-m", "alpagasus.training", "--spec", str(spec_path)]
    import shlex

    head = _node_address(_job_nodes()[0])
    # Static rendezvous: node 0 (SLURM_NODEID 0, where this runs) hosts the store at its NodeAddr
    # and the others connect to it. (c10d with accelerate's same_network would rendezvous at
    # each node's own localhost, and without it every agent that thinks it is the host races.)
    cmd += ["--num_processes", str(nodes * n_per_node), "--num_machines", str(nodes),
            "--rdzv_backend", "static", "--same_network",
            "--main_process_ip", head, "--main_process_port", str(_free_port()),
            "-m", "alpagasus.training", "--spec", str(spec_path)]
    # $SLURM_NODEID is expanded by each task, hence the shell.
    inner = " ".join(shlex.quote(c) for c in cmd).replace(
        "--num_machines", '--machine_rank "$SLURM_NODEID" --num_machines', 1)
    # Counts given explicitly: srun runs with the step's SLURM_* removed (srun_environment).
    # --kill-on-bad-exit: a node whose launcher dies takes the others down with it, instead of
    # leaving them waiting at the rendezvous until the job's time limit.
    return ["srun", f"--jobid={os.environ['SLURM_JOB_ID']}", f"--nodes={nodes}", f"--ntasks={nodes}",
            "--ntasks-per-node=1", "--overlap", "--kill-on-bad-exit=1", "bash", "-c", inner]


def launch(spec: TrainSpec, gpus: int = 0, accelerate_config: str | None = None,
           log_file: str | os.PathLike | None = None, nodes: int = 1) -> int:
    """Run ``train(spec)``: here, or under ``accelerate launch`` when more than one GPU is usable.

    ``gpus`` is per node. Returns the exit status (0, or non-zero when training was stopped and
    saved). SIGTERM, SIGUSR1 (Slurm's usual time-limit warning) and SIGINT received here are
    passed on to the launcher, which passes them to every rank; the ranks save and exit.
    """
    n = num_processes(gpus)
    inside_launcher = "LOCAL_RANK" in os.environ
    nodes = int(nodes or 1) if os.environ.get("SLURM_JOB_ID") else 1
    if not inside_launcher:
        print(f"alpagasus.training: CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')} "
              f"SLURM_JOB_ID={os.environ.get('SLURM_JOB_ID', '-')} gpus_requested={gpus} nodes={nodes} "
              f"world_size={max(n, 1) * nodes}", file=sys.stderr, flush=True)
    if (n <= 1 and nodes <= 1) or inside_launcher:
        try:
            train(spec)
            return 0
        except TrainingInterrupted as exc:
            return int(exc.code)
    work_dir = spec.resolved_work_dir()
    work_dir.mkdir(parents=True, exist_ok=True)
    spec_path = work_dir / "spec.json"
    write_json(spec_path, dataclasses.asdict(spec))
    cmd = launch_command(spec_path, max(n, 1), accelerate_config, nodes)
    # The workflow's environments do not install this package (the Snakefile puts the checkout's
    # src/ on sys.path), so the launched processes get the same source tree explicitly.
    src = str(Path(__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])),
        # torch's launcher dies on SIGUSR1 (Slurm's time-limit warning) without waiting for the
        # ranks unless told to handle it; then it passes it on and gives them time to save.
        "TORCHELASTIC_SIGNALS_TO_HANDLE": "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1",
    }
    if nodes > 1:
        env = srun_environment(env)
    out = open(log_file, "a") if log_file else None
    try:
        # Its own process group, so that a signal reaches the launcher and every rank at once.
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT if out else None, env=env,
                                start_new_session=True)

        def forward(signum, frame):
            # The launcher passes it to the ranks (each in a session of its own) and waits for
            # them (30 s) to save and exit.
            try:
                os.killpg(proc.pid, signum)
            except ProcessLookupError:
                pass

        old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)}
        try:
            return proc.wait()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
    finally:
        if out:
            out.close()


@contextlib.contextmanager
def redirect_output(log_file: str | os.PathLike | None):
    """Send this process's stdout/stderr (file descriptors, so child processes and C code too)
    and Python logging to ``log_file``, appending; a no-op when ``log_file`` is None."""
    if not log_file:
        yield
        return
    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_file, "a", encoding="utf-8") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                            force=True)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


# --- command line ------------------------------------------------------------------------------

def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def spec_from_config(config_files: list[str], size_name: str, variant: str, data: str, output: str,
                     threads: int | None = None) -> tuple[TrainSpec, dict]:
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
    spec = TrainSpec(data=data, output=output, size=size, size_name=size_name, variant=variant,
                     template=training.get("template"), seed=int(training.get("seed", 42)), threads=threads)
    return spec, size.get("resources", {})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m alpagasus.training", description=__doc__.split("\n")[0])
    p.add_argument("--spec", help="a JSON TrainSpec (written by launch())")
    p.add_argument("--config", action="append", default=[], help="config file(s), later ones override")
    p.add_argument("--size")
    p.add_argument("--variant", default="")
    p.add_argument("--data")
    p.add_argument("--output")
    p.add_argument("--threads", type=int)
    p.add_argument("--launch", action="store_true",
                   help="use accelerate launch with the size's fsdp_config when several GPUs are visible")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.spec:
        spec = TrainSpec.from_json(args.spec)
        resources = {}
    else:
        if not (args.config and args.size and args.data and args.output):
            p.error("give --spec, or --config, --size, --data and --output")
        spec, resources = spec_from_config(args.config, args.size, args.variant, args.data, args.output,
                                           args.threads)
    if args.launch:
        return launch(spec, resources.get("gpus", 0), spec.size.get("fsdp_config"))
    try:
        train(spec)
    except TrainingInterrupted as exc:
        return int(exc.code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
