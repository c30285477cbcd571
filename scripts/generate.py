"""Snakemake `generate` rule: a checkpoint's answers on one test set (alpagasus.evaluation.generation)."""

from alpagasus.evaluation.generation import generate_test_set
from alpagasus.core.logs import redirect_output

sm = snakemake  # noqa: F821  (injected by Snakemake)

with redirect_output(sm.log[0]):
    generate_test_set(
        sm.input.checkpoint,
        sm.input.test_set,
        sm.output[0],
        testset=sm.wildcards.testset,
        model_name=sm.params.model_name,
        template=sm.params.template,
        max_new_tokens=int(sm.params.max_new_tokens),
        # Not a param: the batch size changes speed, not the answers, so it reruns nothing.
        batch_size=int(sm.config["generation"]["batch_size"]),
        threads=sm.threads,
        mem_mb=int(sm.resources.mem_mb),
        engine=sm.config["generation"]["engine"],
        # Not params either: where vLLM's interpreter is, and the memory it takes; what of its
        # settings defines the answers is in params (alpagasus.core.identity.VLLM_KEYS).
        vllm=sm.config["generation"]["vllm"],
    )
