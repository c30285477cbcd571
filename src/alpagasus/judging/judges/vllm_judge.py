"""An open model as a judge through vLLM's offline engine: `backend: vllm`.

The transformers judge's judgements (judges/transformers_judge.py: the same prompts through the
model's chat template, greedy text or a score read from the token probabilities, in the OpenAI
``logprobs.content`` shape that expected_score.py reads for every backend), computed by vLLM:
every request in flight is in vLLM's queue at once and it batches them continuously.

vLLM pins its own transformers, so it runs in an interpreter of its own
(``judges.<name>.vllm.python``, found and probed as for generation:
evaluation/vllm_interpreter.py) as one child process for the whole rating job
(``python -m alpagasus.evaluation.vllm_judge_worker``),
started at the first request that is not in the cache: a rerun from the cache starts nothing.
The engine (engine.py) keeps each reply in the cache as it arrives, as for any judge. The
child dies with the job (end of its input, and PR_SET_PDEATHSIG for a kill -9), so no engine
outlives the job holding memory; it ignores SIGTERM, which the job handles by awaiting what is
in flight.

The cache key is the transformers judge's (model, revision, a sha256 of the weight files,
dtype, mode, max_new_tokens in text mode) with ``engine: vllm``: vLLM's kernels sum in another
order than transformers', so their judgements are not the same and never stand in for each other.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time

from alpagasus.core.config import filled
from alpagasus.core.model_files import converted_gguf
from alpagasus.judging.judges.base import JudgeFatalError, JudgeReply, JudgeRequest, JudgeRequestError, await_startup
from alpagasus.judging.judges.transformers_judge import local_judge_identity, pairwise_needs_text

log = logging.getLogger(__name__)
STOP_WAIT_S = 60  # after the input is closed, how long the engine has to exit before it is killed


class VllmJudge:
    cacheable = True  # slow: a judgement is worth keeping

    def __init__(self, name: str, cfg: dict):
        self.name = name
        self.cfg = filled("vllm_judge", cfg)  # the defaults of config/schema.yaml
        self.model = self.cfg["model"]
        self.model_dir, self.params = local_judge_identity(self.cfg, "vllm judge")
        self.params["engine"] = "vllm"
        self.concurrency = self.cfg["concurrency"]
        self.attempts = 0
        self.failures: dict[str, int] = {}
        self.startup_s: float | None = None  # the engine's own start-up, as it reported it
        self.ready_at: float | None = None   # time.monotonic() when it was ready
        self._proc = None
        self._starting: asyncio.Future | None = None
        self._futures: dict[str, asyncio.Future] = {}
        self._next = 0
        self._exit_message: str | None = None

    def usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return 0.0

    # -- the engine's process ------------------------------------------------------------------

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        """In a thread: start the engine (it probes its interpreter first), wait until it is ready."""
        from alpagasus.evaluation.vllm_interpreter import VllmInterpreter, VllmMissing

        try:
            interpreter = VllmInterpreter(self.cfg["vllm"]["python"], setting=f"judges.{self.name}.vllm.python",
                                          use="backend: vllm", probe=False)
        except VllmMissing as exc:
            raise JudgeFatalError(str(exc)) from None
        checkpoint = self.model_dir
        if self.cfg["gguf_file"]:
            checkpoint = converted_gguf(self.model_dir, self.cfg["gguf_file"], self.params["weights_sha256"])
        setup = {"checkpoint": str(checkpoint), "dtype": self.cfg["dtype"], "settings": self.cfg["vllm"],
                 "threads": self.cfg["threads"], "score_mode": self.cfg["score_mode"],
                 "max_new_tokens": self.cfg["max_new_tokens"]}
        proc = interpreter.judge_worker()
        try:
            line = proc.stdout.readline()
            if not line.strip():
                raise VllmMissing(f"{interpreter.python} cannot run alpagasus.evaluation.vllm_judge_worker (exit "
                                  f"{proc.wait()}): its messages are just above")
            interpreter.take_facts(json.loads(line))
        except VllmMissing as exc:
            proc.wait()
            raise JudgeFatalError(str(exc)) from None
        log.info("judge %s: starting vLLM %s (%s) on %s", self.name, interpreter.version, interpreter.python,
                 checkpoint)
        proc.stdin.write(json.dumps(setup) + "\n")
        proc.stdin.flush()
        first = proc.stdout.readline()
        ready = json.loads(first) if first.strip() else {}
        if not ready.get("ready"):
            proc.stdin.close()
            code = proc.wait()
            why = ready.get("fatal") or f"it exited with status {code} before it was ready: its messages are just above"
            raise JudgeFatalError(f"judge {self.name!r}: vLLM ({interpreter.python}, vllm {interpreter.version}) "
                                  f"cannot judge with {checkpoint}: {why}")
        self.startup_s = ready.get("startup_s")
        self.ready_at = time.monotonic()
        log.info("judge %s: vLLM ready in %.1f s", self.name, self.startup_s or 0)
        self._proc = proc
        threading.Thread(target=self._read, args=(proc, loop), daemon=True).start()

    def _read(self, proc, loop: asyncio.AbstractEventLoop) -> None:
        """In a thread: each reply line resolves its request's future; the end of the engine's
        output (it exited, or was killed) fails what is still in flight."""
        for line in proc.stdout:
            msg = json.loads(line)
            loop.call_soon_threadsafe(self._resolve, msg)
        code = proc.wait()
        loop.call_soon_threadsafe(self._ended, code)

    def _resolve(self, msg: dict) -> None:
        if "fatal" in msg:  # the engine stops: nothing in flight will be answered
            self._fail_all(f"judge {self.name!r}: vLLM stopped: {msg['fatal']}")
            return
        fut = self._futures.pop(msg["id"], None)
        if fut is None or fut.done():
            return
        if "error" in msg:
            self.failures["bad_request"] = self.failures.get("bad_request", 0) + 1
            fut.set_exception(JudgeRequestError(f"vLLM refused the request: {msg['error']}"))
            return
        fut.set_result(JudgeReply(text=msg["text"], prompt_tokens=msg["prompt_tokens"],
                                  completion_tokens=msg["completion_tokens"], model=self.model,
                                  logprobs=msg["logprobs"]))

    def _ended(self, code: int) -> None:
        self._fail_all(f"judge {self.name!r}: the vLLM engine exited with status {code}: its messages are above")

    def _fail_all(self, message: str) -> None:
        self._exit_message = self._exit_message or message
        for fut in self._futures.values():
            if not fut.done():
                fut.set_exception(JudgeFatalError(self._exit_message))
        self._futures.clear()

    # -- judging -------------------------------------------------------------------------------

    async def complete(self, request: JudgeRequest) -> JudgeReply:
        pairwise_needs_text(self.name, self.cfg, request)
        loop = asyncio.get_running_loop()
        if self._starting is None:
            self._starting = asyncio.ensure_future(asyncio.to_thread(self._start, loop))
        await await_startup(self.name, self._starting, "cannot start vLLM")
        if self._exit_message:
            raise JudgeFatalError(self._exit_message)
        self.attempts += 1
        rid = str(self._next)
        self._next += 1
        fut = loop.create_future()
        self._futures[rid] = fut
        try:
            self._proc.stdin.write(json.dumps({"id": rid, "messages": request.messages}) + "\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            self._futures.pop(rid, None)
            raise JudgeFatalError(self._exit_message or f"judge {self.name!r}: the vLLM engine is gone") from None
        return await fut

    async def aclose(self) -> None:
        proc = self._proc
        if proc is None:
            return
        self._proc = None

        def stop() -> None:
            try:
                proc.stdin.close()  # the engine's end of input: it exits
            except OSError:
                pass
            try:
                proc.wait(timeout=STOP_WAIT_S)
            except Exception:  # noqa: BLE001 - it did not exit in time
                proc.kill()
                proc.wait()

        await asyncio.to_thread(stop)
