"""Rule release: one selection with its dataset card, ready for the Hub (alpagasus.reporting.release)."""
import json
from pathlib import Path

from alpagasus.core import logs
from alpagasus.reporting.release import write_release

sm = snakemake  # noqa: F821  (injected by Snakemake)
logs.setup(sm.log[0])
source = {**sm.params.data, "origin": json.loads(Path(sm.input.data_summary).read_text())["origin"]}
write_release(sm.input.selection, sm.input.records, sm.input.scores, sm.output[0], name=sm.wildcards.name,
              how=sm.params.how, source=source, license_=sm.params.license, language=list(sm.params.language),
              rating_cost_path=sm.input.rating_cost)
