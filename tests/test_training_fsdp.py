"""FSDP on CPU: the closest honest check of the multi-GPU path that runs without a GPU.

Two processes (gloo) shard the tiny model with FSDP full_shard, through accelerate's own FSDP
code (prepare, clipping, sharded save and load, full state dict gathered for the export), with
the launcher environment that `accelerate launch` derives from config/accelerate/fsdp.yaml. Only
what cannot run on CPU is changed, and said: FSDP2 instead of FSDP1 (torch's FSDP1 needs a GPU),
and no rank-0-only loading (it broadcasts from a GPU). The run is stopped after a sharded save,
resumed by two processes again, and must give the one-process run's losses and weights.
"""
import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO
from test_training import _free_port, _wait_for, data, make_spec  # noqa: F401  (data: a fixture)

from alpagasus.training import train

CPU_ONLY_OVERRIDES = {
    "FSDP_VERSION": "2",
    "FSDP_RESHARD_AFTER_FORWARD": "true",  # FSDP2's full_shard
    "FSDP_SYNC_MODULE_STATES": "false",
    "FSDP_CPU_RAM_EFFICIENT_LOADING": "false",
}


def fsdp_launcher_environment(config: Path, processes: int) -> dict:
    """The variables `accelerate launch --config_file config` gives each rank (accelerate's own
    code computes them), with the CPU-only overrides."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(config), "--num_processes", str(processes),
                                               "unused.py"])
    args, _, _ = _validate_launch_command(args)
    env = {k: v for k, v in prepare_multi_gpu_env(args).items() if k.startswith(("FSDP_", "ACCELERATE_USE_FSDP"))}
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_STATE_DICT_TYPE"] == "SHARDED_STATE_DICT"
    return {**env, **CPU_ONLY_OVERRIDES}


def _torchrun(spec, tmp: Path, env: dict) -> subprocess.Popen:
    spec_file = tmp / f"{Path(spec.output).name}.spec.json"
    spec_file.write_text(json.dumps(spec.__dict__))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "alpagasus.training", "--spec", str(spec_file)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **env, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_fsdp_full_shard_on_two_cpu_processes_saves_resumes_and_exports(tmp_path, data):  # noqa: F811
    kw = dict(max_steps=8, per_device_batch_size=2, save_every_steps=3)
    one = train(make_spec(tmp_path / "one", "ref-tiny", data, **kw))

    env = fsdp_launcher_environment(REPO / "config" / "accelerate" / "fsdp.yaml", 2)
    spec = make_spec(tmp_path, "fsdp-tiny", data, **kw)
    # Tracked (where the tracking extra is installed): one run, from rank 0, kept across the resume.
    tracked = importlib.util.find_spec("mlflow") is not None
    store = f"sqlite:///{tmp_path / 'tracking' / 'mlflow.db'}"
    if tracked:
        spec.tracking = {"report_to": ["mlflow"], "project": "fsdp", "mlflow_tracking_uri": None,
                         "mlflow_local_store": store, "wandb_mode": None, "wandb_dir": str(tmp_path / "tracking")}
    work = spec.resolved_work_dir()
    proc = _torchrun(spec, tmp_path, env)
    _wait_for("step-00000003", work, proc, timeout=180)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0 and not Path(spec.output).exists(), out[-3000:]
    (saved,) = work.glob("step-*")
    state = json.loads((saved / "trainer_state.json").read_text())
    assert state["distributed_type"] == "FSDP" and state["world_size"] == 2 and 3 <= state["step"] < 8
    # A sharded state (torch.distributed.checkpoint: one file per rank), not a gathered model.
    shards = sorted(p.name for p in (saved / "pytorch_model_fsdp_0").iterdir())
    assert "__0_0.distcp" in shards and "__1_0.distcp" in shards, shards

    proc = _torchrun(spec, tmp_path, env)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-4000:]
    log = json.loads((Path(spec.output) / "train_log.json").read_text())
    assert log["distributed_type"] == "FSDP" and log["world_size"] == 2
    assert log["resumed_from_steps"] == [state["step"]]
    if tracked:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=store)
        [run] = client.search_runs([client.get_experiment_by_name("fsdp").experiment_id])  # not one per rank
        steps = sorted({m.step for m in client.get_metric_history(run.info.run_id, "loss")})
        assert steps == list(range(1, 9)) and run.info.status == "FINISHED"
        assert json.loads((Path(spec.output) / "tracking.json").read_text()) == {"mlflow": run.info.run_id}
    assert [s["loss"] for s in log["steps"]] == pytest.approx([s["loss"] for s in one["steps"]], rel=1e-4)
    assert [s["grad_norm"] for s in log["steps"]] == pytest.approx([s["grad_norm"] for s in one["steps"]], rel=1e-3)

    # The export is a full, standard Hugging Face directory with the one-process run's weights.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sharded = AutoModelForCausalLM.from_pretrained(spec.output).eval()
    single = AutoModelForCausalLM.from_pretrained(tmp_path / "one" / "checkpoints" / "ref-tiny")
    for (name, a), (_, b) in zip(sharded.state_dict().items(), single.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-5), name
    tok = AutoTokenizer.from_pretrained(spec.output)
    ids = tok("Give the first letter of the word.", return_tensors="pt")
    assert sharded.generate(**ids, max_new_tokens=4, do_sample=False).shape[1] > ids["input_ids"].shape[1]
