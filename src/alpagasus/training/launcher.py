"""Starting a run: in this process on CPU or one GPU, ``accelerate launch`` on several GPUs, and
``srun`` with one launcher per node on several nodes of a Slurm job. Commands are argument lists."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path

from alpagasus.core.io import write_json
from alpagasus.core.stop_signals import LAUNCHER_ENV, forwarding_to_group
from alpagasus.training.loop import TrainingInterrupted, train
from alpagasus.training.spec import TrainSpec


def free_port() -> int:
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


def accelerate_command(spec_path: Path | str, n_per_node: int, accelerate_config: str | None, *,
                       port: int, nodes: int = 1, machine_rank: int = 0, head: str | None = None) -> list[str]:
    """``accelerate launch`` of the training module on one node (of ``nodes``)."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if accelerate_config:
        cmd += ["--config_file", str(accelerate_config)]
    if nodes <= 1:
        cmd += ["--num_processes", str(n_per_node), "--num_machines", "1", "--main_process_port", str(port)]
    else:
        # Static rendezvous: node 0 hosts the store at its NodeAddr and the others connect to it.
        # (c10d with accelerate's same_network would rendezvous at each node's own localhost,
        # and without it every agent that thinks it is the host races.)
        cmd += ["--num_processes", str(nodes * n_per_node), "--machine_rank", str(machine_rank),
                "--num_machines", str(nodes), "--rdzv_backend", "static", "--same_network",
                "--main_process_ip", str(head), "--main_process_port", str(port)]
    return cmd + ["-m", "alpagasus.training", "--spec", str(spec_path)]


def launch_command(spec_path: Path, n_per_node: int, accelerate_config: str | None, nodes: int = 1) -> list[str]:
    """``accelerate launch`` for one node, or ``srun`` of one launcher per node for several.

    The multi-node form is for a Slurm job (docs/cluster.md): the Slurm plugin runs the rule
    under ``srun -n1``, so the inner ``srun`` needs ``--overlap`` and explicit node counts. Each
    task runs ``python -m alpagasus.training --launch-node``, which reads its ``SLURM_NODEID``
    and replaces itself with that node's ``accelerate launch``.
    """
    port = free_port()
    if nodes <= 1:
        return accelerate_command(spec_path, n_per_node, accelerate_config, port=port)
    head = _node_address(_job_nodes()[0])
    node_launch = [sys.executable, "-m", "alpagasus.training", "--spec", str(spec_path), "--launch-node",
                   "--nodes", str(nodes), "--processes-per-node", str(n_per_node), "--head", head,
                   "--port", str(port)]
    if accelerate_config:
        node_launch += ["--accelerate-config", str(accelerate_config)]
    # Counts given explicitly: srun runs with the step's SLURM_* removed (srun_environment).
    # --kill-on-bad-exit: a node whose launcher dies takes the others down with it, instead of
    # leaving them waiting at the rendezvous until the job's time limit.
    return ["srun", f"--jobid={os.environ['SLURM_JOB_ID']}", f"--nodes={nodes}", f"--ntasks={nodes}",
            "--ntasks-per-node=1", "--overlap", "--kill-on-bad-exit=1", *node_launch]


def launch(spec: TrainSpec, gpus: int = 0, accelerate_config: str | None = None,
           log_file: str | os.PathLike | None = None, nodes: int = 1) -> int:
    """Run ``train(spec)``: here, or under ``accelerate launch`` when more than one GPU is usable.

    ``gpus`` is per node. Returns the exit status (0, or 128 + signal when training was stopped
    and saved). The stop signals received here are passed to the launcher, which passes them to
    every rank (``alpagasus.core.stop_signals``).
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
    src = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])),
           **LAUNCHER_ENV}
    if nodes > 1:
        env = srun_environment(env)
    out = open(log_file, "a") if log_file else None
    try:
        # Its own process group, so that a signal reaches the launcher and every rank at once.
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT if out else None, env=env,
                                start_new_session=True)
        with forwarding_to_group(proc.pid):
            return proc.wait()
    finally:
        if out:
            out.close()
