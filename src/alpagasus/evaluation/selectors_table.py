"""Selectors compared at one size, and the paper's data-size curve (issue #17 items 3 and 8).

``evaluation.selectors`` names selectors (``selection.selectors`` entries) and one size k;
``evaluation.data_size`` names selections of different sizes (the paper's Fig. 1:
top3k/top6k/alpagasus/t40). Neither has a judging path of its own: :func:`generated_comparisons`
turns them into ordinary ``[model_a, model_b]`` comparisons, which rules/common.smk adds to
``evaluation.comparisons``, so they are judged by rule judge_pair (both orders, every test set)
and appear in ``winrate_{size}.csv`` like any other. This module then reads the same judgement
files back into one table per harness:

* ``selectors_{size}.csv``: a row per selector, opponent (``random``: a seeded random subset of
  the same k; ``alpaca``: the full set) and test set, plus a ``pooled`` row over the test sets;
* ``data_size_{size}.csv``: a row per selection against the full set, its size from its file.

Seeds (``evaluation.seeds``; null = ``[training.seed]``): each selection (and the random one) is
trained once per seed, as the variant ``{name}_seed{seed}`` (the training seed keeps the plain
name, so the main run's checkpoints are reused). A selector trained with seed s is judged
against random trained with seed s, and against the full set trained with the training seed
only: the full set is the costly training, which the paper runs once. Each row pools every
seed's items (``winning_score`` with its bootstrap interval over them, and the length-controlled
score) and gives beside it ``seed_mean`` and ``seed_sd``: the mean and sample standard
deviation over seeds of each seed's own winning score (sd empty with one seed).
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np

from alpagasus.core.io import atomic_open, read_jsonl
from alpagasus.evaluation import length_control, stats
from alpagasus.evaluation.pairwise import order_scores

__all__ = ["COLUMNS", "DATA_SIZE_COLUMNS", "OPPONENTS", "random_variant", "seeded", "split_seed", "seeds_of",
           "plan", "generated_comparisons", "table_rows", "write_table", "read_table", "write_selectors",
           "write_data_size"]

# What every compared selector is judged against, in this order.
OPPONENTS = ("random", "alpaca")
SEED_SUFFIX = re.compile(r"^(?P<name>.+)_seed(?P<seed>\d+)$")

COLUMNS = ["selector", "k", "kept", "opponent", "test_set", "seeds", "n", "win", "tie", "lose", "winning_score",
           "ci_low", "ci_high", "p_value", "lc_winning_score", "lc_ci_low", "lc_ci_high", "seed_mean", "seed_sd",
           "kept_mean_response_chars", "mean_chars_a", "mean_chars_b", "longer_wins_share", "length_spearman",
           "judge"]
DATA_SIZE_COLUMNS = [c for c in COLUMNS if c != "k"]


def random_variant(k: int) -> str:
    """The training variant of the seeded random subset of k records (rules/compare.smk)."""
    return f"random_k{k}"


def seeded(variant: str, seed: int, training_seed: int) -> str:
    """The variant trained with ``seed``: the plain name for the training seed."""
    return variant if seed == training_seed else f"{variant}_seed{seed}"


def split_seed(variant: str, training_seed: int) -> tuple[str, int]:
    """(the variant's data name, its training seed): the inverse of :func:`seeded`."""
    m = SEED_SUFFIX.match(variant)
    return (m["name"], int(m["seed"])) if m else (variant, training_seed)


def seeds_of(ev: dict, training_seed: int) -> list[int]:
    return list(ev["seeds"]) if ev.get("seeds") else [training_seed]


def plan(ev: dict, training_seed: int) -> dict[str, list[dict]]:
    """The comparisons of each harness: ``{"selectors": [...], "data_size": [...]}``, each entry
    ``{selector, opponent, seed, model_a, model_b}`` (variant names, seeds applied)."""
    seeds = seeds_of(ev, training_seed)
    out: dict[str, list[dict]] = {"selectors": [], "data_size": []}
    comp = ev.get("selectors") or {}
    names = list(comp.get("names") or [])
    if names:
        rnd = random_variant(comp["k"])
        # random itself is a row too (against the full set): the baseline every selector must beat.
        for name in [*names, "random"]:
            variant = rnd if name == "random" else name
            for opponent in OPPONENTS:
                if name == opponent:
                    continue
                for seed in seeds:
                    b = seeded(rnd, seed, training_seed) if opponent == "random" else "alpaca"
                    out["selectors"].append({"selector": name, "opponent": opponent, "seed": seed,
                                             "model_a": seeded(variant, seed, training_seed), "model_b": b})
    for name in ev.get("data_size") or []:
        for seed in seeds:
            out["data_size"].append({"selector": name, "opponent": "alpaca", "seed": seed,
                                     "model_a": seeded(name, seed, training_seed), "model_b": "alpaca"})
    return out


def generated_comparisons(ev: dict, training_seed: int) -> list[list[str]]:
    """The ``[model_a, model_b]`` pairs the harnesses need, beyond ``evaluation.comparisons``."""
    given = {tuple(c) for c in ev.get("comparisons") or []}
    pairs = [(e["model_a"], e["model_b"]) for entries in plan(ev, training_seed).values() for e in entries]
    return [list(p) for p in dict.fromkeys(pairs) if p not in given]


def _round(x, nd=4):
    return None if x is None else round(float(x), nd)


def _selection_stats(path: str | Path) -> tuple[int, float | None]:
    """(records kept, their mean response length in characters) of a selection file."""
    with open(path, encoding="utf-8") as fh:
        records = json.load(fh)
    if not isinstance(records, list):
        raise ValueError(f"{path}: not a JSON list of records")
    lengths = [len(r.get("output") or "") for r in records]
    return len(records), (float(np.mean(lengths)) if lengths else None)


def table_rows(entries: list[dict], selections: dict[str, str], judge: str, k: int | None = None,
               bootstrap_samples: int = stats.BOOTSTRAP_SAMPLES, seed: int = stats.BOOTSTRAP_SEED) -> list[dict]:
    """Rows of one harness. ``entries``: :func:`plan` entries, each with ``paths``:
    ``{test_set: judgement file}``; ``selections``: selector name -> the selection file its
    training seed's variant is trained on (its kept count and mean response length). ``k``:
    the comparison's size (None: a data-size table, whose size is each selection's own)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for e in entries:
        groups.setdefault((e["selector"], e["opponent"]), []).append(e)
    rows = []
    for (selector, opponent), group in groups.items():
        kept, kept_chars = _selection_stats(selections[selector])
        test_sets = list(dict.fromkeys(t for e in group for t in e["paths"]))
        judged = {(e["seed"], t): read_jsonl(p) for e in group for t, p in e["paths"].items()}
        names = [*test_sets, "pooled"] if len(test_sets) > 1 else test_sets
        seeds = list(dict.fromkeys(e["seed"] for e in group))
        for name in names:
            wanted = test_sets if name == "pooled" else [name]
            per_seed = {s: [r for t in wanted for r in judged[(s, t)]] for s in seeds}
            rows_all = [r for s in seeds for r in per_seed[s]]
            pairs = [order_scores(r) for r in rows_all]
            agg = stats.aggregate(pairs, bootstrap_samples=bootstrap_samples, seed=seed)
            lengths = length_control.row_columns(rows_all, pairs, bootstrap_samples, seed)
            seed_scores = [stats.aggregate([order_scores(r) for r in per_seed[s]], bootstrap_samples=100,
                                           seed=seed)["winning_score"] for s in seeds]
            seed_scores = [x for x in seed_scores if x is not None]
            row = {
                "selector": selector, "kept": kept, "opponent": opponent, "test_set": name, "seeds": len(seeds),
                "n": agg["n"], "win": agg["win"], "tie": agg["tie"], "lose": agg["lose"],
                "winning_score": _round(agg["winning_score"]), "ci_low": _round(agg["ci_low"]),
                "ci_high": _round(agg["ci_high"]), "p_value": float(f"{agg['p_value']:.3g}"),
                "seed_mean": _round(np.mean(seed_scores)) if seed_scores else None,
                "seed_sd": _round(np.std(seed_scores, ddof=1)) if len(seed_scores) > 1 else None,
                "kept_mean_response_chars": _round(kept_chars, 1),
                "mean_chars_a": _round(lengths["mean_chars_a"], 1), "mean_chars_b": _round(lengths["mean_chars_b"], 1),
                **{c: _round(lengths[c]) for c in ("longer_wins_share", "length_spearman", "lc_winning_score",
                                                   "lc_ci_low", "lc_ci_high")},
                "judge": judge,
            }
            if k is not None:
                row["k"] = k
            rows.append(row)
    return rows


def _cell(value) -> str:
    return "" if value is None else str(value)


def write_table(rows: list[dict], path: str | Path, columns: list[str] = COLUMNS) -> None:
    with atomic_open(path, newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({c: _cell(r.get(c)) for c in columns})


def read_table(path: str | Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def write_selectors(entries, selections, judge, k, csv_path, plot_path, *, title: str,
                    bootstrap_samples: int = stats.BOOTSTRAP_SAMPLES, seed: int = stats.BOOTSTRAP_SEED) -> list[dict]:
    from alpagasus.reporting.plots import selectors_plot

    rows = table_rows(entries, selections, judge, k, bootstrap_samples, seed)
    write_table(rows, csv_path)
    selectors_plot(rows, plot_path, title)
    return rows


def write_data_size(entries, selections, judge, csv_path, plot_path, *, title: str,
                    bootstrap_samples: int = stats.BOOTSTRAP_SAMPLES, seed: int = stats.BOOTSTRAP_SEED) -> list[dict]:
    from alpagasus.reporting.plots import data_size_plot

    rows = table_rows(entries, selections, judge, None, bootstrap_samples, seed)
    write_table(rows, csv_path, DATA_SIZE_COLUMNS)
    data_size_plot(rows, plot_path, title)
    return rows
