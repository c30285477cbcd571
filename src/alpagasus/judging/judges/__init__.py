"""Judge backends behind one interface: ``await judge.complete(request) -> JudgeReply``.

A judge is data (config ``judges.<name>``): the backend, the model, its sampling parameters,
its limits and its prices. ``make_judge`` turns that entry into an object.
"""

from __future__ import annotations

from alpagasus.judging.judges.base import (Failure, FailureKind, Judge, JudgeError, JudgeFatalError, JudgeReply, JudgeRequest, JudgeRequestError, JudgeTransientError)


def make_judge(name: str, cfg: dict):
    backend = cfg.get("backend")
    if backend == "openai":
        from alpagasus.judging.judges.openai_judge import OpenAIJudge

        return OpenAIJudge(name, cfg)
    if backend == "openai_batch":
        from alpagasus.judging.judges.openai_batch import OpenAIBatchJudge

        return OpenAIBatchJudge(name, cfg)
    if backend == "verifier":
        from alpagasus.judging.judges.verifier import VerifierJudge

        return VerifierJudge(name, cfg)
    if backend == "transformers":
        from alpagasus.judging.judges.transformers_judge import TransformersJudge

        return TransformersJudge(name, cfg)
    if backend == "vllm":
        from alpagasus.judging.judges.vllm_judge import VllmJudge

        return VllmJudge(name, cfg)
    raise JudgeFatalError(f"config judges.{name}.backend: unknown backend {backend!r} "
                          f"(openai, openai_batch, transformers, vllm, verifier)")


__all__ = ["make_judge", "Judge", "Failure", "FailureKind", "JudgeRequest", "JudgeReply", "JudgeError", "JudgeFatalError",
           "JudgeRequestError", "JudgeTransientError"]
