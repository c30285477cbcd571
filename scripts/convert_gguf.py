"""Snakemake `convert_gguf` rule: a GGUF base model -> a Hugging Face directory, converted once a
machine under $ALPAGASUS_MODEL_CACHE and linked into models/ (alpagasus.core.model_files)."""

from pathlib import Path

from alpagasus.core.logs import redirect_output
from alpagasus.core.model_files import converted_gguf, linked_copy

sm = snakemake  # noqa: F821  (injected by Snakemake)

with redirect_output(sm.log[0]):
    src = Path(sm.input[0])
    linked_copy(converted_gguf(src.parent, src.name), sm.output[0])
