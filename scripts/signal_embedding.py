"""Rule signal_embedding: every record's sentence embedding, {name}.npy and {name}.jsonl
(alpagasus.selection.signals.embedding)."""
import logging

from alpagasus.core import logs
from alpagasus.data import load_records
from alpagasus.selection.signals import converted_models, write_embedding
from alpagasus.selection.signals.embedding import embedding_rows

sm = snakemake  # noqa: F821  (injected by Snakemake)
logs.setup(sm.log[0])
import torch  # noqa: E402

torch.set_num_threads(sm.threads)
name, cfg = sm.wildcards.signal, sm.config["signals"][sm.wildcards.signal]
matrix, rows, stats = embedding_rows(name, cfg, load_records(sm.input.records), cache_dir=sm.params.cache_dir,
                                     converted=converted_models(cfg, sm.config["models_dir"], sm.config["results_dir"]))
write_embedding(sm.output.npy, sm.output.jsonl, matrix, rows)
logging.getLogger("alpagasus").info("signal %s: %s", name, stats)
