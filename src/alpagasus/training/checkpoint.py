"""Saving a run's full state and resuming from it.

Every ``save_every_steps`` optimizer steps, and on a stop signal, the state (model, optimizer,
scheduler, RNG through accelerate; step, log so far and elapsed time in ``trainer_state.json``)
goes to ``<work dir>/step-N/``, written as ``.step-N.tmp`` and renamed; older ones are removed.
A state for other data or settings (its fingerprint differs) is discarded; one that cannot be
loaded is an error that names the way out, never a silent restart.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from alpagasus.core.io import write_json
from alpagasus.training.run import RunState

log = logging.getLogger("alpagasus.training")

STATE_FILE = "trainer_state.json"


def latest_checkpoint(work_dir: Path) -> Path | None:
    done = sorted(p for p in work_dir.glob("step-*") if (p / STATE_FILE).is_file())
    return done[-1] if done else None


def keep_only_trainable_weights(run: RunState) -> None:
    """With LoRA a saved state holds the adapter, not a copy of the frozen base weights
    (which the rerun rebuilds from the base model)."""
    trainable = {n for n, p in run.accelerator.unwrap_model(run.model).named_parameters() if p.requires_grad}

    def hook(models, weights, output_dir):
        for i, sd in enumerate(weights):
            weights[i] = {k: v for k, v in sd.items() if k in trainable}

    run.accelerator.register_save_state_pre_hook(hook)


def resume(run: RunState) -> None:
    """Load the last saved state, if there is one for this run; sets start_step, history, elapsed."""
    acc, work_dir = run.accelerator, run.work_dir
    ckpt = latest_checkpoint(work_dir) if work_dir.is_dir() else None
    if ckpt is None:
        return
    state = json.loads((ckpt / STATE_FILE).read_text())
    if state.get("fingerprint") != run.fingerprint:
        if run.main:
            log.warning("%s: saved state is for other data or settings; starting from step 0", ckpt)
            shutil.rmtree(work_dir, ignore_errors=True)
        acc.wait_for_everyone()
        return
    try:
        acc.load_state(str(ckpt), **({"strict": False} if run.lora else {}))
    except Exception as exc:
        saved_world = state.get("world_size")
        hint = (f" It was saved by {saved_world} process(es) ({state.get('distributed_type')}); this run "
                f"has {run.world} ({acc.distributed_type.name}): rerun with {saved_world} GPU(s) to "
                f"resume, or delete {work_dir} to start again from step 0."
                if saved_world not in (None, run.world) else f" Delete {work_dir} to start again from step 0.")
        first_line = (str(exc).strip().splitlines() or [""])[0][:300]
        raise RuntimeError(f"{ckpt}: cannot load the saved training state ({type(exc).__name__}: "
                           f"{first_line}).{hint}") from exc
    run.start_step = int(state["step"])
    run.history = state["history"]
    run.elapsed = float(state["elapsed_s"])
    run.resumed_from = state.get("resumed_from", []) + [run.start_step]
    if run.main:
        log.info("resuming %s from step %d (%s)", run.spec.output, run.start_step, ckpt)


def save_state(run: RunState, step: int) -> None:
    acc, work_dir = run.accelerator, run.work_dir
    final = work_dir / f"step-{step:08d}"
    tmp = work_dir / f".step-{step:08d}.tmp"
    if run.main:
        work_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    acc.wait_for_everyone()
    # Tied embeddings (the tiny model) make accelerate warn at every save that it dropped
    # lm_head.weight; the tie is rebuilt on load (the resume test checks the losses).
    logging.getLogger("accelerate.utils.other").setLevel(logging.ERROR)
    acc.save_state(str(tmp), safe_serialization=True)
    acc.wait_for_everyone()
    if run.main:
        state = {"step": step, "fingerprint": run.fingerprint, "history": run.history, "elapsed_s": run.elapsed,
                 "resumed_from": run.resumed_from, "total_steps": run.total_steps, "world_size": run.world,
                 "distributed_type": acc.distributed_type.name}
        write_json(tmp / STATE_FILE, state, indent=None)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in work_dir.glob("step-*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()
