"""Training the tiny LLaMA on CPU: it learns, saves a standard directory, resumes after a kill."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO

from alpagasus.data.miniature import MINIATURE_TEMPLATE, make_records
from alpagasus.training import TrainSpec, TrainingInterrupted, fingerprint, num_processes, train

# Training runs, kills, signals and several processes: the whole module is the slow tier.
pytestmark = pytest.mark.slow

TINY = {
    "base_model": None,
    "tokenizer": "char",
    "model_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "tie_word_embeddings": True},
    "max_steps": 300,
    "learning_rate": 3e-3,
    "global_batch_size": 8,
    "per_device_batch_size": 8,
    "max_length": 64,
    "pack_length": 128,
    "warmup_ratio": 0.05,
    "weight_decay": 0.01,
    "lr_scheduler": "cosine",
    "adam_betas": [0.9, 0.98],
    "max_grad_norm": None,
    "bf16": False,
    "packing": True,
    "save_every_steps": 1000,
}


def make_spec(tmp: Path, name: str, data: Path, **size) -> TrainSpec:
    return TrainSpec(data=str(data), output=str(tmp / "checkpoints" / name), size={**TINY, **size},
                     size_name="tiny", variant=name, template=MINIATURE_TEMPLATE, seed=7, threads=1,
                     progress=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "records.json"
    path.write_text(json.dumps(make_records(400, 0.0, seed=3)))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("trained")
    spec = make_spec(tmp, "clean-tiny", data)
    log = train(spec)
    return spec, log


def test_training_lowers_the_loss_and_logs_what_it_did(trained):
    spec, log = trained
    losses = [s["loss"] for s in log["steps"]]
    assert len(losses) == 300 and [s["step"] for s in log["steps"]] == list(range(1, 301))
    first, last = sum(losses[:20]) / 20, sum(losses[-50:]) / 50
    assert last < 0.7 * first, (first, last)
    assert log["tokens_seen"] > 0 and log["tokens_per_s"] > 0 and log["wall_time_s"] > 0
    assert 0.8 < log["useful_token_fraction"] <= 1.0
    assert log["device_count"] == 1 and log["device_type"] == "cpu"
    assert log["peak_memory_mb"]["rss_mb"] < 2000  # the miniature's budget
    assert log["resumed_from_steps"] == []
    on_disk = json.loads((Path(spec.output) / "train_log.json").read_text())
    assert on_disk["final_loss"] == log["final_loss"]
    # The resume state is removed once the model is complete.
    assert not spec.resolved_work_dir().exists()


def test_checkpoint_is_a_standard_hf_directory_that_generates_deterministically(trained):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(trained[0].output)
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
                 "tokenizer_config.json", "train_log.json", "loss_curve.png"):
        assert (out / name).is_file(), name
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    prompt = MINIATURE_TEMPLATE.format(instruction="Give the first letter of the word.", input="kite")
    ids = tok(prompt, return_tensors="pt")
    runs = [model.generate(**ids, max_new_tokens=6, do_sample=False)[0].tolist() for _ in range(2)]
    assert runs[0] == runs[1]
    assert model.generation_config.eos_token_id == tok.eos_token_id
    assert model.generation_config.pad_token_id == tok.pad_token_id


def test_packing_and_micro_batch_size_do_not_change_the_loss(tmp_path, data):
    """The step loss is over the whole global batch: packed or padded, 1 or 8 rows at a time."""
    logs = [
        train(make_spec(tmp_path, name, data, max_steps=3, **kw))
        for name, kw in [("packed", {}), ("padded", {"packing": False}),
                         ("small", {"per_device_batch_size": 1, "pack_length": 64})]
    ]
    ref = [s["loss"] for s in logs[0]["steps"]]
    for log in logs[1:]:
        assert [s["loss"] for s in log["steps"]] == pytest.approx(ref, rel=1e-4)
    assert logs[2]["micro_batches_per_step_mean"] == 8  # 8 examples, one row each
    assert logs[0]["useful_token_fraction"] > logs[1]["useful_token_fraction"]


def _run_cli(spec: TrainSpec, tmp: Path) -> subprocess.Popen:
    spec_file = tmp / f"{Path(spec.output).name}.spec.json"
    spec_file.write_text(json.dumps(spec.__dict__))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.Popen([sys.executable, "-m", "alpagasus.training", "--spec", str(spec_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _wait_for(path_glob, work: Path, proc, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = sorted(work.glob(path_glob)) if work.exists() else []
        if found:
            return found
        if proc.poll() is not None:
            raise AssertionError(f"training ended before {path_glob}:\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"no {path_glob} in {work} after {timeout} s")


def test_hard_kill_then_rerun_resumes_from_the_last_saved_step(tmp_path, data, trained):
    spec = make_spec(tmp_path, "clean-tiny", data, save_every_steps=50)
    work = spec.resolved_work_dir()
    proc = _run_cli(spec, tmp_path)
    _wait_for("step-00000100", work, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not Path(spec.output).exists()  # never a half-written checkpoint directory
    saved = sorted(p.name for p in work.glob("step-*"))
    assert saved and saved[-1] >= "step-00000100"
    last = int(saved[-1].split("-")[1])

    log = train(spec)
    assert log["resumed_from_steps"] == [last]
    assert [s["step"] for s in log["steps"]] == list(range(1, 301))
    # The same data order, optimizer and schedule: the resumed run is the uninterrupted one.
    straight = [s["loss"] for s in trained[1]["steps"]]
    assert [s["loss"] for s in log["steps"]] == pytest.approx(straight, rel=1e-3, abs=1e-4)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_saves_the_current_step_and_exits_nonzero(tmp_path, data, signum):
    spec = make_spec(tmp_path, "sig-tiny", data, save_every_steps=40, max_steps=160)
    work = spec.resolved_work_dir()
    proc = _run_cli(spec, tmp_path)
    _wait_for("step-00000040", work, proc)
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, out[-2000:]
    saved = [p for p in work.glob("step-*")]
    assert len(saved) == 1 and not Path(spec.output).exists()
    stopped_at = json.loads((saved[0] / "trainer_state.json").read_text())["step"]
    assert stopped_at >= 40 and saved[0].name == f"step-{stopped_at:08d}"

    log = train(spec)
    assert log["resumed_from_steps"] == [stopped_at] and len(log["steps"]) == 160


def test_in_process_signal_raises_training_interrupted(tmp_path, data):
    spec = make_spec(tmp_path, "inproc-tiny", data, max_steps=3000)

    def fire(*_):
        os.kill(os.getpid(), signal.SIGUSR1)

    old = signal.signal(signal.SIGALRM, fire)
    # Outside train() a stray SIGUSR1 must not kill the test process.
    old_usr1 = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.setitimer(signal.ITIMER_REAL, 0.3)  # lands during setup or the first steps
    try:
        with pytest.raises(TrainingInterrupted) as exc:
            train(spec)
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN  # train() put it back
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        signal.signal(signal.SIGUSR1, old_usr1)
    assert exc.value.code == 128 + signal.SIGUSR1 and 0 <= exc.value.step < 3000


def test_state_from_other_data_is_not_resumed(tmp_path, data):
    spec = make_spec(tmp_path, "fp-tiny", data, max_steps=20)
    work = spec.resolved_work_dir() / "step-00000010"
    work.mkdir(parents=True)
    (work / "trainer_state.json").write_text(json.dumps({"step": 10, "fingerprint": "not-this-one",
                                                         "history": [], "elapsed_s": 0}))
    log = train(spec)
    assert log["resumed_from_steps"] == [] and len(log["steps"]) == 20
    size = spec.resolved_size()
    assert fingerprint(spec, size, "a") != fingerprint(spec, {**size, "learning_rate": 1e-3}, "a")
    assert fingerprint(spec, size, "a") == fingerprint(spec, {**size, "save_every_steps": 7, "per_device_batch_size": 1,
                                                       "resources": {"gpus": 8, "runtime_min": 999}}, "a")


def test_bad_records_name_the_file_record_and_field(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "a", "input": "", "output": "b"}, {"instruction": "a", "input": ""}]))
    with pytest.raises(ValueError, match=r"bad.json: record 1: field 'output': missing"):
        train(make_spec(tmp_path, "bad-tiny", bad))


@pytest.mark.parametrize("requested, visible, processes", [(4, 0, 0), (4, 2, 2), (4, 8, 4), (0, 8, 0), (None, 8, 0)])
def test_gpu_count_comes_from_the_machine_not_only_the_config(monkeypatch, requested, visible, processes):
    # The miniature's config asks for 4 GPUs (the Slurm request); a CPU-only machine runs
    # in-process, and a node granted fewer GPUs than asked starts one process per visible GPU.
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
    assert num_processes(requested) == processes


def test_fsdp_config_wraps_the_decoder_layers_of_the_model_we_train():
    """What accelerate reads from config/accelerate/fsdp.yaml shards fully and auto-wraps a class
    that exists in a LLaMA model of this transformers version: its decoder layer, one unit per layer."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils.dataclasses import get_module_class_from_name
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = load_config_from_file(str(REPO / "config" / "accelerate" / "fsdp.yaml"))
    assert cfg.distributed_type == "FSDP" and cfg.fsdp_config["fsdp_sharding_strategy"] == "FULL_SHARD"
    model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2))
    names = cfg.fsdp_config["fsdp_transformer_layer_cls_to_wrap"].split(",")
    wrapped = [get_module_class_from_name(model, name.strip()) for name in names]
    assert wrapped == [type(model.model.layers[0])]
    assert sum(isinstance(m, wrapped[0]) for m in model.modules()) == 2


def test_two_processes_give_the_same_steps_as_one(tmp_path, data):
    """Global batch 8 whatever the device count: 2 ranks (DDP on CPU, gloo) = 1 rank, step by step."""
    logs = {}
    # The one rank in this process (as test_a_state_saved_by_two_processes_resumes_in_one does):
    # a process of its own would only import torch and transformers again. The CLI is the
    # two ranks' way in, and the other tests' here.
    one = make_spec(tmp_path, "one", data, max_steps=6, per_device_batch_size=2, save_every_steps=4)
    train(one)
    logs["one"] = json.loads((Path(one.output) / "train_log.json").read_text())
    spec = make_spec(tmp_path, "two", data, max_steps=6, per_device_batch_size=2, save_every_steps=4)
    spec_file = tmp_path / "two.json"
    spec_file.write_text(json.dumps(spec.__dict__))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "alpagasus.training", "--spec", str(spec_file)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    logs["two"] = json.loads((Path(spec.output) / "train_log.json").read_text())
    assert logs["two"]["world_size"] == 2 and logs["one"]["world_size"] == 1
    for a, b in zip(logs["one"]["steps"], logs["two"]["steps"]):
        assert (a["examples"], a["tokens"], a["supervised_tokens"]) == (b["examples"], b["tokens"], b["supervised_tokens"])
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)


def test_a_state_saved_by_two_processes_resumes_in_one(tmp_path, data):
    """A job stopped on 2 GPUs and rerun on 1 (another allocation) continues where it stopped,
    with the same steps as an uninterrupted run (DDP on CPU, gloo)."""
    straight = train(make_spec(tmp_path / "straight", "x-tiny", data, max_steps=8, per_device_batch_size=2))
    spec = make_spec(tmp_path, "moved-tiny", data, max_steps=8, per_device_batch_size=2, save_every_steps=3)
    spec_file = tmp_path / "moved.json"
    spec_file.write_text(json.dumps(spec.__dict__))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_port", str(_free_port()), "-m", "alpagasus.training", "--spec", str(spec_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    work = spec.resolved_work_dir()
    _wait_for("step-00000003", work, proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0 and not Path(spec.output).exists(), out[-2000:]
    (saved,) = work.glob("step-*")
    state = json.loads((saved / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and 3 <= state["step"] < 8

    log = train(spec)
    assert log["world_size"] == 1 and log["resumed_from_steps"] == [state["step"]]
    assert [s["loss"] for s in log["steps"]] == pytest.approx([s["loss"] for s in straight["steps"]], rel=1e-4)


def test_a_saved_state_that_cannot_be_loaded_is_a_clear_error(tmp_path, data):
    spec = make_spec(tmp_path, "broken-tiny", data, max_steps=200, save_every_steps=5)
    proc = _run_cli(spec, tmp_path)
    _wait_for("step-00000005", spec.resolved_work_dir(), proc)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    (saved,) = spec.resolved_work_dir().glob("step-*")
    state_file = saved / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "world_size": 4, "distributed_type": "FSDP"}))
    for f in saved.glob("optimizer*"):
        f.write_bytes(b"not a torch file")  # as a shard layout this run cannot read would be
    with pytest.raises(RuntimeError, match=r"cannot load the saved training state .* saved by 4 process\(es\) "
                                           r"\(FSDP\); this run has 1 .*rerun with 4 GPU\(s\)"):
        train(spec)
    assert saved.is_dir()  # nothing paid for is thrown away


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_launch_goes_through_accelerate_launch_when_several_gpus_are_usable(tmp_path, data, monkeypatch):
    """The multi-GPU path (a launcher subprocess with a spec file), on CPU: accelerate's MULTI_CPU
    config on one machine runs one process, which is enough to check spec, environment and status."""
    import alpagasus.training as training
    import alpagasus.training.launcher as launcher

    cfg = tmp_path / "cpu.yaml"
    cfg.write_text(yaml.safe_dump({"compute_environment": "LOCAL_MACHINE", "distributed_type": "MULTI_CPU",
                                   "num_processes": 2, "num_machines": 1, "machine_rank": 0,
                                   "mixed_precision": "no", "use_cpu": True}))
    monkeypatch.setattr(launcher, "num_processes", lambda gpus: 2)
    spec = make_spec(tmp_path, "launched-tiny", data, max_steps=10)
    log_file = tmp_path / "train.log"
    assert training.launch(spec, gpus=4, accelerate_config=str(cfg), log_file=log_file) == 0
    assert json.loads((Path(spec.output) / "train_log.json").read_text())["total_steps"] == 10
    assert (spec.resolved_work_dir() / "spec.json").exists() is False  # removed with the work dir
    assert "10 steps, final loss" in log_file.read_text()
