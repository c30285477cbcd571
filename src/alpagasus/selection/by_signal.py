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

from alpagasus.selection.select import SCORE_FIELDS, _tiebreak

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


def eligible(values: list[float | None], below: float | None) -> list[int]:
    """Records that can be kept: with a value, and below the bound if there is one."""
    return [i for i, v in enumerate(values) if v is not None and (below is None or v < below)]


def rank(values: list[float | None], tiebreak: list[str], direction: str, below: float | None = None) -> list[int]:
    """The eligible records, best first: by value in ``direction``, equal values by ``tiebreak``."""
    if direction not in ("high", "low"):
        raise ValueError(f"direction {direction!r}: expected high or low")
    sign = -1.0 if direction == "high" else 1.0
    return sorted(eligible(values, below), key=lambda i: (sign * values[i], tiebreak[i]))


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


def select(values: list[float | None], tiebreak: list[str], rule: dict, emb=None) -> tuple[list[int], dict]:
    """The kept record indices (in record order) and what the selection did (for details.json).

    ``emb``: unit rows, one per record, for a rule with ``dedupe`` or ``diversity``."""
    k = target_size(rule, len(values))
    ranking = rank(values, tiebreak, rule["direction"], rule.get("below"))
    if rule["method"] == "threshold":
        t = rule["threshold"]
        ranking = [i for i in ranking if (values[i] >= t if rule["direction"] == "high" else values[i] <= t)]
    dedupe, diversity = rule.get("dedupe"), rule.get("diversity")
    details: dict = {
        "records": len(values),
        "no_value": sum(v is None for v in values),
        "not_below": sum(v is not None and rule.get("below") is not None and v >= rule["below"] for v in values),
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
        ordered = result.kept
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
    kept = sorted(ordered)
    details["kept"] = len(kept)
    details["cut"] = cut_of(values, ranking, ordered)
    details["warnings"] = []
    if k is not None and len(kept) < k:
        details["warnings"].append(f"kept {len(kept)} records, fewer than the {k} asked for: only {len(ranking)} "
                                   f"records have a value{' below ' + format(rule['below'], 'g') if rule.get('below') is not None else ''}"
                                   f"{' and pass the embedding filters' if dedupe or diversity else ''}")
    elif kept and len(kept) == len(eligible(values, rule.get("below"))):
        details["warnings"].append(f"this selection keeps every one of the {len(kept)} records with a value: it is "
                                   f"the whole data set, not a selection")
    return kept, details


def cut_of(values: list[float | None], ranking: list[int], ordered: list[int]) -> dict:
    """The least extreme kept value and how arbitrary the cut there is: how many candidates share
    it and how many of them the tie-break kept."""
    if not ordered:
        return {"value": None, "ties_at_cut": 0, "ties_at_cut_kept": 0}
    cut = values[ordered[-1]]
    return {"value": cut, "ties_at_cut": sum(1 for i in ranking if values[i] == cut),
            "ties_at_cut_kept": sum(1 for i in ordered if values[i] == cut),
            "kept_range": [min(values[i] for i in ordered), max(values[i] for i in ordered)]}


def signal_values(records: list[dict], rule: dict, signal_path=None, scores_path=None,
                  records_path=None, hashes: list[str] | None = None) -> list[float | None]:
    """Each record's value of the rule's signal: from scores.jsonl for score / expected_score (a
    record not ``scored`` has none), else from its signal file, checked against the records."""
    from alpagasus.selection import signals

    if rule["signal"] in SCORE_FIELDS:
        from alpagasus.selection.select import load_scores, scores_of

        return scores_of(load_scores(scores_path, len(records)), rule["signal"], scores_path)
    return signals.signal_values(signal_path, records, records_path=records_path, hashes=hashes)


def write_selection(records_path, rule: dict, out_path, details_path, *, signal_path=None, scores_path=None,
                    embedding_npy=None, embedding_jsonl=None, name: str | None = None) -> list[int]:
    """Write the kept records (Alpaca's format and order) and ``details_path`` (the rule, counts,
    the cut, the near-duplicate clusters). Every input is checked before anything is written."""
    from alpagasus.core.io import write_json
    from alpagasus.data import load_records, write_records
    from alpagasus.selection import signals

    records = load_records(records_path)
    hashes = signals.record_hashes(records)
    values = signal_values(records, rule, signal_path, scores_path, records_path, hashes)
    emb = None
    if rule.get("dedupe") or rule.get("diversity"):
        emb = signals.unit_rows(signals.read_embedding(embedding_npy, jsonl_path=embedding_jsonl,
                                                       records_path=records_path, hashes=hashes))
    kept, details = select(values, [_tiebreak(r) for r in records], rule, emb)
    for warning in details["warnings"]:
        log.warning("%s: %s", out_path, warning)
    write_records(out_path, [records[i] for i in kept])
    write_json(details_path, {"selector": name, "rule": rule, **details, "kept_indices": kept})
    return kept
