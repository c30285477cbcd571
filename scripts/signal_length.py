"""Rule signal_length: every record's response length (alpagasus.selection.signals.length)."""
from alpagasus.core import logs
from alpagasus.data import load_records
from alpagasus.selection.signals import converted_models, write_signal
from alpagasus.selection.signals.length import length_rows

sm = snakemake  # noqa: F821  (injected by Snakemake)
logs.setup(sm.log[0])
name, cfg = sm.wildcards.signal, sm.config["signals"][sm.wildcards.signal]
write_signal(sm.output[0], length_rows(name, cfg, load_records(sm.input.records),
                                       converted=converted_models(cfg, sm.config["models_dir"], sm.config["results_dir"])))
