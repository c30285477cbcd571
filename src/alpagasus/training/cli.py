"""``python -m alpagasus.training``: one run from a spec file (what the launchers start) or from
config files (by hand)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from alpagasus.core.config import filled
from alpagasus.training.launcher import accelerate_command, launch
from alpagasus.training.loop import TrainingInterrupted, train
from alpagasus.training.spec import TrainSpec, spec_from_config


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m alpagasus.training",
                                description="Fine-tune one (variant, size) with Stanford Alpaca's recipe.")
    p.add_argument("--spec", help="a JSON TrainSpec (written by launch())")
    p.add_argument("--config", action="append", default=[], help="config file(s), later ones override")
    p.add_argument("--size")
    p.add_argument("--variant", default="")
    p.add_argument("--data")
    p.add_argument("--output")
    p.add_argument("--threads", type=int)
    p.add_argument("--launch", action="store_true",
                   help="use accelerate launch with the size's fsdp_config when several GPUs are visible")
    node = p.add_argument_group("one node of a multi-node launch (started by srun, see launcher.py)")
    node.add_argument("--launch-node", action="store_true")
    node.add_argument("--nodes", type=int)
    node.add_argument("--processes-per-node", type=int)
    node.add_argument("--head")
    node.add_argument("--port", type=int)
    node.add_argument("--accelerate-config")
    args = p.parse_args(argv)
    if args.launch_node:
        cmd = accelerate_command(args.spec, args.processes_per_node, args.accelerate_config, port=args.port,
                                 nodes=args.nodes, machine_rank=int(os.environ["SLURM_NODEID"]), head=args.head)
        os.execv(cmd[0], cmd)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.spec:
        spec = TrainSpec.from_json(args.spec)
        resources = filled("training.sizes.*", spec.size)["resources"]
    else:
        if not (args.config and args.size and args.data and args.output):
            p.error("give --spec, or --config, --size, --data and --output")
        spec, resources = spec_from_config(args.config, args.size, args.variant, args.data, args.output,
                                           args.threads)
    if args.launch:
        return launch(spec, resources["gpus"], spec.size.get("fsdp_config"))
    try:
        train(spec)
    except TrainingInterrupted as exc:
        return int(exc.code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
