"""Which examples and which learning rate each optimizer step gets: pure functions of the
config, seed and step, so resuming needs no data-loader state."""

from __future__ import annotations

import math
import warnings


def total_steps_for(n_examples: int, size: dict) -> tuple[int, int]:
    """(optimizer steps, steps per epoch); ``max_steps`` wins over ``epochs``."""
    per_epoch = math.ceil(n_examples / size["global_batch_size"])
    if size["max_steps"]:
        return int(size["max_steps"]), per_epoch
    return max(1, math.ceil(per_epoch * size["epochs"])), per_epoch


def warmup_steps_for(total_steps: int, warmup_ratio: float) -> int:
    return math.ceil(total_steps * float(warmup_ratio))


class StepSampler:
    """Examples of optimizer step ``s``: epoch ``s // steps_per_epoch`` of a seeded shuffle.

    As with the HF Trainer (drop_last=False), an epoch's last batch may be smaller.
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


def make_scheduler(name: str, optimizer, warmup_steps: int, total_steps: int):
    """transformers' schedule ``name``, without its first warmup value.

    The HF schedules give step 1 a factor 0/warmup: the first optimizer step of every run would
    change nothing (in a 10-step run with one warmup step, a tenth of the run). Here step ``s``
    (1-based) uses the schedule's value at ``s`` of a run one step longer: step 1 trains at
    lr/warmup, the warmup reaches the full rate at step ``warmup``, and the decay keeps its shape.
    Without warmup the schedule is HF's unchanged.
    """
    from transformers import get_scheduler

    skip = 1 if warmup_steps > 0 else 0
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=warmup_steps,
                              num_training_steps=total_steps + skip)
    if skip:
        with warnings.catch_warnings():
            # "lr_scheduler.step() before optimizer.step()": deliberate, it skips the zero.
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
            scheduler.step()
    return scheduler
