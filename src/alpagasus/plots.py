"""Figures people look at. Agg backend: no display on a cluster node or in CI."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .io import atomic_path  # noqa: E402


def _save(fig, path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)


def score_histogram(summary: dict, path: str | Path, title: str = "Judge scores of the training data") -> None:
    """Counts per score, the kept ones highlighted: the paper's rating-distribution figure."""
    # The paper's 0.5 grid; finer scores (the verifier's) go to the step below them.
    grid: dict[float, int] = {}
    for score, n in summary["score_counts"].items():
        step = min(5.0, int(float(score) * 2) / 2)
        grid[step] = grid.get(step, 0) + n
    rule = summary["rule"]
    xs = sorted(grid)
    ys = [grid[x] for x in xs]
    fig, ax = plt.subplots(figsize=(7, 4))
    if rule.get("method") == "threshold" and rule.get("threshold") is not None:
        colors = ["tab:green" if x >= rule["threshold"] else "tab:gray" for x in xs]
        ax.axvline(rule["threshold"] - 0.25, color="tab:red", ls="--", lw=1,
                   label=f"threshold {rule['threshold']:g}: {summary['kept']:,} kept")
        ax.legend(loc="upper left")
    else:
        colors = ["tab:blue"] * len(xs)
    bars = ax.bar(xs, ys, width=0.4, color=colors)
    for bar, y in zip(bars, ys):
        ax.annotate(f"{y:,}", (bar.get_x() + bar.get_width() / 2, y), ha="center", va="bottom", fontsize=8)
    unscored = summary.get("unscored", 0)
    ax.set_xlabel("score (0-5, in steps of 0.5)")
    ax.set_xticks([x / 2 for x in range(11)])
    ax.set_ylabel("records")
    ax.set_title(f"{title}\n{summary['records']:,} records, {unscored:,} without a score")
    _save(fig, path)
