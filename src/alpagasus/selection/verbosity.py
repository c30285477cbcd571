"""The verbosity audit of a selection: is it a quality filter or a length filter?

Judges rate longer responses differently (Claude's released ratings of Alpaca prefer shorter
ones, its helpfulness ratings longer ones), and keeping the longest responses is a strong
selector of its own ("Long Is More for Alignment", Zhao et al. 2024). So every selection says
how long the responses it kept are against the whole set, and how much it has in common with
the simplest length selector of the same size: the k records with the longest responses.

Length: characters of the record's response (Alpaca's ``output``). The longest-k set is ranked
by length, ties by record position (the first of equal lengths first), so it is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["RESPONSE_FIELD", "quartiles", "audit", "audit_lengths"]

# The record field whose length is audited: the response the model is trained to produce.
RESPONSE_FIELD = "output"


def quartiles(lengths: Sequence[int]) -> dict[str, float | None]:
    """25th, 50th and 75th percentiles and the mean (None for an empty set)."""
    if len(lengths) == 0:
        return {"q1": None, "median": None, "q3": None, "mean": None}
    q1, med, q3 = np.percentile(np.asarray(lengths, dtype=float), [25, 50, 75])
    return {"q1": float(q1), "median": float(med), "q3": float(q3), "mean": round(float(np.mean(lengths)), 2)}


def audit(records: Sequence[dict], kept: Sequence[int]) -> dict:
    """Response-length quartiles of the kept records and of all records, and the overlap of the
    kept set with the longest-k set (k = the number kept): ``overlap`` records in both,
    ``share`` = overlap / k (1: the selection is the longest-k set), ``jaccard`` = overlap /
    size of the union, ``share_if_random`` = k / n, the share a random selection of k has on
    average (what ``share`` is to be read against)."""
    lengths = []
    for i, rec in enumerate(records):
        text = rec.get(RESPONSE_FIELD)
        if not isinstance(text, str):
            raise ValueError(f"record {i}: field {RESPONSE_FIELD!r} must be a string, got {type(text).__name__}")
        lengths.append(len(text))
    return audit_lengths(np.asarray(lengths, dtype=np.int64), kept)


def audit_lengths(lengths: np.ndarray, kept: Sequence[int]) -> dict:
    """:func:`audit` from each record's response length (an int array): what selection at
    scale passes, from the records' index (alpagasus.data.stream), without reading a record."""
    n = len(lengths)
    kept = np.unique(np.asarray(kept, dtype=np.int64))
    if len(kept) and not 0 <= kept[0] <= kept[-1] < n:
        raise ValueError(f"kept indices must lie in 0..{n - 1}")
    k = len(kept)
    # the k longest, ties by position (a stable sort of -length)
    longest = np.argsort(-lengths, kind="stable")[:k]
    overlap = int(np.isin(longest, kept).sum())
    union = 2 * k - overlap
    return {
        "length_unit": f"characters of {RESPONSE_FIELD}",
        "kept": quartiles(lengths[kept]),
        "all": quartiles(lengths),
        "longest_k": {"k": k, "overlap": overlap, "share": round(overlap / k, 6) if k else None,
                      "jaccard": round(overlap / union, 6) if union else None,
                      "share_if_random": round(k / n, 6) if n else None},
    }
