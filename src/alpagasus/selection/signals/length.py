"""Response length (kind ``length``): the response's tokens under a named tokenizer, and its
characters. ``value`` is the token count, or the characters where no tokenizer is named.

"Long Is More for Alignment" (Zhao et al. 2024) keeps the longest responses (direction high);
length is also what a pairwise judge's verbosity bias rewards, so every selection's lengths are
worth knowing. Tokens are counted as training sees them, without special tokens (no BOS/EOS).
Cheap: not cached.
"""

from __future__ import annotations

from alpagasus.core.config import filled
from alpagasus.core.model_files import model_directory
from alpagasus.selection.signals import SignalError, row

CHAR_TOKENIZER = "char"  # the miniature's character tokenizer (training.sizes.*.tokenizer: char)
BATCH = 1024


def load_tokenizer(spec: str, records: list[dict], revision: str | None = None, converted: str | None = None):
    """The tokenizer ``spec`` names: ``char`` (built from the records, as the miniature's
    training builds it), or a directory, hub id or GGUF file."""
    if spec == CHAR_TOKENIZER:
        from alpagasus.training.tokenizer import char_tokenizer_for_records

        return char_tokenizer_for_records(records)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_directory(spec, revision, converted=converted))


def length_rows(name: str, signal_cfg: dict, records: list[dict], converted: dict | None = None) -> list[dict]:
    cfg = filled("signals.*", signal_cfg)
    outputs = [r["output"] for r in records]
    if cfg["tokenizer"] is None:
        return [row(i, rec, len(out), chars=len(out)) for i, (rec, out) in enumerate(zip(records, outputs))]
    try:
        tok = load_tokenizer(cfg["tokenizer"], records, cfg["revision"], (converted or {}).get(cfg["tokenizer"]))
    except (OSError, ValueError) as exc:
        raise SignalError(f"signal {name!r}: cannot load tokenizer {cfg['tokenizer']!r} ({type(exc).__name__}: {exc})") from None
    counts: list[int] = []
    for start in range(0, len(outputs), BATCH):
        ids = tok(outputs[start:start + BATCH], add_special_tokens=False)["input_ids"]
        counts.extend(len(x) for x in ids)
    return [row(i, rec, n, tokens=n, chars=len(out)) for i, (rec, out, n) in enumerate(zip(records, outputs, counts))]
