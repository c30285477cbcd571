"""Fine-tuning with Stanford Alpaca's recipe: one code path for a laptop CPU and a 4xA100 FSDP job.

What is kept from the recipe (../shared/PAPER.md section 2): Alpaca's templates, loss on the
response + eos only, each example truncated at ``max_length``, AdamW, warmup ratio, cosine
schedule, weight decay, gradient clipping at 1.0 (the HF Trainer default Alpaca ran with), and
a global batch of ``global_batch_size`` *examples* per optimizer step whatever the device count.
What differs, and why: examples are packed with exact per-example attention (``alpagasus.training.packing``),
and a step's loss is normalised over the whole global batch (docs/training.md).

The package, in the order a run goes through it:

* ``spec``: what a run is (``TrainSpec``, the size's defaults, reading it from config files);
* ``launcher``: where it runs (in-process, ``accelerate launch``, ``srun`` per node);
* ``run``: setting it up (``RunState``: accelerator, data, model, optimizer, scheduler);
  ``model`` (tokenizer, weights, LoRA), ``schedule`` (data order, learning rate);
* ``checkpoint``: resuming from and saving the full state;
* ``loop``: ``train`` and ``train_step``;
* ``export``: the train log and the output directory (a standard Hugging Face model).

Signals (SIGTERM, SIGUSR1) mean the same here as everywhere else: ``alpagasus.core.stop_signals``.
"""

from alpagasus.training.checkpoint import STATE_FILE, latest_checkpoint
from alpagasus.training.launcher import launch, launch_command, num_processes, srun_environment
from alpagasus.training.loop import TrainingInterrupted, train, train_step
from alpagasus.training.run import RunState, fingerprint, setup
from alpagasus.training.schedule import StepSampler, total_steps_for
from alpagasus.training.spec import SIZE_DEFAULTS, TrainSpec, spec_from_config

__all__ = [
    "STATE_FILE", "SIZE_DEFAULTS", "RunState", "StepSampler", "TrainSpec", "TrainingInterrupted", "fingerprint",
    "latest_checkpoint", "launch", "launch_command", "num_processes", "setup", "spec_from_config",
    "srun_environment", "total_steps_for", "train", "train_step",
]
