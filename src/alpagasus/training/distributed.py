"""What the ranks of a multi-process run agree on, and FSDP on CPU for the tests."""

from __future__ import annotations

import os


def use_fsdp_on_cpu(accelerator) -> bool:
    """Shard with FSDP on CPU processes (gloo), where the launcher environment asks for FSDP.

    accelerate applies FSDP only to GPU-type runs (``accelerate launch`` runs an FSDP config
    with ``use_cpu`` as one plain process), so the state of this CPU run is switched to FSDP with
    the plugin read from the same ``FSDP_*`` variables the launcher sets. From there the run goes
    through accelerate's own FSDP code: prepare, clip, sharded save and load, full state dict.
    This is how the FSDP path is tested without a GPU (tests/test_training_fsdp.py). torch's
    FSDP1 does not run on CPU; FSDP2 (``fsdp_version: 2``) does.
    """
    if accelerator.device.type != "cpu" or accelerator.num_processes < 2:
        return False
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true":
        return False
    from accelerate import FullyShardedDataParallelPlugin
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    plugin = FullyShardedDataParallelPlugin()
    if plugin.fsdp_version != 2:
        raise RuntimeError("FSDP on CPU processes needs fsdp_version 2 (FSDP_VERSION=2): torch's FSDP1 "
                           "runs on GPUs only")
    # Both singletons: AcceleratorState copies PartialState's view when it is re-created.
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    accelerator.state.distributed_type = DistributedType.FSDP
    accelerator.state.fsdp_plugin = plugin
    return True


def gather_nodes(accelerator, node: str) -> list[str]:
    """The nodes of every rank, sorted (the Slurm node names when there are some)."""
    if accelerator.num_processes == 1:
        return [node]
    from accelerate.utils import gather_object

    return sorted(set(gather_object([node])))


def agree_on_stop(accelerator, signum: int) -> int:
    """The signal any rank got (0 for none): all ranks must stop at the same step, or the others
    would hang in the next collective."""
    if accelerator.num_processes == 1:
        return signum
    import torch

    t = torch.tensor([signum], device=accelerator.device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return int(t.item())


def max_over_ranks(accelerator, values: list[float]) -> list[float]:
    if accelerator.num_processes == 1:
        return values
    import torch

    t = torch.tensor(values, device=accelerator.device, dtype=torch.float64)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return [float(x) for x in t.tolist()]
