"""Rule report: results/report.html and the overlaid loss curves of each size."""
from pathlib import Path

from alpagasus.core import logs
from alpagasus.reporting.report import build, provenance

logs.setup(snakemake.log[0])
i, p, cfg = snakemake.input, snakemake.params, snakemake.config
sizes = list(p.sizes)
seeds = {
    # The miniature's records are drawn from this seed; a data file has none.
    "data": cfg["data"]["miniature"]["seed"] if cfg["data"].get("source") == "miniature" else None,
    "random baseline": cfg["selection"]["random_seed"],
    "training": cfg["training"]["seed"],
    "bootstrap": cfg["evaluation"]["seed"],
}
build(selection_summary=i.selection_summary, score_hist=i.score_hist, rating_cost=i.rating_cost,
      checkpoints=list(i.checkpoints), winrates=list(zip(sizes, i.tables, i.plots)),
      judge_costs=list(i.judge_costs), out_path=snakemake.output.html,
      agreement=list(i.agreement) or None,
      loss_curves=list(zip(sizes, snakemake.output.loss_curves)),
      generations=[(*key, path) for key, path in zip(p.generation_keys, i.generations)],
      harnesses=[(size, kind, i.harnesses[2 * n], i.harnesses[2 * n + 1])
                 for n, (size, kind) in enumerate(p.harness_keys)],
      benchmarks=[(size, i.benchmarks[2 * n], i.benchmarks[2 * n + 1]) for n, size in enumerate(sizes)
                  if i.benchmarks],
      judge_backends={name: j.get("backend") for name, j in cfg["judges"].items()},
      provenance=provenance(config_files=p.config_files, overrides=p.config_overrides, seeds=seeds,
                            where=Path(snakemake.scriptdir)),
      title=f"alpagasus: {cfg['results_dir']}")
