"""The miniature's character-level tokenizer, saved as a standard Hugging Face tokenizer.

A tiny model learns the synthetic tasks (copy, reverse, sort...) only if every character is its
own token, and nothing may be downloaded, so the tokenizer is built from the training data
itself. It is saved through ``PreTrainedTokenizerFast`` (``tokenizer.json``), so that
``AutoTokenizer.from_pretrained(checkpoint_dir)`` loads it like any other tokenizer.
"""

from __future__ import annotations

import string
from typing import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)  # ids 0..3, in this order

# Printable ASCII is always in the vocabulary, so every training variant of the miniature (the
# full set, the filtered one, a random subset) gets the same ids for the same characters even
# when one subset happens to lack a character.
BASE_CHARS = string.printable


def build_char_tokenizer(texts: Iterable[str] = ()):
    """A char-level ``PreTrainedTokenizerFast``: printable ASCII plus every character in ``texts``.

    It prepends ``<s>`` (as LLaMA's tokenizer does) and never appends ``</s>``: the training code
    adds eos to the target itself, exactly once.
    """
    from transformers import PreTrainedTokenizerFast

    chars = set(BASE_CHARS)
    for text in texts:
        chars.update(text)
    chars -= set(SPECIAL_TOKENS)
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in sorted(chars):
        vocab[ch] = len(vocab)

    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    # [\s\S] rather than "." so that newlines (part of every prompt template) are tokens too.
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    # Fuse joins tokens with "" (the default decoder would put spaces between characters).
    backend.decoder = decoders.Fuse()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        # The default clean-up rewrites " ." as "." and would corrupt answers.
        clean_up_tokenization_spaces=False,
    )


def char_tokenizer_for_records(records: list[dict], template: str | None = None):
    """The char tokenizer covering every character of ``records`` (and of the prompt template)."""
    texts = [template or ""]
    for rec in records:
        texts.extend(str(rec.get(k, "")) for k in ("instruction", "input", "output"))
    return build_char_tokenizer(texts)
