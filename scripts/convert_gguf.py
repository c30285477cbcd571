"""Snakemake `convert_gguf` rule: a GGUF base model -> a Hugging Face directory (alpagasus.training.gguf)."""

from pathlib import Path

from alpagasus.training.gguf import convert_gguf_to_hf
from alpagasus.core.logs import redirect_output

sm = snakemake  # noqa: F821  (injected by Snakemake)

with redirect_output(sm.log[0]):
    src = Path(sm.input[0])
    convert_gguf_to_hf(src.parent, src.name, sm.output[0])
