"""Win/Tie/Lose tables from pairwise judgements: the paper's rule, plus what it never reported
(sign test, bootstrap interval of the winning score, position consistency, the answers' lengths,
the judge's length bias and the length-controlled winning score of length_control), and the figure."""

from __future__ import annotations

import csv
from pathlib import Path

from alpagasus.evaluation import length_control, stats
from alpagasus.core.io import atomic_open, read_jsonl
from alpagasus.evaluation.pairwise import order_scores

COLUMNS = ["model_a", "model_b", "test_set", "n", "win", "tie", "lose", "winning_score", "ci_low",
           "ci_high", "p_value", "position_consistency", "unparsed", "relative_score", "judge",
           # Appended, so that readers of the older columns by position still read them.
           *length_control.COLUMNS]


def _round(x, nd=4):
    return None if x is None else round(float(x), nd)


def table_rows(judgements: list[dict], judge: str, bootstrap_samples: int = stats.BOOTSTRAP_SAMPLES,
               seed: int = stats.BOOTSTRAP_SEED) -> list[dict]:
    """``judgements``: dicts with model_a, model_b, test_set, path. One row per (comparison,
    test set), then a pooled row per comparison over its test sets."""
    rows, by_comparison = [], {}
    for j in judgements:
        judged = read_jsonl(j["path"])
        by_comparison.setdefault((j["model_a"], j["model_b"]), []).append((j["test_set"], judged))
    for (a, b), sets in by_comparison.items():
        groups = list(sets)
        if len(sets) > 1:
            groups.append(("pooled", [r for _, judged in sets for r in judged]))
        for name, judged in groups:
            pairs = [order_scores(r) for r in judged]
            agg = stats.aggregate(pairs, bootstrap_samples=bootstrap_samples, seed=seed)
            lengths = length_control.row_columns(judged, pairs, bootstrap_samples, seed)
            rows.append({
                "model_a": a, "model_b": b, "test_set": name, "n": agg["n"], "win": agg["win"],
                "tie": agg["tie"], "lose": agg["lose"], "winning_score": _round(agg["winning_score"]),
                "ci_low": _round(agg["ci_low"]), "ci_high": _round(agg["ci_high"]),
                # Significant digits, not decimals: a p of 1e-12 must not print as 0.
                "p_value": float(f"{agg['p_value']:.3g}"),
                "position_consistency": _round(agg["position_consistency"]),
                "unparsed": agg["unparsed"], "relative_score": _round(stats.relative_total_score(pairs)),
                "judge": judge,
                "mean_chars_a": _round(lengths["mean_chars_a"], 1), "mean_chars_b": _round(lengths["mean_chars_b"], 1),
                **{k: _round(lengths[k]) for k in ("longer_wins_share", "length_spearman", "lc_winning_score",
                                                   "lc_ci_low", "lc_ci_high")},
            })
    return rows


def cell(value) -> str:
    """A value as the CSV writes it (the figure prints the same text, never a rounding of its own)."""
    return "" if value is None else str(value)


def score_label(row: dict) -> str:
    """The figure's note on a row: winning score [95% CI] and sign-test p, as in the CSV."""
    return (f"{cell(row['winning_score'])} [{cell(row['ci_low'])}, {cell(row['ci_high'])}]"
            f"  p={cell(row['p_value'])}")


def write_table(rows: list[dict], path: str | Path) -> None:
    with atomic_open(path, newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: cell(r[k]) for k in COLUMNS})


def plot(rows: list[dict], path: str | Path, title: str) -> None:
    """Stacked win/tie/lose bars per test set, one panel per comparison (the paper's figure)."""
    from alpagasus.reporting.plots import _save, plt

    comps = list(dict.fromkeys((r["model_a"], r["model_b"]) for r in rows))
    fig, axes = plt.subplots(len(comps), 1, figsize=(8, 1.2 + 0.55 * max(len([r for r in rows if (r["model_a"], r["model_b"]) == c]) for c in comps) * len(comps)),
                             squeeze=False)
    for ax, (a, b) in zip(axes[:, 0], comps):
        sub = [r for r in rows if (r["model_a"], r["model_b"]) == (a, b)]
        labels = [f"{r['test_set']} (n={r['n']})" for r in sub]
        left = [0.0] * len(sub)
        for key, color, name in (("win", "tab:green", "A wins"), ("tie", "tab:gray", "tie"),
                                 ("lose", "tab:red", "B wins")):
            vals = [100 * r[key] / r["n"] if r["n"] else 0 for r in sub]
            bars = ax.barh(labels, vals, left=left, color=color, label=name)
            for bar, r, v in zip(bars, sub, vals):
                if v >= 6:
                    ax.text(bar.get_x() + v / 2, bar.get_y() + bar.get_height() / 2, str(r[key]),
                            ha="center", va="center", color="white", fontsize=8)
            left = [x + v for x, v in zip(left, vals)]
        for i, r in enumerate(sub):
            if r["winning_score"] is not None:
                ax.text(101, i, score_label(r), va="center", fontsize=8)
        ax.set_xlim(0, 100)
        ax.invert_yaxis()
        ax.set_title(f"A = {a}  vs  B = {b}", fontsize=10, loc="left")
    axes[-1, 0].set_xlabel("% of items (right: winning score of A [95% CI], sign-test p)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=9, frameon=False)
    _save(fig, path)


def write_winrate(judgements: list[dict], judge: str, csv_path, plot_path, *, title: str,
                  bootstrap_samples: int = stats.BOOTSTRAP_SAMPLES, seed: int = stats.BOOTSTRAP_SEED) -> list[dict]:
    rows = table_rows(judgements, judge, bootstrap_samples, seed)
    write_table(rows, csv_path)
    plot(rows, plot_path, title)
    return rows
