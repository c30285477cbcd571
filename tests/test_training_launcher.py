"""The launch commands are argument lists: one node's accelerate launch, and srun of one
launcher per node, each task reading its own node rank (no shell string to edit)."""
from pathlib import Path

import pytest

import alpagasus.training.launcher as launcher
from alpagasus.training.cli import main


def test_several_nodes_run_one_launcher_per_node_each_with_its_own_rank(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setattr(launcher, "_job_nodes", lambda: ["node1", "node2"])
    monkeypatch.setattr(launcher, "_node_address", lambda node: {"node1": "10.0.0.1"}[node])
    cmd = launcher.launch_command(Path("/w/spec.json"), 4, "cfg.yaml", nodes=2)
    assert cmd[:8] == ["srun", "--jobid=42", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--overlap",
                       "--kill-on-bad-exit=1", cmd[7]]
    assert "bash" not in cmd and not any("$" in c for c in cmd)
    node_args = cmd[cmd.index("alpagasus.training") + 1:]
    port = node_args[node_args.index("--port") + 1]

    # What each srun task does with those arguments: its node's accelerate launch, by exec.
    monkeypatch.setenv("SLURM_NODEID", "1")
    ran = []

    def execv(path, argv):
        ran.append(argv)
        raise SystemExit(0)

    monkeypatch.setattr("os.execv", execv)
    with pytest.raises(SystemExit):
        main(node_args)
    (argv,) = ran
    assert argv[1:4] == ["-m", "accelerate.commands.launch", "--config_file"] and argv[4] == "cfg.yaml"
    opts = dict(zip(argv[5:-4:], argv[6:-3:]))
    assert opts["--num_processes"] == "8" and opts["--machine_rank"] == "1" and opts["--num_machines"] == "2"
    assert opts["--main_process_ip"] == "10.0.0.1" and opts["--main_process_port"] == port
    assert opts["--rdzv_backend"] == "static" and "--same_network" in argv
    assert argv[-4:] == ["-m", "alpagasus.training", "--spec", "/w/spec.json"]


def test_one_node_is_a_plain_accelerate_launch():
    cmd = launcher.launch_command(Path("s.json"), 2, None, nodes=1)
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"] and "--config_file" not in cmd
    assert cmd[cmd.index("--num_processes") + 1] == "2" and cmd[cmd.index("--num_machines") + 1] == "1"
    assert cmd[-4:] == ["-m", "alpagasus.training", "--spec", "s.json"]
