# alpagasus: the AlpaGasus recipe as one reproducible workflow (workflow/Snakefile says why it
# lives there). From the repository's root:
#   snakemake --cores 2 --configfile config/smoke.yaml      # the offline miniature
#   snakemake results/filtered_9k.json --cores 4             # the paper's data selection
#   snakemake --cores 2 --configfile config/rehearsal.yaml   # rehearse the cluster run on CPU (README)
# As a module, name workflow/Snakefile (docs/configuration.md).
include: "workflow/Snakefile"

# Snakemake keeps an included file's rules but not its `default_target: True`: the same target.
workflow.default_target = "all"
