"""Keep the best-rated records: by threshold (the paper), top-k or top-fraction; and the
same-size random baseline.

Newer judges rate almost everything 4.5, so a fixed threshold can keep nearly all; ranking
needs a tie-break that is deterministic and unbiased: records of equal score are ordered by a
hash of their content (not by position, since Alpaca's order is not random).
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections import Counter

import numpy as np

from alpagasus.core.config import filled
from alpagasus.data import record_key
from alpagasus.judging.directed import JUDGE_DIRECTED_FLAG
from alpagasus.selection import verbosity
from alpagasus.selection.columns import ScoreColumns, sample_indices, select_kept, tie_summary, value_counts

# The paper's histogram bins (PAPER.md section 1).
PAPER_BINS = ("<3", "3", "3.5", "4", "4.5", "5")
# selection.score: which field of scores.jsonl ranks the records.
SCORE_FIELDS = ("score", "expected_score")
# The flags selection.exclude_flagged acts on: a record whose text speaks to the judge may have
# talked it into its score. A clipped or repeated record (truncated_*, duplicate_of_N) is not suspect.
EXCLUDED_FLAGS = (JUDGE_DIRECTED_FLAG,)

log = logging.getLogger(__name__)


def _tiebreak(rec: dict) -> str:
    return hashlib.sha256("\x1f".join(record_key(rec)).encode("utf-8")).hexdigest()


def select_indices(records: list[dict], scores: list[float | None], method: str = "threshold",
                   threshold: float | None = 4.5, k: int | None = None,
                   fraction: float | None = None) -> list[int]:
    """Indices of the kept records, in their original order. Unscored records are never kept."""
    if len(records) != len(scores):
        raise ValueError(f"{len(records)} records but {len(scores)} scores: the scores are for another file")
    if method == "threshold":
        if threshold is None:
            raise ValueError("selection method 'threshold' needs selection.threshold")
        return [i for i, s in enumerate(scores) if s is not None and s >= threshold]
    if method == "top_fraction":
        if fraction is None:
            raise ValueError("selection method 'top_fraction' needs selection.fraction")
        k = round(fraction * len(records))
        method = "top_k"
    if method == "top_k":
        if k is None:
            raise ValueError("selection method 'top_k' needs selection.k")
        ranked = sorted((i for i, s in enumerate(scores) if s is not None),
                        key=lambda i: (-scores[i], _tiebreak(records[i])))
        return sorted(ranked[:k])
    raise ValueError(f"unknown selection method {method!r} (threshold, top_k, top_fraction)")


def random_indices(n_records: int, size: int, seed: int) -> list[int]:
    """A seeded random subset of the given size, in original order (the paper's random-9k)."""
    if size > n_records:
        raise ValueError(f"cannot draw {size} of {n_records} records")
    return sorted(random.Random(seed).sample(range(n_records), size))


def paper_bin(score: float) -> str:
    if score < 3:
        return "<3"
    if score >= 5:
        return "5"
    return f"{int(score * 2) / 2:g}"  # floor to the 0.5 grid: 3.7 -> 3.5


def _flag_kind(flag: str) -> str:
    return "duplicate" if flag.startswith("duplicate_of_") else flag


def summarize(rows: list[dict], kept: list[int], rule: dict, random_size: int | None = None,
              exclude_flagged: bool = False, records: list[dict] | None = None) -> dict:
    """The selection in numbers; with ``records`` also its verbosity audit (verbosity.audit)."""
    scores = [r["score"] for r in rows]
    status = Counter(r["status"] for r in rows)
    exact = Counter(f"{s:g}" for s in scores if s is not None)
    bins = Counter(paper_bin(s) for s in scores if s is not None)
    flagged = Counter(_flag_kind(f) for r in rows for f in set(r.get("flags") or ()))
    kept_flagged = Counter(_flag_kind(f) for i in kept for f in set(rows[i].get("flags") or ()))
    summary = _summary(len(rows), rule, len(kept), random_size, dict(status), exact, bins, flagged, kept_flagged,
                       exclude_flagged)
    if records is not None:
        summary["verbosity"] = verbosity.audit(records, kept)
    return summary


def _summary(n: int, rule: dict, n_kept: int, random_size, status: dict, exact: Counter, bins: Counter,
             flagged: Counter, kept_flagged: Counter, exclude_flagged: bool) -> dict:
    """The summary both summarize and summarize_columns write, from their counts."""
    missing = status.get("failed", 0) + status.get("budget", 0)
    warnings = []
    if missing:
        # Only reachable with rating.allow_incomplete: the selection ignores these records.
        warnings.append(f"incomplete rating: {missing} of {n} records have no judgement "
                        f"({status.get('failed', 0)} failed, {status.get('budget', 0)} over budget) "
                        f"and cannot be selected")
        log.warning("%s", warnings[-1])
    if kept_flagged.get(JUDGE_DIRECTED_FLAG):
        warnings.append(f"{kept_flagged[JUDGE_DIRECTED_FLAG]} kept records carry text that speaks to the judge "
                        f"(flag {JUDGE_DIRECTED_FLAG} in scores.jsonl): their score may be the record's, not "
                        f"the judge's; selection.exclude_flagged: true drops them")
        log.warning("%s", warnings[-1])
    return {
        "records": n,
        "rule": rule,
        "kept": n_kept,
        "kept_fraction": round(n_kept / n, 6) if n else 0.0,
        "random_baseline_size": random_size,
        "status_counts": status,
        "unscored": n - status.get("scored", 0),
        "score_counts": dict(sorted(exact.items(), key=lambda kv: float(kv[0]))),
        "paper_bins": {b: bins.get(b, 0) for b in PAPER_BINS},
        # Records per flag (duplicate_of_N counted as "duplicate"), in all and among the kept.
        "flag_counts": dict(sorted(flagged.items())),
        "kept_flag_counts": dict(sorted(kept_flagged.items())),
        "exclude_flagged": exclude_flagged,
        "warnings": warnings,
    }


def load_scores(path, n_records: int | None = None) -> list[dict]:
    """scores.jsonl rows, checked to be one per record and in record order."""
    from alpagasus.core.io import read_jsonl

    rows = read_jsonl(path)
    for i, row in enumerate(rows):
        if row.get("index") != i:
            raise ValueError(f"{path}: line {i + 1} has index {row.get('index')!r}, expected {i}")
    if n_records is not None and len(rows) != n_records:
        raise ValueError(f"{path}: {len(rows)} scores for {n_records} records: the scores are for another file")
    return rows


def rule_of(cfg: dict) -> dict:
    return {k: cfg.get(k) for k in ("method", "threshold", "k", "fraction")}


def score_field(cfg: dict) -> str:
    field = filled("selection_rule", cfg)["score"]
    if field not in SCORE_FIELDS:
        raise ValueError(f"selection.score: {field!r} is not one of {SCORE_FIELDS}")
    return field


def scores_of(rows: list[dict], field: str, path="scores.jsonl") -> list[float | None]:
    """The ranking value of each record; a record that was not ``scored`` has none (it is never
    kept, whatever its expected score)."""
    if field != "score" and rows and field not in rows[0]:
        raise ValueError(f"{path}: no field {field!r} (selection.score: {field} needs a rating by a judge "
                         f"with score_mode: logprobs)")
    return [r.get(field) if r.get("status") == "scored" else None for r in rows]


def selectable_scores(rows: list[dict], rule: dict, path="scores.jsonl") -> list[float | None]:
    """:func:`scores_of` for ``rule``; with ``exclude_flagged`` a record carrying one of
    EXCLUDED_FLAGS has none (it is never kept)."""
    scores = scores_of(rows, score_field(rule), path)
    if rule.get("exclude_flagged"):
        scores = [None if set(r.get("flags") or ()) & set(EXCLUDED_FLAGS) else s for r, s in zip(rows, scores)]
    return scores


def cut_ties(scores: list[float | None], kept: list[int]) -> dict:
    """How arbitrary the cut is: the distinct values, the lowest kept value, how many records
    share it (kept or not: past the cut they were dropped by the hash tie-break) and the largest
    group of equal scores anywhere."""
    present = [s for s in scores if s is not None]
    groups = Counter(present)
    cut = min((scores[i] for i in kept), default=None)
    at_cut = groups.get(cut, 0) if cut is not None else 0
    return {
        "distinct_values": len(groups),
        "cut_value": cut,
        "ties_at_cut": at_cut,
        "ties_at_cut_kept": sum(1 for i in kept if scores[i] == cut),
        "largest_tie_group": max(groups.values(), default=0),
    }


def write_selection(records_path, scores_path, rule: dict, out_path) -> list[int]:
    """Write the kept records in Alpaca's own format and order.

    At any size: the records' index (alpagasus.data.stream) and scores.jsonl's columns
    (selection.columns) as numpy arrays; the kept records' text copied from the records file."""
    from alpagasus.data.stream import RecordsIndex

    records = RecordsIndex(records_path)
    columns = ScoreColumns(scores_path, len(records))
    scores = _ranking(columns, rule)
    kept = select_kept(scores, records, **rule_of(rule))
    warning = keeps_everything(rule_of(rule), _Present(scores), kept)
    if warning:
        log.warning("%s: %s", out_path, warning)
    records.write_subset(out_path, kept)
    del records, columns, scores  # before the list is made: the arrays are the bigger part at scale
    return kept.tolist()


def _ranking(columns: "ScoreColumns", rule: dict) -> np.ndarray:
    """:func:`selectable_scores` over the columns: float64, NaN where a record has none."""
    return columns.ranking(score_field(rule), EXCLUDED_FLAGS if rule.get("exclude_flagged") else ())


class _Present:
    """A NaN-for-None score array as keeps_everything reads a list (count, min of the present)."""

    def __init__(self, scores: np.ndarray):
        self.present = scores[~np.isnan(scores)]

    def __iter__(self):
        return iter(self.present.tolist())


def keeps_everything(rule: dict, scores: list[float | None], kept: list[int]) -> str | None:
    """Why a selection is no selection (it keeps every scored record), or None.

    A k or a fraction sized for the 52k (top3k) silently becomes "all of it" on a few hundred
    records; the selected variant then trains on the same data as alpaca."""
    scored = sum(s is not None for s in scores)
    if scored == 0 or len(kept) < scored:
        return None
    if rule.get("method") == "top_k" and rule.get("k") is not None and rule["k"] >= scored:
        why = f"k = {rule['k']} >= the {scored} scored records"
    elif rule.get("method") == "threshold":
        why = f"threshold {rule.get('threshold')} drops no scored record (lowest score {min(s for s in scores if s is not None):g})"
    else:
        why = f"{rule.get('method')} keeps all {scored} scored records"
    return f"this selection keeps everything: {why}; it is the whole data set, not a selection"


def write_random(records_path, size_of_path, seed: int, out_path) -> list[int]:
    """A random subset of ``records_path`` as large as the selection in ``size_of_path``."""
    from alpagasus.data.stream import RecordsIndex, count_json_list

    records = RecordsIndex(records_path)
    size = count_json_list(size_of_path)  # only its size matters; an empty selection is allowed here
    idx = sample_indices(len(records), size, seed)
    records.write_subset(out_path, idx)
    return idx.tolist()


def write_random_at_k(records_path, k: int, seed: int, out_path) -> list[int]:
    """A seeded random subset of ``k`` records (rule random_at_k: the selectors' opponent), as
    :func:`random_indices` draws it, at any size (the index, a numpy pool, byte-range copies)."""
    from alpagasus.data.stream import RecordsIndex

    records = RecordsIndex(records_path)
    if k > len(records):
        raise ValueError(f"config evaluation.selectors.k: {k} is more than the {len(records)} records of "
                         f"{records_path}")
    idx = sample_indices(len(records), k, seed)
    records.write_subset(out_path, idx)
    return idx.tolist()


def write_summary(records_path, scores_path, rule: dict, random_path, summary_path, plot_path) -> dict:
    from alpagasus.core.io import write_json
    from alpagasus.data.stream import RecordsIndex, count_json_list
    from alpagasus.reporting.plots import score_histogram

    records = RecordsIndex(records_path)
    columns = ScoreColumns(scores_path, len(records))
    field = score_field(rule)
    ranked = _ranking(columns, rule)
    kept = select_kept(ranked, records, **rule_of(rule))
    random_size = count_json_list(random_path)
    summary = summarize_columns(columns, kept, {**rule_of(rule), "score": field}, random_size,
                                exclude_flagged=bool(rule.get("exclude_flagged")),
                                lengths=np.asarray(records.rows["output_chars"]))
    ties, first = tie_summary(ranked, kept)
    if first is not None:
        ties["cut_value"] = columns.original_value(field, first)  # 4 stays 4, as the file has it
    summary["score_used"] = {"field": field, **ties}
    write_json(summary_path, summary)
    score_histogram(summary, plot_path)
    return summary


def summarize_columns(columns: "ScoreColumns", kept: np.ndarray, rule: dict, random_size: int | None = None,
                      exclude_flagged: bool = False, lengths: np.ndarray | None = None) -> dict:
    """:func:`summarize` over scores.jsonl's columns (the same summary, key for key)."""
    n = len(columns)
    status = columns.status_counts()
    raw = columns.values["score"]
    exact = value_counts(raw)
    bins: Counter = Counter()
    values, counts = np.unique(raw[~np.isnan(raw)], return_counts=True)
    for value, count in zip(values.tolist(), counts.tolist()):
        bins[paper_bin(value)] += count
    flagged = columns.flag_counts()
    kept_flagged = columns.flag_counts(kept)
    summary = _summary(n, rule, len(kept), random_size, status, exact, bins, flagged, kept_flagged, exclude_flagged)
    if lengths is not None:
        summary["verbosity"] = verbosity.audit_lengths(lengths, kept)
    return summary
