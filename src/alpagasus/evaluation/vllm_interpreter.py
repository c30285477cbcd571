"""The vLLM interpreter as the generate job sees it (``generation.engine: vllm``).

vLLM pins transformers below 5.20 and training needs 5.24, so vLLM lives in an environment of
its own (envs/vllm.yaml, envs/vllm-cpu.yaml, or the venv of envs/install-vllm.sh) and the job
reaches it through a child process, ``python -m alpagasus.evaluation.vllm_engine`` (what runs
there), with this checkout's src/ on PYTHONPATH. This side needs only the standard library.

:class:`VllmInterpreter` asks the interpreter for its vLLM version, the dtype and the GPUs it
sees (``--probe``: a second, without importing vLLM), so that the job can read its partial file
under the right key, then hands it the prompts (``--answer``, a JSON request on stdin).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2]
INSTALL = ("bash envs/install-vllm.sh (a venv with vLLM, then set generation.vllm.python to "
           ".venv-vllm/bin/python), or run with --sdm conda (envs/vllm.yaml, envs/vllm-cpu.yaml); "
           "docs/evaluation.md \"vLLM\"")


def check_prompt_lengths(checkpoint, items: list[dict], prompts: list[str], max_model_len: int | None,
                         source: str) -> None:
    """One error naming the first item whose prompt leaves no room for an answer within
    max_model_len (null: the model's max_position_embeddings), before vLLM starts: vLLM would
    stop the whole run at it, naming only a request number."""
    from transformers import AutoConfig, AutoTokenizer

    limit = max_model_len or AutoConfig.from_pretrained(str(checkpoint)).max_position_embeddings
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    for n, (item, prompt) in enumerate(zip(items, prompts)):
        length = len(tokenizer(prompt, add_special_tokens=True)["input_ids"])
        if length >= limit:
            where = "generation.vllm.max_model_len" if max_model_len else f"{checkpoint}'s max_position_embeddings"
            raise ValueError(f"{source}: item {n} (id {item['id']!r}): its prompt is {length} tokens, which "
                             f"leaves no room for an answer within {where} ({limit})")


class VllmMissing(RuntimeError):
    """The interpreter named for vLLM is absent, or has no vLLM."""


class VllmInterpreter:
    """``version``, ``dtype``, ``tensor_parallel_size`` (its GPUs, 1 on CPU), and :meth:`answer`."""

    def __init__(self, python: str | None, setting: str = "generation.vllm.python",
                 use: str = "generation.engine: vllm", probe: bool = True):
        # null: the rule's own interpreter (under --sdm conda, the vLLM env's). ``setting`` and
        # ``use`` name, in the errors, the config key that chose it and what needs vLLM.
        # ``probe`` False: no probe of its own (a second); the judge's engine probes itself
        # (vllm_judge_worker.py) and its facts go through :meth:`take_facts`.
        self.python = python or sys.executable
        self._use, self._install = use, INSTALL.replace("generation.vllm.python", setting)
        if not Path(self.python).is_file():
            raise VllmMissing(f"{setting}: {self.python} does not exist; install it with {self._install}")
        self.version = self.dtype = self.tensor_parallel_size = None
        if not probe:
            return
        done = self._run(["--probe"], capture=True)
        if done.returncode != 0:
            raise VllmMissing(f"{self.python} cannot run alpagasus.evaluation.vllm_engine (exit {done.returncode}): "
                              f"{done.stderr.strip()[-2000:]}\nInstall vLLM with {self._install}")
        self.take_facts(json.loads(done.stdout.strip().splitlines()[-1]))

    def take_facts(self, facts: dict) -> None:
        """What ``vllm_engine.probe`` found, or VllmMissing saying what to install."""
        if facts.get("missing"):
            raise VllmMissing(f"{self.python} has no {facts['missing']} ({self._use}); install it with {self._install}")
        self.version, self.dtype = facts["vllm_version"], facts["dtype"]
        self.tensor_parallel_size = max(1, int(facts["gpus"]))

    def _command(self, args: list[str], module: str = "alpagasus.evaluation.vllm_engine") -> tuple[list[str], dict]:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
        return [self.python, "-m", module, *args], env

    def _run(self, args: list[str], capture: bool, stdin: str | None = None) -> subprocess.CompletedProcess:
        cmd, env = self._command(args)
        return subprocess.run(cmd, input=stdin, text=True, env=env, capture_output=capture)

    def judge_worker(self) -> subprocess.Popen:
        """The judge's engine (``python -m alpagasus.evaluation.vllm_judge_worker``), JSON lines
        over its stdin and stdout; its stderr is this process's (the job's log). In this process's group, so that
        whatever kills the job's group (snakemake, Slurm) kills it too."""
        cmd, env = self._command([], module="alpagasus.evaluation.vllm_judge_worker")
        sys.stdout.flush()
        sys.stderr.flush()
        return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, bufsize=1)

    def answer(self, checkpoint, prompts: list[tuple[object, str]], partial: Path, *, max_new_tokens: int,
               settings: dict, threads: int | None, progress: bool) -> None:
        """Greedy answers of ``prompts`` ((item id, prompt) pairs), appended to ``partial`` (its
        header already written) as each finishes. vLLM's output goes to this process's stdout
        and stderr (the job's log)."""
        request = {"checkpoint": str(checkpoint), "prompts": prompts, "partial": str(partial),
                   "max_new_tokens": int(max_new_tokens), "dtype": self.dtype,
                   "tensor_parallel_size": self.tensor_parallel_size, "settings": settings,
                   "threads": threads, "progress": progress}
        sys.stdout.flush()
        sys.stderr.flush()
        done = self._run(["--answer"], capture=False, stdin=json.dumps(request))
        if done.returncode != 0:
            raise RuntimeError(f"vLLM ({self.python}, vllm {self.version}) failed with exit status "
                               f"{done.returncode} on {checkpoint}: its messages are just above")
