"""How far judges agree: on the scores of the same records, and on the sets they keep.

This is how one picks a modern judge that reproduces the paper's selection: rate the data (or a
sample) with candidate judges (``rating.compare``), and compare their scores with each other and
their kept sets with the released ones (``selection.compare_to``: the paper's claude_t45.json,
helpfulness_t45.json). Records are matched by a hash of their content, never by position: a
released file is a subset in its own order.

Statistics, for each pair of judges, over the records both scored:
- Spearman's rho and Kendall's tau-b of the ranking scores (``selection.score``);
- Cohen's kappa with quadratic weights on the 0.5 grid (scores rounded to the nearest half
  point): 1 - sum(W * O) / sum(W * E), O the observed joint distribution, E the product of its
  marginals, W_ij = (i - j)^2 in grid steps (kappa does not depend on the scale of W);
- the confusion matrix on the grid (rows: the first judge).
For kept sets (the main selection rule applied to each judge's scores) against each other and
each release: precision |ours & theirs| / |ours|, recall |ours & theirs| / |theirs|, Jaccard.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from alpagasus.selection.columns import float_column

from alpagasus.data import content_hash, record_key  # noqa: F401  (content_hash: re-exported)

GRID = 0.5
MAX_SCORE = 5.0
GRID_LABELS = [f"{GRID * i:g}" for i in range(int(MAX_SCORE / GRID) + 1)]


def grid_index(score: float) -> int:
    """Nearest point of the 0.5 grid (4.74 -> 4.5, 4.76 -> 5), as an index 0..10."""
    return int(min(MAX_SCORE / GRID, max(0, math.floor(score / GRID + 0.5))))


def grid_indices(scores) -> np.ndarray:
    """:func:`grid_index` of every score (an array of them, the same float operations)."""
    x = np.asarray(scores, dtype=np.float64)
    return np.clip(np.floor(x / GRID + 0.5), 0, MAX_SCORE / GRID).astype(np.int64)


def confusion(a, b) -> np.ndarray:
    size = len(GRID_LABELS)
    if not len(a):
        return np.zeros((size, size), dtype=int)
    cells = grid_indices(a) * size + grid_indices(b)
    return np.bincount(cells, minlength=size * size).reshape(size, size).astype(int)


def quadratic_kappa(a: list[float], b: list[float]) -> float | None:
    """Quadratic-weighted Cohen's kappa on the 0.5 grid; None when it is undefined (both judges
    put everything in one and the same category: no disagreement is possible by chance)."""
    if not len(a):
        return None
    obs = confusion(a, b).astype(float)
    obs /= obs.sum()
    exp = np.outer(obs.sum(axis=1), obs.sum(axis=0))
    idx = np.arange(len(GRID_LABELS))
    w = (idx[:, None] - idx[None, :]) ** 2
    denom = float((w * exp).sum())
    if denom == 0.0:
        return None
    return 1.0 - float((w * obs).sum()) / denom


def _finite(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) else round(x, 6)


def score_agreement(a, b) -> dict:
    """Agreement of two judges' scores of the same records (None, or NaN in an array: not
    scored, left out)."""
    from scipy import stats

    a, b = float_column(a), float_column(b)
    both = ~np.isnan(a) & ~np.isnan(b)
    xs, ys = a[both], b[both]
    n = int(both.sum())
    out = {"records_both_scored": n, "spearman": None, "kendall_tau_b": None,
           "kappa_quadratic_grid_0_5": None, "exact_agreement_grid_0_5": None}
    if n >= 2:
        out["spearman"] = _finite(stats.spearmanr(xs, ys).statistic)
        out["kendall_tau_b"] = _finite(stats.kendalltau(xs, ys).statistic)
    if n:
        k = quadratic_kappa(xs, ys)
        out["kappa_quadratic_grid_0_5"] = None if k is None else round(k, 6)
        out["exact_agreement_grid_0_5"] = round(int((grid_indices(xs) == grid_indices(ys)).sum()) / n, 6)
    out["confusion_grid_0_5"] = {"labels": GRID_LABELS, "matrix": confusion(xs, ys).tolist()}
    return out


def set_overlap(ours, theirs) -> dict:
    """``ours`` and ``theirs``: sets of content hashes, or arrays of distinct ones (sorted, as
    numpy.unique gives them)."""
    if isinstance(ours, np.ndarray) or isinstance(theirs, np.ndarray):
        both = len(np.intersect1d(ours, theirs, assume_unique=True))
        union = len(ours) + len(theirs) - both
    else:
        both = len(ours & theirs)
        union = len(ours | theirs)
    return {"ours": len(ours), "theirs": len(theirs), "both": both,
            "precision": round(both / len(ours), 6) if len(ours) else None,
            "recall": round(both / len(theirs), 6) if len(theirs) else None,
            "jaccard": round(both / union, 6) if union else None}


def judge_agreement(records: list[dict], scores: dict[str, list[float | None]], rule: dict,
                    releases: dict[str, list[dict]]) -> dict:
    """``scores``: judge name -> ranking score per record (None: unscored); ``rule``: the
    selection rule applied to each judge; ``releases``: name -> released kept records."""
    hashes = np.array([bytes.fromhex(content_hash(r)) for r in records], dtype="S32")
    released = {name: np.array([bytes.fromhex(content_hash(r)) for r in rel], dtype="S32")
                for name, rel in releases.items()}
    return agreement_of(hashes, {name: float_column(s) for name, s in scores.items()}, rule, released)


def agreement_of(hashes: np.ndarray, scores: dict[str, np.ndarray], rule: dict,
                 released: dict[str, np.ndarray]) -> dict:
    """:func:`judge_agreement` over arrays, at any size: ``hashes`` the records' content sha256s
    (S32), ``scores`` float64 per judge (NaN: unscored), ``released`` each release's records'
    hashes. Kept sets are compared as sorted arrays of distinct hashes."""
    from alpagasus.selection.columns import select_kept
    from alpagasus.selection.select import rule_of

    in_data = np.unique(hashes)
    kept = {name: np.unique(hashes[select_kept(s, hashes, **rule_of(rule))]) for name, s in scores.items()}
    out: dict = {"records": len(hashes), "rule": rule, "judges": {}, "pairs": [], "releases": {}}
    for name, s in scores.items():
        present = s[~np.isnan(s)]
        out["judges"][name] = {"scored": len(present), "kept": len(kept[name]),
                               "distinct_values": len(np.unique(present)),
                               # Python's sum, left to right: the figure the list code wrote
                               "mean": round(sum(present.tolist()) / len(present), 6) if len(present) else None}
    for a, b in itertools.combinations(scores, 2):
        out["pairs"].append({"judge_a": a, "judge_b": b, **score_agreement(scores[a], scores[b]),
                             "kept_sets": set_overlap(kept[a], kept[b])})
    for rel, rel_hashes in released.items():
        theirs = np.unique(rel_hashes)
        theirs_here = np.intersect1d(theirs, in_data, assume_unique=True)
        out["releases"][rel] = {
            "records": len(rel_hashes), "in_this_data": len(theirs_here),
            "by_judge": {name: set_overlap(kept[name], theirs_here) for name in scores},
        }
    return out


def write_agreement(records_path, scores_paths: dict[str, str], rule: dict, score_field_name: str,
                    releases: dict[str, str], out_json, out_png) -> dict:
    """judge_agreement.json and its figure, at any size: the records' hashes from their index
    (alpagasus.data.stream), every scores.jsonl as columns (selection/columns.py), each release
    streamed for its hashes."""
    from alpagasus.core.io import write_json
    from alpagasus.data.stream import RecordsIndex, iter_records
    from alpagasus.reporting.plots import agreement_figure
    from alpagasus.selection.columns import ScoreColumns

    records = RecordsIndex(records_path)
    hashes = np.asarray(records.rows["hash"])
    scores, fields = {}, {}
    for name, p in scores_paths.items():
        columns = ScoreColumns(p, len(records))
        # A text-mode judge has no expected_score: it is compared on the score it wrote.
        fields[name] = score_field_name if len(columns) and columns.has_field.get(score_field_name) else "score"
        scores[name] = columns.ranking(fields[name])
    released = {name: np.array([bytes.fromhex(content_hash(r)) for r in iter_records(p)], dtype="S32")
                for name, p in releases.items()}
    result = {"score_field": score_field_name, **agreement_of(hashes, scores, rule, released)}
    for name, field in fields.items():
        result["judges"][name]["field"] = field
    write_json(out_json, result)
    agreement_figure(result, out_png)
    return result


def summary_rows(result: dict) -> tuple[list[dict], list[dict]]:
    """Flat rows for the report: one per judge pair, one per (release, judge)."""
    pairs = [{"judges": f"{p['judge_a']} vs {p['judge_b']}", "records": p["records_both_scored"],
              "Spearman": p["spearman"], "Kendall tau-b": p["kendall_tau_b"],
              "kappa (quadratic, 0.5 grid)": p["kappa_quadratic_grid_0_5"],
              "kept: precision": p["kept_sets"]["precision"], "recall": p["kept_sets"]["recall"],
              "Jaccard": p["kept_sets"]["jaccard"]} for p in result["pairs"]]
    rel = [{"release": name, "judge": j, "released": r["records"], "released in data": r["in_this_data"],
            "kept": o["ours"], "both": o["both"], "precision": o["precision"], "recall": o["recall"],
            "Jaccard": o["jaccard"]}
           for name, r in result["releases"].items() for j, o in r["by_judge"].items()]
    return pairs, rel


__all__ = ["agreement_of", "confusion", "content_hash", "grid_index", "grid_indices", "judge_agreement", "quadratic_kappa", "score_agreement",
           "set_overlap", "summary_rows", "write_agreement"]
