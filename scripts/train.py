"""Snakemake `train` rule: one (variant, size) -> a checkpoint directory (alpagasus.training)."""

import sys
from pathlib import Path

from alpagasus.core.logs import redirect_output
from alpagasus.training import TrainSpec, launch
from alpagasus.training.tracking import settings as tracking_settings

sm = snakemake  # noqa: F821  (injected by Snakemake)
size = sm.config["training"]["sizes"][sm.wildcards.size]
fsdp_config = size["fsdp_config"]
if fsdp_config and not Path(fsdp_config).is_absolute():
    fsdp_config = str(Path(sm.scriptdir).parent / fsdp_config)  # relative to the repo

with redirect_output(sm.log[0]):
    spec = TrainSpec(
        data=sm.input.data,
        output=sm.output[0],
        # A GGUF base_model (the model's identity, in hparams) trains from its conversion.
        size={**size, **sm.params.hparams, **({"base_model": sm.input.base_model} if sm.input.base_model else {})},
        size_name=sm.wildcards.size,
        variant=sm.wildcards.variant,
        template=sm.params.template,
        seed=int(sm.params.seed),
        threads=sm.threads,
        # Not a param (it changes nothing in the model): compared with the memory estimate.
        mem_mb=int(sm.resources.mem_mb),
        # Read here, not a param: reporting a training elsewhere changes nothing in the model.
        tracking=tracking_settings(sm.config["training"], sm.config["results_dir"]),
    )
    # In-process on CPU or one GPU; `accelerate launch` with the FSDP config on several GPUs
    # (under `srun`, one launcher per node, when a Slurm job has several nodes).
    resources = size["resources"]
    code = launch(spec, gpus=int(resources["gpus"]), accelerate_config=fsdp_config, nodes=int(resources["nodes"]))
sys.exit(code)
