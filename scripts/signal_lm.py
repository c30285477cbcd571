"""Rule signal_lm: IFD or perplexity of every record under a causal LM (alpagasus.selection.signals.ifd)."""
import logging

from alpagasus.core import logs
from alpagasus.data import load_records
from alpagasus.selection.signals import converted_models, write_signal
from alpagasus.selection.signals.ifd import lm_signal_rows

sm = snakemake  # noqa: F821  (injected by Snakemake)
logs.setup(sm.log[0])
import torch  # noqa: E402

torch.set_num_threads(sm.threads)
name, cfg = sm.wildcards.signal, sm.config["signals"][sm.wildcards.signal]
rows, stats = lm_signal_rows(name, cfg, load_records(sm.input.records), cache_dir=sm.params.cache_dir,
                             template=sm.params.template, converted=converted_models(cfg, sm.config["models_dir"], sm.config["results_dir"]))
write_signal(sm.output[0], rows)
logging.getLogger("alpagasus").info("signal %s: %s", name, stats)
