"""Selectors: keep records by any per-record signal (rules/select.smk, ``select_signal``).

A selector (``selection.selectors.<name>`` in the config) ranks the records by one signal, the
judge's ``score`` / ``expected_score`` (scores.jsonl) or a signal file ``{R}/signals/<name>.jsonl``
(IFD, perplexity, length, ...), in the direction the literature uses for that kind of signal
(LITERATURE below, docs/selection.md "Selectors"), and keeps the records by threshold, top_k or
top_fraction. Ties are broken as the main selection breaks them (selection/select.py: by a hash
of the record's content, not by position). Optionally the walk down the ranking removes
near-duplicates and/or applies DEITA's diversity filter, both over an embedding signal
(selection/near_duplicates.py, selection/diversity.py). Records without a value are never kept.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from alpagasus.selection.columns import float_column

from alpagasus.selection.select import SCORE_FIELDS

if TYPE_CHECKING:
    from alpagasus.data.stream import RecordsIndex

log = logging.getLogger(__name__)

# The direction each kind of signal is kept in by the work that introduced it as a selector, and
# the bound the values must stay below. A selector's `direction: literature` / `below:
# literature` (the schema's defaults) mean these.
LITERATURE = {
    # AlpaGasus keeps the judge's highest scores (score >= 4.5).
    "score": {"direction": "high", "below": None},
    "expected_score": {"direction": "high", "below": None},
    # Cherry LLM (Li et al. 2023) and Superfiltering (Li et al. 2024) keep the highest IFD among
    # the records with IFD below 1: at or above 1 the instruction does not help the model produce
    # the response (Superfiltering's select_data.py keeps `ifd < 1`; Cherry's `<= 1`).
    "ifd": {"direction": "high", "below": 1.0},
    # The perplexity baseline of DEITA's study keeps the largest perplexity (the "hardest"
    # responses); pretraining-data pruning prefers low or middle perplexity: `direction: low`.
    "perplexity": {"direction": "high", "below": None},
    # "Long Is More for Alignment" (Zhao et al. 2024): keep the k longest responses.
    "length": {"direction": "high", "below": None},
}


def signal_kind(name: str, signals: dict | None) -> str:
    """The kind of the signal a selector names: score / expected_score, or its `kind:`."""
    if name in SCORE_FIELDS:
        return name
    return ((signals or {}).get(name) or {}).get("kind", name)


def selector_rule(cfg: dict, signals: dict | None = None, where: str = "selector") -> dict:
    """What defines a selector's output (its rule's params): the config with the defaults filled
    and `literature` replaced by the kind's direction and bound."""
    from alpagasus.core.config import filled

    cfg = filled("selector", cfg)
    kind = signal_kind(cfg["signal"], signals)
    lit = LITERATURE.get(kind)
    direction, below = cfg["direction"], cfg["below"]
    if direction == "literature":
        if lit is None:
            raise ValueError(f"config {where}.direction: the literature gives no direction for a signal of kind "
                             f"{kind!r} ({', '.join(LITERATURE)} have one): write direction: high or low")
        direction = lit["direction"]
    if below == "literature":
        below = lit["below"] if lit else None
    rule = {"signal": cfg["signal"], "method": cfg["method"], "direction": direction, "below": below}
    rule.update({key: cfg[key] for key in ("k", "threshold", "fraction")})
    rule.update({key: cfg[key] for key in ("dedupe", "diversity") if cfg[key] is not None})
    return rule


def _eligible_mask(values: np.ndarray, below: float | None) -> np.ndarray:
    mask = ~np.isnan(values)
    if below is not None:
        mask[mask] = values[mask] < below
    return mask


def eligible(values, below: float | None) -> list[int]:
    """Records that can be kept: with a value, and below the bound if there is one."""
    return np.flatnonzero(_eligible_mask(float_column(values), below)).tolist()


def _rank(values: np.ndarray, tiebreak, direction: str, below: float | None) -> np.ndarray:
    if direction not in ("high", "low"):
        raise ValueError(f"direction {direction!r}: expected high or low")
    idx = np.flatnonzero(_eligible_mask(values, below))
    tb = tiebreak if isinstance(tiebreak, np.ndarray) else np.array(tiebreak)
    # sorted()'s order on (sign * value, tiebreak), stable: by tie-break first, then (stably) by value
    idx = idx[np.argsort(tb[idx], kind="stable")]
    key = values[idx] if direction == "low" else -values[idx]
    return idx[np.argsort(key, kind="stable")]


def rank(values, tiebreak, direction: str, below: float | None = None) -> list[int]:
    """The eligible records, best first: by value in ``direction``, equal values by ``tiebreak``."""
    return _rank(float_column(values), tiebreak, direction, below).tolist()


def target_size(rule: dict, n_records: int) -> int | None:
    """How many records the rule keeps at most (None: a threshold keeps all that pass)."""
    method = rule["method"]
    if method == "threshold":
        if rule.get("threshold") is None:
            raise ValueError("selector method 'threshold' needs threshold")
        return None
    if method == "top_fraction":
        if rule.get("fraction") is None:
            raise ValueError("selector method 'top_fraction' needs fraction")
        return round(rule["fraction"] * n_records)  # of all records, as selection/select.py
    if method == "top_k":
        if rule.get("k") is None:
            raise ValueError("selector method 'top_k' needs k")
        return rule["k"]
    raise ValueError(f"unknown selector method {method!r} (threshold, top_k, top_fraction)")


def select(values, tiebreak, rule: dict, emb=None) -> tuple[list[int], dict]:
    """The kept record indices (in record order) and what the selection did (for details.json).

    ``values``: one a record (None, or NaN in an array: no value); ``tiebreak``: one sortable key
    a record (the content hash: hex strings, or the records index's S32 digests, which sort
    alike); ``emb``: unit rows, one per record (or :class:`signals.UnitRows`), for a rule with
    ``dedupe`` or ``diversity``. Arrays throughout: 10M records rank in seconds."""
    values = float_column(values)
    k = target_size(rule, len(values))
    below = rule.get("below")
    ranking = _rank(values, tiebreak, rule["direction"], below)
    if rule["method"] == "threshold":
        t = rule["threshold"]
        ranking = ranking[values[ranking] >= t if rule["direction"] == "high" else values[ranking] <= t]
    dedupe, diversity = rule.get("dedupe"), rule.get("diversity")
    present = ~np.isnan(values)
    details: dict = {
        "records": len(values),
        "no_value": int((~present).sum()),
        "not_below": int((values[present] >= below).sum()) if below is not None else 0,
        "candidates": len(ranking),
        "target_size": k,
        "near_duplicates": None,
        "diversity": None,
    }
    if dedupe or diversity:
        if emb is None:
            raise ValueError("a selector with dedupe or diversity needs the embedding")
        from alpagasus.selection.diversity import walk
        from alpagasus.selection.near_duplicates import clusters_of

        cosine = dedupe["cosine"] if dedupe else None
        result = walk(emb, ranking, tau=diversity["tau"] if diversity else None, cosine=cosine, k=k)
        ordered = np.array(result.kept, dtype=np.int64)
        dupes = sum(1 for _, sim in result.dropped.values() if cosine is not None and sim >= cosine)
        details["walked"] = result.walked
        if dedupe:
            details["near_duplicates"] = {"embedding": dedupe["embedding"], "cosine": cosine, "removed": dupes,
                                          "clusters": clusters_of(result, cosine)}
        if diversity:
            details["diversity"] = {"embedding": diversity["embedding"], "tau": diversity["tau"],
                                    "dropped": len(result.dropped) - dupes}
    else:
        ordered = ranking if k is None else ranking[:k]
    kept = np.sort(ordered).tolist()
    details["kept"] = len(kept)
    details["cut"] = cut_of(values, ranking, ordered)
    details["warnings"] = []
    if k is not None and len(kept) < k:
        details["warnings"].append(f"kept {len(kept)} records, fewer than the {k} asked for: only {len(ranking)} "
                                   f"records have a value{' below ' + format(below, 'g') if below is not None else ''}"
                                   f"{' and pass the embedding filters' if dedupe or diversity else ''}")
    elif kept and len(kept) == int(_eligible_mask(values, below).sum()):
        details["warnings"].append(f"this selection keeps every one of the {len(kept)} records with a value: it is "
                                   f"the whole data set, not a selection")
    return kept, details


def cut_of(values, ranking, ordered) -> dict:
    """The least extreme kept value and how arbitrary the cut there is: how many candidates share
    it and how many of them the tie-break kept."""
    values = float_column(values)
    ranking, ordered = np.asarray(ranking, dtype=np.int64), np.asarray(ordered, dtype=np.int64)
    if not len(ordered):
        return {"value": None, "ties_at_cut": 0, "ties_at_cut_kept": 0}
    cut = float(values[ordered[-1]])
    kept_values = values[ordered]
    return {"value": cut, "ties_at_cut": int((values[ranking] == cut).sum()),
            "ties_at_cut_kept": int((kept_values == cut).sum()),
            "kept_range": [float(kept_values.min()), float(kept_values.max())]}


def signal_values(records: list[dict], rule: dict, signal_path=None, scores_path=None,
                  records_path=None, hashes: list[str] | None = None) -> list[float | None]:
    """Each record's value of the rule's signal: from scores.jsonl for score / expected_score (a
    record not ``scored`` has none), else from its signal file, checked against the records."""
    from alpagasus.selection import signals

    if rule["signal"] in SCORE_FIELDS:
        from alpagasus.selection.select import load_scores, scores_of

        return scores_of(load_scores(scores_path, len(records)), rule["signal"], scores_path)
    return signals.signal_values(signal_path, records, records_path=records_path, hashes=hashes)


def signal_column(records: "RecordsIndex", rule: dict, signal_path=None, scores_path=None) -> np.ndarray:
    """:func:`signal_values` at any size: float64, NaN where a record has none; scores.jsonl read
    as columns (selection/columns.py), a signal file a line at a time against the records' index."""
    from alpagasus.selection import signals

    if rule["signal"] in SCORE_FIELDS:
        from alpagasus.selection.columns import ScoreColumns

        return ScoreColumns(scores_path, len(records)).ranking(rule["signal"])
    return signals.signal_column(signal_path, records, records_path=records.path)


def write_selection(records_path, rule: dict, out_path, details_path, *, signal_path=None, scores_path=None,
                    embedding_npy=None, embedding_jsonl=None, name: str | None = None) -> list[int]:
    """Write the kept records (Alpaca's format and order) and ``details_path`` (the rule, counts,
    the cut, the near-duplicate clusters). Every input is checked before anything is written.

    At any size: the records' index (content hashes, byte ranges: alpagasus.data.stream), the
    signal as an array, the embedding memory-mapped and normalised a block of candidates at a
    time; the kept records' bytes copied from the records file."""
    from alpagasus.core.io import write_json
    from alpagasus.data.stream import RecordsIndex
    from alpagasus.selection import signals

    records = RecordsIndex(records_path)
    values = signal_column(records, rule, signal_path, scores_path)
    emb = None
    if rule.get("dedupe") or rule.get("diversity"):
        emb = signals.UnitRows(signals.read_embedding(embedding_npy, jsonl_path=embedding_jsonl,
                                                      records_path=records_path, hashes=records, mmap=True))
    kept, details = select(values, np.asarray(records.rows["hash"]), rule, emb)
    for warning in details["warnings"]:
        log.warning("%s: %s", out_path, warning)
    records.write_subset(out_path, kept)
    write_json(details_path, {"selector": name, "rule": rule, **details, "kept_indices": kept})
    return kept
