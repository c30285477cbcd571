"""Rule benchmarks_table: the paper's benchmarks table of one size (alpagasus.evaluation.benchmarks);
the scores also go to the tracked runs that trained the models (training.report_to)."""
from alpagasus.core import logs
from alpagasus.evaluation.benchmarks import write_benchmarks_table
from alpagasus.training.tracking import benchmark_metrics, report_results, settings

sm = snakemake  # noqa: F821  (injected by Snakemake)
logs.setup(sm.log[0])
models = list(sm.params.models)
rows = write_benchmarks_table(list(zip(models, sm.input)), sm.params.tasks, sm.output.table, sm.output.plot)
results = sm.config["results_dir"]
report_results(settings(sm.config["training"], results), {m: f"{results}/checkpoints/{m}" for m in models},
               benchmark_metrics(rows))
