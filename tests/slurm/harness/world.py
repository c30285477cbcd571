"""One rank of the harness's distributed job: join the process group, agree on the world size."""
import os

import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
t = torch.ones(1)
dist.all_reduce(t)
if rank == 0:
    print(f"world_size={world} all_reduce={int(t.item())} local_world_size={os.environ['LOCAL_WORLD_SIZE']}", flush=True)
dist.destroy_process_group()
