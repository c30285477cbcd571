"""The launch commands are argument lists: one node's accelerate launch, and srun of one
launcher per node, each task reading its own node rank (no shell string to edit). Each argument
is read back by what consumes it: accelerate's own parser, our CLI's parser, srun's meaning."""
import socket
import sys
from pathlib import Path

import pytest
from accelerate.commands.launch import launch_command_parser

import alpagasus.training.launcher as launcher
from alpagasus.training.cli import main


def _accelerate(argv: list[str]):
    """What `accelerate launch` understands from ``argv`` (the interpreter, -m, the module, its args)."""
    assert argv[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    return launch_command_parser().parse_args(argv[3:])


def _can_bind(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _srun_options(cmd: list[str]) -> tuple[dict, list[str]]:
    """srun's own options (up to the program it runs) and the program's argv."""
    assert cmd[0] == "srun"
    program = next(i for i, c in enumerate(cmd) if not c.startswith("--") and i > 0)
    opts = dict(o.split("=", 1) if "=" in o else (o, None) for o in cmd[1:program])
    assert len(opts) == program - 1, "an srun option given twice"
    return opts, cmd[program:]


def test_several_nodes_run_one_launcher_per_node_each_with_its_own_rank(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setattr(launcher, "_job_nodes", lambda: ["node1", "node2", "node3"])
    asked = []
    monkeypatch.setattr(launcher, "_node_address", lambda node: asked.append(node) or f"10.0.0.{node[-1]}")
    cmd = launcher.launch_command(Path("/w/spec.json"), 4, "cfg.yaml", nodes=3)
    assert "bash" not in cmd and not any("$" in c for c in cmd)  # nothing for a shell to expand
    opts, program = _srun_options(cmd)
    assert opts == {
        "--jobid": "42",            # the job this runs in (its step's SLURM_* are removed)
        "--nodes": "3",             # every node asked for ...
        "--ntasks": "3",            # ... one task each ...
        "--ntasks-per-node": "1",   # ... never two on one node
        "--overlap": None,          # inside the plugin's srun -n1 step, which holds the CPUs
        "--kill-on-bad-exit": "1",  # one node's failure ends the others
    }
    # Each task: this interpreter running the training CLI as a node launcher; the head is the
    # first node, at the address Slurm reaches it by.
    assert program[:3] == [sys.executable, "-m", "alpagasus.training"] and asked == ["node1"]
    node_args = program[3:]
    port = int(node_args[node_args.index("--port") + 1])
    assert 1024 <= port < 65536 and _can_bind(port)

    # What each srun task does with those arguments: its node's accelerate launch, by exec.
    ranks = {}
    for rank in range(3):
        monkeypatch.setenv("SLURM_NODEID", str(rank))
        ran = []

        def execv(path, argv, ran=ran):
            ran.append((path, argv))
            raise SystemExit(0)

        monkeypatch.setattr("os.execv", execv)
        with pytest.raises(SystemExit):
            main(node_args)
        ((path, argv),) = ran
        assert path == argv[0] == sys.executable
        ranks[rank] = a = _accelerate(argv)
        assert a.config_file == "cfg.yaml"
        assert (a.num_processes, a.num_machines, a.machine_rank) == (12, 3, rank)  # 4 GPUs x 3 nodes
        assert (a.main_process_ip, a.main_process_port) == ("10.0.0.1", port)
        assert a.rdzv_backend == "static" and a.same_network
        assert a.module and a.training_script == "alpagasus.training"
        assert a.training_script_args == ["--spec", "/w/spec.json"]
    assert sorted(a.machine_rank for a in ranks.values()) == [0, 1, 2]


def test_one_node_is_a_plain_accelerate_launch():
    cmd = launcher.launch_command(Path("s.json"), 2, None, nodes=1)
    a = _accelerate(cmd)
    assert a.config_file is None and (a.num_processes, a.num_machines) == (2, 1)
    assert a.main_process_ip is None and _can_bind(a.main_process_port)
    assert a.module and a.training_script == "alpagasus.training" and a.training_script_args == ["--spec", "s.json"]
    assert a.nondefault == {"num_processes", "num_machines", "main_process_port", "module", "training_script",
                            "training_script_args"}  # nothing multi-node


def test_the_multi_node_srun_sees_the_whole_job_not_its_step():
    env = {"SLURM_JOB_ID": "42", "SLURM_CONF": "/etc/slurm.conf", "SLURM_NNODES": "1", "SLURM_NODELIST": "n1",
           "SLURM_NTASKS": "1", "SLURM_STEP_ID": "0", "PATH": "/usr/bin", "HOME": "/root"}
    assert launcher.srun_environment(env) == {"SLURM_JOB_ID": "42", "SLURM_CONF": "/etc/slurm.conf",
                                              "PATH": "/usr/bin", "HOME": "/root"}
