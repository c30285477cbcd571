"""The training loop: set up, resume, then one optimizer step at a time, saving as it goes.

Step ``s`` takes the global batch the sampler gives it, packs it into rows spread over the
ranks, and runs each rank's rows a micro-batch at a time; the loss is the sum of token losses
over the whole global batch divided by its supervised tokens, whatever the split.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time

from alpagasus.training.packing import collate, plan_step, step_token_counts, token_losses
from alpagasus.core.stop_signals import StopFlag
from alpagasus.training.checkpoint import keep_only_trainable_weights, resume, save_state
from alpagasus.training.distributed import agree_on_stop
from alpagasus.training.export import LOGGED_HYPERPARAMETERS, export, peak_memory_mb, summarize
from alpagasus.training.run import RunState, setup
from alpagasus.training.spec import TrainSpec
from alpagasus.training.tracking import Tracking, read_run_ids, step_metrics, write_run_ids

log = logging.getLogger("alpagasus.training")


class TrainingInterrupted(SystemExit):
    """A signal stopped training after its state was saved; the exit code is 128 + signal."""

    def __init__(self, signum: int, step: int):
        super().__init__(128 + signum)
        self.signum = signum
        self.step = step


def train(spec: TrainSpec) -> dict:
    """Train one (variant, size); returns the train log written into the output directory.

    Raises ``TrainingInterrupted`` after saving the state when SIGTERM or SIGUSR1 arrives;
    before the first step there is nothing to save.
    """
    with StopFlag() as flag:
        run = setup(spec)
        if run.lora:
            keep_only_trainable_weights(run)
        resume(run)
        if flag.signum and run.world == 1:  # stopped during setup: nothing new to save
            raise TrainingInterrupted(flag.signum, run.start_step)
        run.model.train()
        tracking = start_tracking(run)
        try:
            train_log = _steps(run, flag, tracking)
        except BaseException:
            tracking.finish(failed=True)  # a resumed training goes on in the same runs
            raise
        tracking.finish()
        return train_log


def start_tracking(run: RunState) -> Tracking:
    """The trackers training.report_to names, on the main process only; a resumed training goes
    on in the runs it started."""
    spec = run.spec
    tracking = Tracking(spec.tracking if run.main else None)
    if tracking.active:
        config = {"variant": spec.variant, "size": spec.size_name, "seed": spec.seed, "data": str(spec.data),
                  "data_sha256": run.data_sha, "base_model": run.size["base_model"], "template": spec.template,
                  "world_size": run.world, "total_steps": run.total_steps,
                  "hyperparameters": {k: run.size[k] for k in LOGGED_HYPERPARAMETERS}}
        ids = tracking.start(f"{spec.variant}-{spec.size_name}", config, read_run_ids(run.work_dir))
        run.work_dir.mkdir(parents=True, exist_ok=True)
        write_run_ids(run.work_dir, ids)
    return tracking


def _steps(run: RunState, flag: StopFlag, tracking: Tracking) -> dict:
    spec = run.spec
    bar = progress_bar(run)
    for step in range(run.start_step, run.total_steps):
        record = train_step(run, step)
        run.history.append(record)
        if tracking.active:
            tracking.log(step_metrics(record, peak_memory_mb(run.accelerator.device.type)), record["step"])
        bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}", refresh=False)
        bar.update(1)
        if not math.isfinite(record["loss"]):
            raise FloatingPointError(f"{spec.output}: loss is {record['loss']} at step {step + 1}")
        done = step + 1
        stop = agree_on_stop(run.accelerator, flag.signum)
        if stop:
            save_state(run, done)
            bar.close()
            if run.main:
                log.warning("stopped by signal %d after step %d; state saved in %s", stop, done, run.work_dir)
            raise TrainingInterrupted(stop, done)
        if done % int(run.size["save_every_steps"]) == 0 and done < run.total_steps:
            save_state(run, done)
    bar.close()
    train_log = summarize(run)
    export(run, train_log)
    if tracking.active:
        tracking.summary({f"final/{k}": train_log[k] for k in ("final_loss", "tokens_per_s", "wall_time_s",
                                                                 "tokens_seen") if train_log.get(k) is not None})
        if spec.save_model:
            write_run_ids(spec.output, tracking.run_ids)  # for the results rules (win rates)
    return train_log


def train_step(run: RunState, step: int) -> dict:
    """One optimizer step (0-based ``step``); returns its record for the train log."""
    import torch

    acc, size = run.accelerator, run.size
    t0 = time.perf_counter()
    ids = run.sampler(step)
    plan = plan_step(ids, run.lengths, world_size=run.world, packing=bool(size["packing"]),
                     row_length=run.row_length, rows_per_micro=int(size["per_device_batch_size"]))
    counts = step_token_counts(plan, run.lengths, run.supervised, run.layout)
    n_sup = counts["supervised"]
    loss_sum = torch.zeros((), device=acc.device)
    my_plan = plan[acc.process_index]
    for m, rows in enumerate(my_plan):
        batch = collate([[run.examples[i] for i in row] for row in rows], run.tokenizer.pad_token_id, run.layout,
                        mask=run.mask_kind, mask_dtype=torch.float32)
        batch = {k: v.to(acc.device) for k, v in batch.items()}
        last = m == len(my_plan) - 1
        # DDP: reduce gradients once per step. FSDP must reduce-scatter every micro-batch
        # (no_sync there would hold unsharded gradients: 13B would not fit).
        sync_ctx = (acc.no_sync(run.model)
                    if run.world > 1 and not last and acc.distributed_type.name == "MULTI_GPU"
                    else contextlib.nullcontext())
        with sync_ctx:
            out = run.model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                            attention_mask=batch.get("attention_mask"), use_cache=False)
            tok_loss = token_losses(out.logits, batch["targets"]).sum()
            # Sum over the global batch / its supervised tokens; x world because DDP/FSDP
            # average gradients over processes.
            acc.backward(tok_loss * (run.world / n_sup))
        loss_sum += tok_loss.detach()
    max_norm = size["max_grad_norm"]
    grad_norm = acc.clip_grad_norm_(run.model.parameters(), float(max_norm) if max_norm else math.inf)
    lr = run.scheduler.get_last_lr()[0]  # the rate this step's update uses
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    if run.world > 1:
        loss_sum = acc.reduce(loss_sum, reduction="sum")
    step_loss = float(loss_sum) / n_sup
    dt = time.perf_counter() - t0
    run.elapsed += dt
    return {
        "step": step + 1,
        "loss": round(step_loss, 6),
        "lr": lr,
        "grad_norm": round(float(grad_norm), 6),
        "examples": len(ids),
        "tokens": counts["tokens"],
        "supervised_tokens": n_sup,
        "slots": counts["slots"],
        "micro_batches": len(my_plan),
        "time_s": round(dt, 5),
    }


def progress_bar(run: RunState):
    from tqdm.auto import tqdm

    stream = sys.stderr
    return tqdm(total=run.total_steps, initial=run.start_step, disable=not (run.main and run.spec.progress),
                desc=f"train {run.spec.variant}-{run.spec.size_name}".strip("-"), unit="step",
                mininterval=0.5 if stream.isatty() else 15.0, file=stream, dynamic_ncols=True)
