"""Rule lm_eval: one checkpoint on the configured lm-eval tasks (alpagasus.evaluation.benchmarks)."""
from alpagasus.core.logs import redirect_output
from alpagasus.evaluation.benchmarks import run_benchmarks

sm = snakemake  # noqa: F821  (injected by Snakemake)
p = sm.params

with redirect_output(sm.log[0]):
    run_benchmarks(
        sm.input.checkpoint, sm.output[0], tasks=p.tasks, include_path=p.include_path, limit=p.limit,
        dtype=p.dtype, seed=p.seed, bootstrap_iters=p.bootstrap_iters, allow_code_execution=p.allow_code_execution,
        model_name=f"{sm.wildcards.variant}-{sm.wildcards.size}",
        # Not params: speed and placement, not the scores.
        batch_size=sm.config["evaluation"]["benchmarks"]["batch_size"],
        device=sm.config["evaluation"]["benchmarks"]["device"],
    )
